"""Pass/fail criteria for a load run, as k6 has them: `--threshold 'p99_start<2s'`.

A threshold is `METRIC OP VALUE`, OP one of `<`, `<=`, `>`, `>=`. Metrics:

- latencies: `STAT_SERIES`, STAT one of `p50`, `p90`, `p99`, `p99.9`, `max`, `mean`;
  SERIES one of `http` (the answer to an accepted order, from its due time), `refused`
  (the answer to a refused one), `start` (due → fulfilment started), `fulfil` (due →
  fulfilled), `wait` (time in the queue). VALUE takes `ms` or `s` (plain: seconds).
- counts: `accepted`, `refused`, `errors`, `failed`, `unfinished`, `late`. With `%`
  VALUE is a share of the orders sent (`refused<1%`), without it a number of orders.
- `goodput`: orders fulfilled per second (`goodput>=3.5`).

A metric with nothing measured (no fulfilled order for `p99_fulfil`) fails its threshold.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from retail.loadgen.histogram import Percentiles
from retail.loadgen.report import Summary

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
STATS = {
    "p50": "p50_s",
    "p90": "p90_s",
    "p99": "p99_s",
    "p99.9": "p99_9_s",
    "max": "max_s",
    "mean": "mean_s",
}
SERIES = {
    "http": "latency_accepted",
    "refused": "latency_refused",
    "start": "start",
    "fulfil": "fulfilment",
    "wait": "queue_wait",
}
COUNTS = ("accepted", "refused", "errors", "failed", "unfinished", "late")
PATTERN = re.compile(
    r"^\s*(?P<metric>[a-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>ms|s|%|/s)?\s*$"
)
EXAMPLES = "e.g. 'p99_start<2s', 'p99_http<=200ms', 'refused<1%', 'goodput>=3.5'"


@dataclass(frozen=True)
class Threshold:
    expression: str
    metric: str
    op: str
    limit: float  # seconds, a share (0..1), a count or orders/s
    kind: str  # "latency", "share", "count", "rate"

    def observe(self, summary: Summary) -> float | None:
        if self.kind == "latency":
            stat, series = self.metric.rsplit("_", 1)
            percentiles: Percentiles = getattr(summary, SERIES[series])
            value: float | None = getattr(percentiles, STATS[stat])
            return value
        if self.kind == "rate":
            return summary.goodput_per_s
        count = _count(summary, self.metric)
        if self.kind == "share":
            return count / summary.orders if summary.orders else None
        return float(count)

    def check(self, summary: Summary) -> ThresholdResult:
        observed = self.observe(summary)
        passed = observed is not None and OPERATORS[self.op](observed, self.limit)
        return ThresholdResult(self, observed, passed)

    def show(self, value: float) -> str:
        if self.kind == "latency":
            return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.3g} s"
        if self.kind == "share":
            return f"{value * 100:.3g} %"
        if self.kind == "rate":
            return f"{value:.2f}/s"
        return f"{value:g}"


@dataclass(frozen=True)
class ThresholdResult:
    threshold: Threshold
    observed: float | None
    passed: bool

    def describe(self) -> str:
        seen = "nothing measured" if self.observed is None else self.threshold.show(self.observed)
        return f"{self.threshold.expression}: {'ok' if self.passed else 'FAILED'} ({seen})"

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold.expression,
            "metric": self.threshold.metric,
            "observed": self.observed,
            "ok": self.passed,
        }


def _count(summary: Summary, metric: str) -> int:
    return {
        "accepted": summary.accepted,
        "refused": summary.refused,
        "errors": summary.errors,
        "failed": summary.failed,
        "unfinished": summary.unfinished,
        "late": summary.late_sends,
    }[metric]


def parse_threshold(text: str) -> Threshold:
    """A threshold from `METRIC OP VALUE`; ValueError with what is accepted."""
    match = PATTERN.match(text)
    if match is None:
        raise ValueError(f"threshold {text!r} is not METRIC<VALUE ({EXAMPLES})")
    metric, op, unit = match["metric"], match["op"], match["unit"]
    value = float(match["value"])
    expression = text.strip()
    if metric == "goodput":
        if unit not in (None, "/s"):
            raise ValueError(f"threshold {text!r}: goodput is in orders per second")
        return Threshold(expression, metric, op, value, "rate")
    if metric in COUNTS:
        if unit == "%":
            return Threshold(expression, metric, op, value / 100, "share")
        if unit is not None:
            raise ValueError(f"threshold {text!r}: {metric} is a count, or a share with %")
        return Threshold(expression, metric, op, value, "count")
    stat, _, series = metric.rpartition("_")
    if stat in STATS and series in SERIES:
        if unit not in (None, "s", "ms"):
            raise ValueError(f"threshold {text!r}: {metric} is a time, in s or ms")
        seconds = value / 1000 if unit == "ms" else value
        return Threshold(expression, metric, op, seconds, "latency")
    known = ", ".join([f"{{{'|'.join(STATS)}}}_{{{'|'.join(SERIES)}}}", *COUNTS, "goodput"])
    raise ValueError(f"threshold {text!r}: unknown metric {metric!r} (known: {known})")


def check_all(thresholds: Sequence[Threshold], summary: Summary) -> list[ThresholdResult]:
    return [threshold.check(summary) for threshold in thresholds]
