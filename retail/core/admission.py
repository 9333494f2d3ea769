"""Admission: the load the policy decides on, the limits in force, and the counters.

`capacity.decide` is the pure policy; `Admission` owns the state it decides on and
every counter of it. Waiting orders (`queued`) are counted here and nowhere else:
an admitted order takes its place at once (before its row is written), so
concurrent requests never over-admit, and gives it back if it is not stored
(`Ticket.release`), when it starts (`left_queue`) or when it is cancelled
(`left_queue`). In-flight orders and when each frees its slot come from the
`Dispatcher`. All methods are synchronous: between a check and its increment
nothing else runs.

Waiting orders are counted per priority (`waiting(priority)`), because a new order's
start is estimated among the orders that start before it; the counters of decisions
are kept per priority too (`by_priority`), their sums in `counters`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from retail.core import capacity
from retail.core.dispatch import Dispatcher
from retail.core.errors import CapacityExceeded, OverFairShare
from retail.core.fairness import FairShare, OverShare
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority, ServiceLevel

DecisionObserver = Callable[[OverloadMode, Priority, capacity.Decision], None]


@functools.lru_cache(maxsize=1024)
def _refusal_detail(reason: str, retry_after_s: int) -> str:
    # Cached: under overload the same few refusals are written over and over.
    return f"Order refused: {reason}. Retry in {retry_after_s} s."


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
    priority: Priority = Priority.STANDARD
    _open: bool = True
    customer: str | None = None  # whose place it is, when shares are kept per customer

    def release(self) -> None:
        """The order was not stored: give its place back."""
        if self._open:
            self._open = False
            self._admission._settled(self.priority, queued=-1)
            self._admission._fair_settled(self.customer, kept=False)

    def withdraw(self) -> None:
        """The order turned out to be a retry of one already stored: as if never admitted."""
        if self._open:
            self.release()
            self._admission._count_accepted(self.decision, self.priority, step=-1)

    def keep(self) -> None:
        """The order is stored: its place now shows in the store's count too."""
        if self._open:
            self._open = False
            self._admission._settled(self.priority, queued=0)
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
        # Waiting for a slot, admitted orders not yet stored included; by `Priority.rank`.
        self._waiting = [0] * len(Priority)
        self._unsettled = [0] * len(Priority)  # admitted, not yet stored or given back
        self.changes = 0  # bumped on every local change, so a stale resync is dropped
        self.counters = Counters()  # every priority
        self.by_priority: dict[Priority, Counters] = {p: Counters() for p in Priority}
        self._on_decision = on_decision
        self.fairness = fairness  # fair shares per customer (None: first come, first served)
        # What the policy plans with; the delay models do not change while it runs.
        self._full_service_s = pipeline.mean_s(ServiceLevel.FULL)
        self._degraded_service_s = pipeline.mean_s(ServiceLevel.DEGRADED)

    @property
    def queued(self) -> int:
        """Orders waiting for a slot, every priority."""
        return sum(self._waiting)

    @property
    def unsettled(self) -> int:
        return sum(self._unsettled)

    def waiting(self, priority: Priority) -> int:
        """Orders of `priority` waiting for a slot."""
        return self._waiting[priority.rank]

    def load(self, now: float) -> capacity.Load:
        remaining = self.dispatcher.remaining_s(now)
        waiting = self._waiting
        return capacity.Load(
            in_flight=len(remaining),
            queued=sum(waiting),
            remaining_s=remaining,
            full_service_s=self._full_service_s,
            degraded_service_s=self._degraded_service_s,
            critical_queued=waiting[Priority.CRITICAL.rank],
            sheddable_queued=waiting[Priority.SHEDDABLE.rank],
        )

    def _ahead(self, priority: Priority) -> int:
        """Waiting orders that start before a new order of `priority` (as `Load.ahead_of`)."""
        waiting = self._waiting
        if priority is Priority.CRITICAL:
            return waiting[Priority.CRITICAL.rank]
        total = sum(waiting)
        if priority is Priority.STANDARD:
            return total - waiting[Priority.SHEDDABLE.rank]
        return total

    def _policy(
        self, now: float, priority: Priority, start_within_s: float | None = None
    ) -> tuple[capacity.Decision, capacity.Load | None]:
        """`capacity.decide` on the load now; the `Load` is built only when no slot is free."""
        at_once = capacity.admit_at_once(
            self.limits, len(self.dispatcher.running), self._ahead(priority), priority
        )
        if at_once is not None:
            return at_once, None
        load = self.load(now)
        decision = capacity.decide(
            self.limits, load, priority=priority, start_within_s=start_within_s
        )
        return decision, load

    def _decide(
        self, now: float, priority: Priority, start_within_s: float | None
    ) -> tuple[capacity.Decision, capacity.Load | None]:
        decision, load = self._policy(now, priority, start_within_s)
        if self._on_decision is not None:
            self._on_decision(self.limits.mode, priority, decision)
        if isinstance(decision, capacity.Reject):
            self._count_rejected(priority)
            raise self._exceeded(decision, load, priority)
        return decision, load

    def refuse_early(self, now: float) -> None:
        """Raise `CapacityExceeded` if a new order would be refused now; take nothing.

        For a refusal before the request is read, so before its priority is known: it
        refuses only what would refuse a critical order without a deadline. An order
        that passes still has to be admitted (`admit`) once it is whole.
        """
        limits = self.limits
        if (
            limits.mode is not OverloadMode.REJECT
            and limits.max_queue_wait_s is None
            and sum(self._waiting) < limits.queue_limit
        ):
            return  # room in the queue: only `admit` can refuse (priority, deadline)
        decision, load = self._policy(now, Priority.CRITICAL)
        if isinstance(decision, capacity.Reject):
            # Counted as the order it most likely is: its priority was never read.
            if self._on_decision is not None:
                self._on_decision(self.limits.mode, Priority.STANDARD, decision)
            self._count_rejected(Priority.STANDARD)
            raise self._exceeded(decision, load, None)

    def admit(
        self,
        now: float,
        customer: str | None = None,
        *,
        priority: Priority = Priority.STANDARD,
        start_within_s: float | None = None,
    ) -> Ticket:
        """Decide for one new order and take its place; raise `CapacityExceeded` to shed it.

        `start_within_s`: the order is worth fulfilling only if it starts within that many
        seconds; refused if the estimated start is later. With `fairness` and a `customer`,
        `OverFairShare` (a `429`) first if the customer is over its fair share while others
        compete.
        """
        fair = self.fairness if customer is not None else None
        if fair is not None:
            self._check_share(fair, customer or "", now)
        decision, _ = self._decide(now, priority, start_within_s)
        assert not isinstance(decision, capacity.Reject)
        self._waiting[priority.rank] += 1
        self._unsettled[priority.rank] += 1
        self.changes += 1
        self._count_accepted(decision, priority)
        if fair is not None:
            fair.took(customer or "")
        return Ticket(decision, self, priority, customer=customer if fair is not None else None)

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

    def _count_accepted(
        self, decision: capacity.Decision, priority: Priority, step: int = 1
    ) -> None:
        self.counters.count_accepted(decision, step)
        self.by_priority[priority].count_accepted(decision, step)

    def _count_rejected(self, priority: Priority) -> None:
        self.counters.rejected += 1
        self.by_priority[priority].rejected += 1

    def _settled(self, priority: Priority, *, queued: int) -> None:
        rank = priority.rank
        self._unsettled[rank] -= 1
        self._waiting[rank] = max(0, self._waiting[rank] + queued)
        self.changes += 1

    def left_queue(self, priority: Priority = Priority.STANDARD) -> None:
        """A waiting order started (a worker claimed it), was cancelled or expired."""
        rank = priority.rank
        self._waiting[rank] = max(0, self._waiting[rank] - 1)
        self.changes += 1

    def resync(self, stored_queued: int | Mapping[Priority, int], *, read_at_change: int) -> None:
        """Adopt the store's count of waiting orders (other processes enqueue and claim too):
        per priority, or one number for orders that are all standard.

        `read_at_change` is `changes` when the count was read; if anything changed here
        since, the count may be stale and is dropped (the next one will do).
        """
        if read_at_change == self.changes:
            self.restore(stored_queued)

    def restore(self, stored_queued: int | Mapping[Priority, int]) -> None:
        """Count the store's waiting orders (per priority, or all standard) as waiting here."""
        if isinstance(stored_queued, int):
            stored_queued = {Priority.STANDARD: stored_queued}
        for priority in Priority:
            rank = priority.rank
            self._waiting[rank] = stored_queued.get(priority, 0) + self._unsettled[rank]

    def estimated_start_s(self, now: float, queue_position: int, level: ServiceLevel) -> float:
        """Estimated seconds until the waiting order at `queue_position` (1-based, in start
        order: orders of a higher priority that wait count as ahead of it) starts."""
        return capacity.estimated_start_s(
            self.load(now), self.limits.capacity, queue_position - 1, self.pipeline.mean_s(level)
        )

    def update(self, **changes: Any) -> None:
        """New limits (mode, capacity, queue_limit, max_queue_wait_s, critical_reserve,
        sheddable_max_wait_s) from now on."""
        self.limits = dataclasses.replace(self.limits, **changes)
        self.dispatcher.capacity = self.limits.capacity

    def _exceeded(
        self, decision: capacity.Reject, load: capacity.Load | None, priority: Priority | None
    ) -> CapacityExceeded:
        assert load is not None  # refused only when no slot is free: the full load was read
        # Who asked for more than the plain order is told which of it was refused.
        asked: dict[str, Any] = {}
        if priority is not None and priority is not Priority.STANDARD:
            asked["priority"] = priority.value
        if decision.cause in ("reserved", "sheddable", "deadline"):
            asked["cause"] = decision.cause
        return CapacityExceeded(
            _refusal_detail(decision.reason, decision.retry_after_s),
            retry_after_s=decision.retry_after_s,
            mode=self.limits.mode.value,
            capacity=self.limits.capacity,
            in_flight=load.in_flight,
            queued=load.queued,
            queue_limit=self.limits.queue_limit,
            **asked,
        )
