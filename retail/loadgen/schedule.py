"""Arrival schedules: when each order of a load run is due.

A schedule is a rate (orders per second) over time, made of segments. `--schedule`
spells it as

    [step:|ramp:]SEGMENT[,SEGMENT...]

    SEGMENT  RATE@SECONDS           RATE orders/s for SECONDS
             FROM..TO@SECONDS       the rate moves linearly from FROM to TO over SECONDS

The last segment may leave out `@SECONDS`: it then lasts for the rest of `--duration`.
The `step:` or `ramp:` prefix only names the shape for the reader. Examples:

| schedule               | meaning                                                  |
|------------------------|----------------------------------------------------------|
| `step:10@5,20@5`       | 10 orders/s for 5 s, then 20 orders/s for 5 s            |
| `ramp:5..40`           | from 5 to 40 orders/s over `--duration`                  |
| `ramp:0..50@30,50@10`  | ramp up to 50 orders/s in 30 s, hold 10 s                |
| `2@5,2..20@10,20@5`    | a quiet start, a ramp, a plateau                         |

Without `--schedule`, `--rate R --duration D` is the single segment `R@D`.

Arrivals map the schedule to due times through its expected count Λ(t), the number of
orders the rate asks for by time t:

- `fixed`: order k (from 0) is due when Λ(t) = k, so a constant rate is evenly spaced
  and the first order is due at 0;
- `poisson`: gaps in Λ are exponential with mean 1 (a non-homogeneous Poisson
  process): the same rate on average, with the bursts real traffic has. `seed` makes
  the draw repeatable.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

SCHEDULE_PREFIXES = ("step:", "ramp:")
NUMBER = r"\d+(?:\.\d*)?|\.\d+"
SEGMENT = re.compile(
    rf"^\s*(?P<start>{NUMBER})\s*(?:\.\.\s*(?P<end>{NUMBER})\s*)?(?:@\s*(?P<seconds>{NUMBER})\s*)?$"
)


class Arrivals(enum.StrEnum):
    """How due times are spread within the schedule's rate."""

    FIXED = "fixed"
    POISSON = "poisson"


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the schedule: the rate moves linearly from `start_rate` to `end_rate`."""

    start_s: float
    duration_s: float
    start_rate: float
    end_rate: float
    count_before: float  # Λ at start_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def count(self) -> float:
        return (self.start_rate + self.end_rate) / 2 * self.duration_s

    def rate_at(self, offset_s: float) -> float:
        if self.duration_s <= 0:
            return self.start_rate
        return self.start_rate + (self.end_rate - self.start_rate) * offset_s / self.duration_s

    def count_at(self, offset_s: float) -> float:
        """Λ within this segment, `offset_s` after its start."""
        slope = (self.end_rate - self.start_rate) / self.duration_s if self.duration_s else 0.0
        return self.start_rate * offset_s + slope * offset_s * offset_s / 2

    def offset_of(self, count: float) -> float:
        """The offset where Λ within this segment reaches `count` (0 <= count <= self.count)."""
        if count <= 0:
            return 0.0
        slope = (self.end_rate - self.start_rate) / self.duration_s
        if slope == 0:
            return count / self.start_rate
        # slope/2 t² + a t - count = 0, in the form that is stable for either sign of slope.
        root = math.sqrt(max(0.0, self.start_rate**2 + 2 * slope * count))
        return min(self.duration_s, 2 * count / (self.start_rate + root))


@dataclass(frozen=True, slots=True)
class Schedule:
    segments: tuple[Segment, ...]

    @classmethod
    def of(cls, *parts: tuple[float, float, float]) -> Schedule:
        """From `(start_rate, end_rate, seconds)` parts, in order."""
        segments = []
        start = count = 0.0
        for start_rate, end_rate, seconds in parts:
            if start_rate < 0 or end_rate < 0:
                raise ValueError("rates cannot be negative")
            if seconds <= 0:
                raise ValueError("every segment needs a positive duration")
            segment = Segment(start, seconds, start_rate, end_rate, count)
            segments.append(segment)
            start, count = segment.end_s, count + segment.count
        if not segments:
            raise ValueError("a schedule needs at least one segment")
        return cls(tuple(segments))

    @classmethod
    def constant(cls, rate: float, seconds: float) -> Schedule:
        return cls.of((rate, rate, seconds))

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s

    @property
    def expected_orders(self) -> float:
        last = self.segments[-1]
        return last.count_before + last.count

    @property
    def peak_rate(self) -> float:
        return max(max(s.start_rate, s.end_rate) for s in self.segments)

    def rate_at(self, t: float) -> float:
        for segment in self.segments:
            if t < segment.end_s:
                return segment.rate_at(max(0.0, t - segment.start_s))
        return 0.0

    def count_at(self, t: float) -> float:
        """Λ(t): orders the schedule asks for in [0, t]."""
        for segment in self.segments:
            if t < segment.end_s:
                return segment.count_before + segment.count_at(max(0.0, t - segment.start_s))
        return self.expected_orders

    def time_of(self, count: float) -> float | None:
        """The t where Λ(t) = count, or None when the schedule ends first."""
        for segment in self.segments:
            if count < segment.count_before + segment.count:
                return segment.start_s + segment.offset_of(count - segment.count_before)
        return None

    def describe(self) -> str:
        parts = []
        for s in self.segments:
            rate = (
                f"{s.start_rate:g}"
                if s.start_rate == s.end_rate
                else f"{s.start_rate:g}..{s.end_rate:g}"
            )
            parts.append(f"{rate}@{s.duration_s:g}")
        return ",".join(parts)


def parse_schedule(text: str, default_duration_s: float | None = None) -> Schedule:
    """Parse `--schedule` (see the module docstring); ValueError with a readable message."""
    body = text.strip()
    for prefix in SCHEDULE_PREFIXES:
        if body.startswith(prefix):
            body = body.removeprefix(prefix)
            break
    pieces = body.split(",")
    if not body or any(not piece.strip() for piece in pieces):
        raise ValueError(f"schedule {text!r}: expected segments like 10@5 or 5..40@20")
    parts: list[tuple[float, float, float]] = []
    elapsed = 0.0
    for number, piece in enumerate(pieces):
        match = SEGMENT.match(piece)
        if match is None:
            raise ValueError(
                f"schedule {text!r}: {piece.strip()!r} is not RATE@SECONDS or FROM..TO@SECONDS"
            )
        start = float(match["start"])
        end = float(match["end"]) if match["end"] is not None else start
        if match["seconds"] is not None:
            seconds = float(match["seconds"])
        elif number == len(pieces) - 1 and default_duration_s is not None:
            seconds = default_duration_s - elapsed
            if seconds <= 0:
                raise ValueError(
                    f"schedule {text!r}: the earlier segments already last {elapsed:g} s, "
                    f"--duration {default_duration_s:g} s leaves nothing for {piece.strip()!r}"
                )
        else:
            raise ValueError(
                f"schedule {text!r}: {piece.strip()!r} needs @SECONDS (only the last segment "
                "may take its length from --duration)"
            )
        if seconds <= 0:
            raise ValueError(f"schedule {text!r}: {piece.strip()!r} must last more than 0 s")
        parts.append((start, end, seconds))
        elapsed += seconds
    return Schedule.of(*parts)


def due_times(
    schedule: Schedule,
    arrivals: Arrivals = Arrivals.FIXED,
    *,
    seed: int | None = None,
    max_orders: int | None = None,
) -> list[float]:
    """Due times in seconds from the start of the run, in order, at most `max_orders`."""
    return list(_due_times(schedule, arrivals, seed, max_orders))


def _due_times(
    schedule: Schedule, arrivals: Arrivals, seed: int | None, max_orders: int | None
) -> Iterator[float]:
    rng = random.Random(seed)
    produced = 0
    count = 0.0 if arrivals is Arrivals.FIXED else rng.expovariate(1.0)
    while max_orders is None or produced < max_orders:
        t = schedule.time_of(count)
        if t is None:
            return
        yield t
        produced += 1
        count = float(produced) if arrivals is Arrivals.FIXED else count + rng.expovariate(1.0)
