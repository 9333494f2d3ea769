"""The load generator's histogram against the `hdrhistogram` package (not a dependency).

    uv run --with hdrhistogram python bench/histogram_vs_hdrhistogram.py

Records 202,000 latencies (lognormal around 50 ms, plus a tail of 10-30 s) into both,
then compares the time to record, the time to read four percentiles, and each
percentile against the exact nearest-rank value.
"""

from __future__ import annotations

import math
import random
import time

from hdrh.histogram import HdrHistogram

from retail.loadgen.histogram import LatencyHistogram

random.seed(1)
values = [random.lognormvariate(math.log(0.05), 1.2) for _ in range(200_000)]  # seconds
values += [random.uniform(10, 30) for _ in range(2_000)]
exact = sorted(values)


def nearest(p):
    rank = max(1, math.ceil(p / 100 * len(exact)))
    return exact[rank - 1]


t = time.perf_counter()
ours = LatencyHistogram()
for v in values:
    ours.record(v)
t_ours = time.perf_counter() - t
t = time.perf_counter()
hdr = HdrHistogram(1, 3_600_000_000, 3)
for v in values:
    hdr.record_value(max(1, round(v * 1e6)))
t_hdr = time.perf_counter() - t
print(f"record {len(values)} values: ours {t_ours * 1e3:.0f} ms, hdrhistogram {t_hdr * 1e3:.0f} ms")
worst_o = worst_h = 0.0
for p in (50, 90, 99, 99.9, 99.99, 100):
    e = nearest(p)
    o = ours.percentile(p)
    h = hdr.get_value_at_percentile(p) / 1e6
    worst_o = max(worst_o, abs(o - e) / e)
    worst_h = max(worst_h, abs(h - e) / e)
    print(
        f"p{p:<6} exact {e * 1e3:10.3f} ms"
        f"  ours {o * 1e3:10.3f} ({(o - e) / e * 100:+.3f} %)"
        f"  hdr {h * 1e3:10.3f} ({(h - e) / e * 100:+.3f} %)"
    )
print(f"worst relative error: ours {worst_o * 100:.3f} %, hdrhistogram {worst_h * 100:.3f} %")
t = time.perf_counter()
for _ in range(100):
    ours.summary()
t_o = (time.perf_counter() - t) / 100
t = time.perf_counter()
for _ in range(100):
    [hdr.get_value_at_percentile(p) for p in (50, 90, 99, 99.9)]
t_h = (time.perf_counter() - t) / 100
print(f"four percentiles: ours {t_o * 1e3:.2f} ms, hdrhistogram {t_h * 1e3:.2f} ms")
print(
    f"max: exact {exact[-1] * 1e3:.3f} ms, ours {(ours.max_us or 0) / 1e3:.3f} ms,"
    f" hdrhistogram {hdr.get_max_value() / 1e3:.3f} ms"
)
