"""Admission: the load the policy decides on, the limits in force, and the counters.

`capacity.decide` is the pure policy; `Admission` owns the state it decides on and
every counter of it. Waiting orders (`queued`) are counted here and nowhere else:
an admitted order takes its place at once (before its row is written), so
concurrent requests never over-admit, and gives it back if it is not stored
(`Ticket.release`), when it starts (`left_queue`) or when it is cancelled
(`left_queue`). In-flight orders and when each frees its slot come from the
`Dispatcher`. All methods are synchronous: between a check and its increment
nothing else runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retail.core import capacity
from retail.core.dispatch import Dispatcher
from retail.core.errors import CapacityExceeded, OverFairShare
from retail.core.fairness import FairShare, OverShare
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, ServiceLevel

DecisionObserver = Callable[[OverloadMode, capacity.Decision], None]


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
    """A place taken by an admitted order; settle it once: `keep`, `release` or `withdraw`."""

    decision: capacity.Admit | capacity.Queue | capacity.Degrade
    _admission: Admission
    _open: bool = True
    customer: str | None = None  # whose place it is, when shares are kept per customer

    def release(self) -> None:
        """The order was not stored: give its place back."""
        if self._open:
            self._open = False
            self._admission._settled(queued=-1)
            self._admission._fair_settled(self.customer, kept=False)

    def withdraw(self) -> None:
        """The order turned out to be a retry of one already stored: as if never admitted."""
        if self._open:
            self.release()
            self._admission.counters.count_accepted(self.decision, step=-1)

    def keep(self) -> None:
        """The order is stored: its place now shows in the store's count too."""
        if self._open:
            self._open = False
            self._admission._settled(queued=0)
            self._admission._fair_settled(self.customer, kept=True)


class Admission:
    def __init__(
        self,
        limits: capacity.Limits,
        pipeline: Pipeline,
        dispatcher: Dispatcher[Any] | None = None,
        *,
        on_decision: DecisionObserver | None = None,
        fairness: FairShare | None = None,
    ) -> None:
        self.limits = limits
        self.pipeline = pipeline
        self.dispatcher: Dispatcher[Any] = dispatcher or Dispatcher(limits.capacity)
        self.dispatcher.capacity = limits.capacity
        self.queued = 0  # waiting for a slot, admitted orders not yet stored included
        self.unsettled = 0  # admitted, not yet stored or given back
        self.changes = 0  # bumped on every local change, so a stale resync is dropped
        self.counters = Counters()
        self._on_decision = on_decision
        self.fairness = fairness  # fair shares per customer (None: first come, first served)
        # What the policy plans with; the delay models do not change while it runs.
        self._full_service_s = pipeline.mean_s(ServiceLevel.FULL)
        self._degraded_service_s = pipeline.mean_s(ServiceLevel.DEGRADED)

    def load(self, now: float) -> capacity.Load:
        remaining = self.dispatcher.remaining_s(now)
        return capacity.Load(
            in_flight=len(remaining),
            queued=self.queued,
            remaining_s=remaining,
            full_service_s=self._full_service_s,
            degraded_service_s=self._degraded_service_s,
        )

    def _decide(self, now: float) -> tuple[capacity.Decision, capacity.Load]:
        load = self.load(now)
        decision = capacity.decide(self.limits, load)
        if self._on_decision is not None:
            self._on_decision(self.limits.mode, decision)
        if isinstance(decision, capacity.Reject):
            self.counters.rejected += 1
            raise self._exceeded(decision, load)
        return decision, load

    def refuse_early(self, now: float) -> None:
        """Raise `CapacityExceeded` if a new order would be refused now; take nothing.

        For a refusal before the request is read: an order that passes still has to be
        admitted (`admit`) once it is whole.
        """
        load = self.load(now)
        decision = capacity.decide(self.limits, load)
        if isinstance(decision, capacity.Reject):
            if self._on_decision is not None:
                self._on_decision(self.limits.mode, decision)
            self.counters.rejected += 1
            raise self._exceeded(decision, load)

    def admit(self, now: float, customer: str | None = None) -> Ticket:
        """Decide for one new order and take its place; raise `CapacityExceeded` to shed it.

        With `fairness` and a `customer`, `OverFairShare` (a `429`) first if the customer is
        over its fair share while others compete.
        """
        fair = self.fairness if customer is not None else None
        if fair is not None:
            self._check_share(fair, customer or "", now)
        decision, _ = self._decide(now)
        assert not isinstance(decision, capacity.Reject)
        self.queued += 1
        self.unsettled += 1
        self.changes += 1
        self.counters.count_accepted(decision)
        if fair is not None:
            fair.took(customer or "")
        return Ticket(decision, self, customer=customer if fair is not None else None)

    # --- fair shares (`retail.core.fairness`) ---------------------------------------------

    def places(self) -> int:
        """The places customers share: the slots, or the queue if orders may wait there.

        A burst fills the queue before any order starts, so in queue and degrade modes
        the places are the larger of the two, not their sum.
        """
        if self.limits.mode is OverloadMode.REJECT:
            return self.limits.capacity
        return max(self.limits.capacity, self.limits.queue_limit)

    def _check_share(self, fair: FairShare, customer: str, now: float) -> None:
        over = fair.check(customer, now, self.places())
        if over is not None:
            raise self._over_share(over, now)

    def _fair_settled(self, customer: str | None, *, kept: bool) -> None:
        if customer is not None and self.fairness is not None:
            self.fairness.settled(customer, kept=kept)

    def order_ended(self, customer: str) -> None:
        """An order of `customer` ended (fulfilled, failed or cancelled): its place is free."""
        if self.fairness is not None:
            self.fairness.gave_back(customer)

    def _over_share(self, over: OverShare, now: float) -> OverFairShare:
        retry_s = capacity.retry_after_s(self.dispatcher.next_free_s(now))
        return OverFairShare(
            f"Order refused: {over.reason}. Retry in {retry_s} s.",
            retry_after_s=retry_s,
            held=over.held,
            fair_share=over.share,
            places=over.places,
            competing_customers=over.competing,
        )

    def _settled(self, *, queued: int) -> None:
        self.unsettled -= 1
        self.queued = max(0, self.queued + queued)
        self.changes += 1

    def left_queue(self) -> None:
        """A waiting order started (a worker claimed it) or was cancelled."""
        self.queued = max(0, self.queued - 1)
        self.changes += 1

    def resync(self, stored_queued: int, *, read_at_change: int) -> None:
        """Adopt the store's count of waiting orders (other processes enqueue and claim too).

        `read_at_change` is `changes` when the count was read; if anything changed here
        since, the count may be stale and is dropped (the next one will do).
        """
        if read_at_change == self.changes:
            self.queued = stored_queued + self.unsettled

    def estimated_start_s(self, now: float, queue_position: int, level: ServiceLevel) -> float:
        """Estimated seconds until the waiting order at `queue_position` (1-based) starts."""
        return capacity.estimated_start_s(
            self.load(now), self.limits.capacity, queue_position - 1, self.pipeline.mean_s(level)
        )

    def update(self, **changes: Any) -> None:
        """New limits (mode, capacity, queue_limit, max_queue_wait_s) from now on."""
        self.limits = dataclasses.replace(self.limits, **changes)
        self.dispatcher.capacity = self.limits.capacity

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
