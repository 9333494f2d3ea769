"""Admission: the process's live load, the current limits, and the counters.

`capacity.decide` is the pure policy; this holds the state it decides on. An
admitted order takes a place in `queued` at once (before its row is written), so
concurrent requests never over-admit; the place is given back if the write fails.
All methods are synchronous: between a check and its increment nothing else runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from retail.core import capacity
from retail.core.errors import CapacityExceeded
from retail.core.pipeline import Pipeline
from retail.core.types import ServiceLevel
from retail.runtime.metrics import Metrics


@dataclass
class Counters:
    accepted: int = 0
    admitted: int = 0
    queued: int = 0
    degraded: int = 0
    rejected: int = 0

    def count_accepted(self, decision: capacity.Decision, step: int = 1) -> None:
        """Count an order accepted on `decision` (`step=-1`: take that back)."""
        self.accepted += step
        match decision:
            case capacity.Admit():
                self.admitted += step
            case capacity.Queue():
                self.queued += step
            case capacity.Degrade():
                self.degraded += step


@dataclass
class Ticket:
    """A place taken by an admitted order; `release()` it if the order is not stored."""

    decision: capacity.Admit | capacity.Queue | capacity.Degrade
    _admission: Admission
    _open: bool = True

    @property
    def service_level(self) -> ServiceLevel:
        return self.decision.service_level

    def release(self) -> None:
        """The order was not stored: give its place back."""
        if self._open:
            self._open = False
            self._admission.unsettled -= 1
            self._admission.queued = max(0, self._admission.queued - 1)
            self._admission.changes += 1

    def withdraw(self) -> None:
        """The order turned out to be a retry of one already stored: as if never admitted."""
        if self._open:
            self.release()
            self._admission.counters.count_accepted(self.decision, step=-1)

    def keep(self) -> None:
        """The order is stored: its place now shows in the database's count too."""
        if self._open:
            self._open = False
            self._admission.unsettled -= 1
            self._admission.changes += 1


class Admission:
    def __init__(
        self,
        limits: capacity.Limits,
        pipeline: Pipeline,
        remaining_s: Callable[[], tuple[float, ...]] = tuple,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.pipeline = pipeline
        self.queued = 0
        self.unsettled = 0  # admitted, not yet stored or refused
        self.changes = 0  # bumped on every local change, so a stale resync is dropped
        self.counters = Counters()
        # Filled in by the worker pool: seconds left for each in-flight order.
        self.remaining_s = remaining_s
        # What the policy plans with; the delay models do not change while the app runs.
        self._full_service_s = pipeline.mean_s(ServiceLevel.FULL)
        self._degraded_service_s = pipeline.mean_s(ServiceLevel.DEGRADED)

    def load(self) -> capacity.Load:
        remaining = self.remaining_s()
        return capacity.Load(
            in_flight=len(remaining),
            queued=self.queued,
            remaining_s=remaining,
            full_service_s=self._full_service_s,
            degraded_service_s=self._degraded_service_s,
        )

    def _exceeded(self, decision: capacity.Reject, load: capacity.Load) -> CapacityExceeded:
        return CapacityExceeded(
            f"Order refused: {decision.reason}. Retry in {decision.retry_after_s} s.",
            retry_after_s=decision.retry_after_s,
            mode=self.limits.mode.value,
            capacity=self.limits.capacity,
            in_flight=load.in_flight,
            queued=load.queued,
            queue_limit=self.limits.queue_limit,
        )

    def admit(self) -> Ticket:
        """Decide for one new order; raise `CapacityExceeded` to shed it."""
        load = self.load()
        decision = capacity.decide(self.limits, load)
        self.metrics.decided(self.limits.mode, decision)
        if isinstance(decision, capacity.Reject):
            self.counters.rejected += 1
            raise self._exceeded(decision, load)
        self.queued += 1
        self.unsettled += 1
        self.changes += 1
        self.counters.count_accepted(decision)
        return Ticket(decision, self)

    def resync(self, stored_queued: int, *, read_at_change: int) -> None:
        """Adopt the database's count of queued orders (other processes enqueue and claim too).

        `read_at_change` is `changes` when the count was read; if anything changed here
        since, the count may be stale and is dropped (the next one will do).
        """
        if read_at_change == self.changes:
            self.queued = stored_queued + self.unsettled

    def left_queue(self) -> None:
        """A queued order was claimed by a worker or cancelled."""
        self.queued = max(0, self.queued - 1)
        self.changes += 1

    def estimated_start_s(self, queue_position: int, level: ServiceLevel) -> float:
        """Estimated seconds until the order at `queue_position` (1-based) starts."""
        return capacity.estimated_start_s(
            self.load(), self.limits.capacity, queue_position - 1, self.pipeline.mean_s(level)
        )

    def update(self, **changes: object) -> None:
        self.limits = dataclasses.replace(self.limits, **changes)  # type: ignore[arg-type]
