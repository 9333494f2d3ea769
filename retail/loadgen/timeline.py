"""An order's life as three moments, read from its events: stored, started, finished."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

START_KINDS = frozenset({"started", "resumed"})
END_KINDS = frozenset({"fulfilled", "failed", "cancelled", "expired"})


def elapsed(start: float | None, end: float | None) -> float | None:
    """Seconds from `start` to `end`, never negative; None unless both are known."""
    if start is None or end is None:
        return None
    return max(0.0, end - start)


@dataclass(frozen=True, slots=True)
class Span:
    """Epoch seconds; `started` is None for an order that never started (cancelled)."""

    created: float
    started: float | None
    finished: float | None
    outcome: str | None  # fulfilled, failed, cancelled; None while unfinished

    @property
    def wait_s(self) -> float | None:
        return elapsed(self.created, self.started if self.started is not None else self.finished)

    @property
    def work_s(self) -> float | None:
        return elapsed(self.started, self.finished)


def span_of(
    events: Iterable[tuple[str, float]],
    *,
    created: float | None = None,
    started: float | None = None,
    finished: float | None = None,
    outcome: str | None = None,
) -> Span | None:
    """The span from `(kind, at)` events; the keyword values fill in what events lack."""
    for kind, at in events:
        if kind == "created" and created is None:
            created = at
        elif kind in START_KINDS and started is None:
            started = at
        elif kind in END_KINDS:
            finished, outcome = at, kind
    if created is None:
        return None
    return Span(created, started, finished, outcome)
