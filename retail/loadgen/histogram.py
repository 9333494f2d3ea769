"""A log-bucketed latency histogram in the style of HdrHistogram.

Durations are recorded as whole microseconds. Values below `2**bits` µs get a bucket
each; above that, every power of two is split into `2**(bits - 1)` equal buckets, so a
bucket is never wider than `1 / 2**(bits - 1)` of the values it holds. With the default
`bits = 10` that is 512 buckets per octave: a reported percentile is the middle of its
bucket, within 0.1 % of the recorded value (about three significant digits), however
long the run and whatever the range, in memory proportional to the distinct buckets
used.

Percentiles follow HdrHistogram's convention: the value at percentile p is the
smallest recorded value such that at least p % of all recorded values are at or below
it (nearest rank, never interpolated between samples).

Why not the `hdrhistogram` package: `bench/histogram_vs_hdrhistogram.py` measures
both on 202,000 latencies. They agree with the exact percentiles equally well (worst
0.09 % here, 0.05 % there), but this one records 1.4-3x faster and reads percentiles
1.8x faster, keeps the exact min and max (hdrhistogram's max read 30,015 ms for
29,999.9 ms), needs no highest trackable value fixed in advance (hdrhistogram drops
larger values), and its buckets are the readable `[lowest, width, count]` lists of
the JSON report, where hdrhistogram exports a compressed blob.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_BITS = 10
US_PER_S = 1_000_000
REPORTED_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A histogram's summary, in seconds; all None when nothing was recorded."""

    count: int
    min_s: float | None
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    p99_9_s: float | None
    max_s: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LatencyHistogram:
    """Counts of durations in log-linear buckets (see the module docstring)."""

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        if not 2 <= bits <= 20:
            raise ValueError("bits must be between 2 and 20")
        self.bits = bits
        self._half = 1 << (bits - 1)
        self.counts: dict[int, int] = {}
        self.count = 0
        self.min_us: int | None = None
        self.max_us: int | None = None
        self.sum_us = 0

    # --- buckets ------------------------------------------------------------------

    def index(self, value_us: int) -> int:
        """The bucket a value in µs falls into."""
        if value_us < (1 << self.bits):
            return value_us
        shift = value_us.bit_length() - self.bits
        return shift * self._half + (value_us >> shift)

    def bounds(self, index: int) -> tuple[int, int]:
        """The lowest value in µs of a bucket and its width in µs."""
        if index < (1 << self.bits):
            return index, 1
        shift = index // self._half - 1
        top = index - shift * self._half
        return top << shift, 1 << shift

    # --- recording -----------------------------------------------------------------

    def record(self, seconds: float) -> None:
        """Record one duration (negative durations count as 0)."""
        value = max(0, round(seconds * US_PER_S))
        bucket = self.index(value)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        self.sum_us += value
        self.min_us = value if self.min_us is None else min(self.min_us, value)
        self.max_us = value if self.max_us is None else max(self.max_us, value)

    def merge(self, other: LatencyHistogram) -> None:
        if other.bits != self.bits:
            raise ValueError("histograms with different precision cannot be merged")
        for bucket, n in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + n
        self.count += other.count
        self.sum_us += other.sum_us
        for value in (other.min_us, other.max_us):
            if value is not None:
                self.min_us = value if self.min_us is None else min(self.min_us, value)
                self.max_us = value if self.max_us is None else max(self.max_us, value)

    # --- reading ---------------------------------------------------------------------

    def percentile(self, percent: float) -> float | None:
        """The value at `percent` (0 < percent <= 100) in seconds; None when empty."""
        if not 0 < percent <= 100:
            raise ValueError("percent must be in (0, 100]")
        if self.count == 0 or self.min_us is None or self.max_us is None:
            return None
        # rounded first, so 99.9 % of 5000 is rank 4995, not 4996 through float error
        rank = max(1, math.ceil(round(percent / 100 * self.count, 6)))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                low, width = self.bounds(bucket)
                middle = low + (width - 1) / 2
                return min(max(middle, self.min_us), self.max_us) / US_PER_S
        return self.max_us / US_PER_S

    @property
    def mean_s(self) -> float | None:
        return self.sum_us / self.count / US_PER_S if self.count else None

    def summary(self) -> Percentiles:
        p50, p90, p99, p999 = (self.percentile(p) for p in REPORTED_PERCENTILES)
        return Percentiles(
            count=self.count,
            min_s=None if self.min_us is None else self.min_us / US_PER_S,
            mean_s=self.mean_s,
            p50_s=p50,
            p90_s=p90,
            p99_s=p99,
            p99_9_s=p999,
            max_s=None if self.max_us is None else self.max_us / US_PER_S,
        )

    def to_json(self) -> dict[str, Any]:
        """Buckets as `[lowest value in µs, width in µs, count]`, lowest first."""
        return {
            "unit": "us",
            "bits": self.bits,
            "count": self.count,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "sum_us": self.sum_us,
            "buckets": [[*self.bounds(b), self.counts[b]] for b in sorted(self.counts)],
        }

    @classmethod
    def from_values(cls, seconds: list[float], bits: int = DEFAULT_BITS) -> LatencyHistogram:
        histogram = cls(bits)
        for value in seconds:
            histogram.record(value)
        return histogram
