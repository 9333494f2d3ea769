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

In `auto` mode `level` is the level in force (`capacity.auto_level`); it moves on
every decision that reads the full load, and `on_level` hears each switch.

Retry-After is spread (`_spread`): the estimate of when room is back is moved by an
offset within a window centred on it, proportional to the wait (a quarter of it, at
least one second), and rounded down to whole seconds. Successive refusals take
successive offsets of a golden-ratio sequence, which fills the window evenly however
many there are: a burst refused together comes back spread over the window, and on
average exactly at the estimate (rounding down after an even offset in [0, 1) is
unbiased; rounding up would add half a second to every answer). Deterministic: the
same refusals get the same values. Room often comes back within a fraction of a second,
which whole seconds cannot say: the refusal also carries the estimate in milliseconds
(`Retry-After-Ms`), moved by the same offset within the quarter of the wait alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from retail.core import capacity
from retail.core.dispatch import Dispatcher
from retail.core.errors import CapacityExceeded, OverFairShare
from retail.core.fairness import FairShare, OverShare
from retail.core.pipeline import Pipeline
from retail.core.types import AutoLevel, OverloadMode, Priority, ServiceLevel

DecisionObserver = Callable[[OverloadMode, Priority, capacity.Decision], None]
# `auto` mode switched level: (from, to, the predicted wait of a new standard order, s)
LevelObserver = Callable[[AutoLevel, AutoLevel, float], None]

_CRITICAL, _STANDARD, _SHEDDABLE = (
    p.rank for p in (Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE)
)
SPREAD_FRACTION = 0.25  # Retry-After values of a burst spread over this share of the wait
SPREAD_MIN_WINDOW_S = 1.0  # ... and over one second at least (Retry-After is whole seconds)
GOLDEN_FRACTION = (math.sqrt(5) - 1) / 2  # successive offsets fill the window evenly

# Read once: an enum member looked up on its class goes through a slow attribute hook
# (Python 3.11), and these are read for every order.
_CRITICAL_PRIORITY, _STANDARD_PRIORITY = Priority.CRITICAL, Priority.STANDARD
_CRITICAL_RANK, _SHEDDABLE_RANK = Priority.CRITICAL.rank, Priority.SHEDDABLE.rank


@functools.lru_cache(maxsize=1024)
def _refusal_detail(reason: str, retry_after_s: int) -> str:
    # Cached: under overload the same few refusals are written over and over.
    return f"Order refused: {reason}. Retry in {retry_after_s} s."


class _Levels:
    """Waiting orders of one priority, in start order, as runs of full or degraded ones:
    the orders ahead of a new one take their own level's time, not the level in force."""

    __slots__ = ("degraded", "runs", "total")

    def __init__(self) -> None:
        self.runs: deque[list[Any]] = deque()  # [degraded, count]
        self.total = 0
        self.degraded = 0

    def push(self, degraded: bool) -> None:
        runs = self.runs
        if runs and runs[-1][0] == degraded:
            runs[-1][1] += 1
        else:
            runs.append([degraded, 1])
        self.total += 1
        self.degraded += degraded

    def _drop(self, index: int) -> None:
        runs = self.runs
        if not runs:
            return
        run = runs[index]
        run[1] -= 1
        self.total -= 1
        self.degraded -= run[0]
        if not run[1]:
            del runs[index]

    def drop_first(self) -> None:
        """The order that started first left (it started, or was cancelled or expired)."""
        self._drop(0)

    def drop_last(self) -> None:
        """The order admitted last was not stored."""
        self._drop(-1)

    def resize(self, total: int) -> None:
        """`total` wait now (counted elsewhere): the first have started; new ones are full."""
        runs = self.runs
        while self.total > total and runs:
            run = runs[0]
            taken = min(run[1], self.total - total)
            run[1] -= taken
            self.total -= taken
            if run[0]:
                self.degraded -= taken
            if not run[1]:
                runs.popleft()
        if self.total < total:
            if runs and not runs[-1][0]:
                runs[-1][1] += total - self.total
            else:
                runs.append([False, total - self.total])
            self.total = total


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


@dataclass(slots=True)
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
        on_level: LevelObserver | None = None,
    ) -> None:
        self.limits = limits
        self.pipeline = pipeline
        self.dispatcher: Dispatcher[Any] = dispatcher or Dispatcher(limits.capacity)
        self.dispatcher.capacity = limits.capacity
        # Waiting for a slot, admitted orders not yet stored included; by `Priority.rank`.
        self._waiting = [0] * len(Priority)
        self._unsettled = [0] * len(Priority)  # admitted, not yet stored or given back
        # The same, by service level, in start order (`_waiting` is their total).
        self._levels = [_Levels() for _ in Priority]
        self.changes = 0  # bumped on every local change, so a stale resync is dropped
        self.counters = Counters()  # every priority
        self.by_priority: dict[Priority, Counters] = {p: Counters() for p in Priority}
        self._on_decision = on_decision
        self.fairness = fairness  # fair shares per customer (None: first come, first served)
        # What the policy plans with; the delay models do not change while it runs.
        self._full_service_s = pipeline.mean_s(ServiceLevel.FULL)
        self._degraded_service_s = pipeline.mean_s(ServiceLevel.DEGRADED)
        self.level = AutoLevel.QUEUE  # auto mode's level in force
        self._on_level = on_level
        self._refusals = 0  # refusals so far: which offset the next Retry-After gets

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
        levels = self._levels
        return capacity.Load(
            in_flight=self.dispatcher.busy(now),
            queued=sum(waiting),
            remaining_s=remaining,
            full_service_s=self._full_service_s,
            degraded_service_s=self._degraded_service_s,
            critical_queued=waiting[_CRITICAL],
            sheddable_queued=waiting[_SHEDDABLE],
            degraded_queued=levels[_STANDARD].degraded,
            degraded_sheddable_queued=levels[_SHEDDABLE].degraded,
            # in start order, where it matters: when some wait on the reduced path
            runs=(
                tuple([tuple(map(tuple, lv.runs)) for lv in levels])
                if levels[_STANDARD].degraded or levels[_SHEDDABLE].degraded
                else None
            ),
        )

    def _ahead(self, priority: Priority) -> int:
        """Waiting orders that start before a new order of `priority` (as `Load.ahead_of`)."""
        waiting = self._waiting
        if priority is _CRITICAL_PRIORITY:
            return waiting[_CRITICAL_RANK]
        total = sum(waiting)
        if priority is _STANDARD_PRIORITY:
            return total - waiting[_SHEDDABLE_RANK]
        return total

    def _policy(
        self, now: float, priority: Priority, start_within_s: float | None = None
    ) -> tuple[capacity.Decision, capacity.Load | None, AutoLevel]:
        """`capacity.decide` on the load now, and auto mode's level it was decided at; the
        `Load` is built only when no slot is free (or auto mode is above its first level)."""
        level = self.level
        if level is AutoLevel.QUEUE:
            dispatcher = self.dispatcher
            at_once = capacity.admit_at_once(
                self.limits,
                dispatcher.busy(now) if dispatcher.running else 0,  # a plan ended frees its slot
                self._ahead(priority),
                priority,
                waiting=sum(self._waiting),
            )
            if at_once is not None:
                return at_once, None, level
        load = self.load(now)
        if self.limits.mode is OverloadMode.AUTO:
            level = capacity.auto_level(self.limits, load, level)
        decision = capacity.decide(
            self.limits, load, priority=priority, start_within_s=start_within_s, level=level
        )
        return decision, load, level

    def _decide(
        self, now: float, priority: Priority, start_within_s: float | None
    ) -> tuple[capacity.Decision, capacity.Load | None]:
        decision, load, level = self._policy(now, priority, start_within_s)
        if level is not self.level:
            self._set_level(level, load)
        if isinstance(decision, capacity.Reject):
            raise self._shed(decision, load, priority, priority, now)
        if self._on_decision is not None:
            self._on_decision(self.limits.mode, priority, decision)
        return decision, load

    def refuse(
        self,
        now: float,
        customer: str | None = None,
        *,
        priority: Priority = Priority.STANDARD,
        start_within_s: float | None = None,
    ) -> None:
        """Raise what `admit` would raise for this order now, counted as `admit` counts
        it; take nothing. An order that would be admitted is not counted: `admit`,
        called for it next, decides and counts it.

        For a request read and refused before it goes further (`retail serve`'s door,
        for a body read only so that fair shares see its customer).
        """
        fair = self.fairness if customer is not None else None
        outcome = self._judge_share(fair, customer or "", now) if fair is not None else None
        decision, load, level = self._policy(now, priority, start_within_s)
        if level is not self.level:
            self._set_level(level, load)
        if not isinstance(decision, capacity.Reject):
            return
        if fair is not None and outcome is not None:
            fair.observe(outcome)  # told only now: an order admitted is judged again
        raise self._shed(decision, load, priority, priority, now)

    def level_at(self, now: float) -> AutoLevel:
        """Auto mode's level as the load stands now (it moves here too, not only when an
        order arrives), so that views show it going back as the load falls."""
        if self.limits.mode is OverloadMode.AUTO:
            load = self.load(now)
            self._set_level(capacity.auto_level(self.limits, load, self.level), load)
        return self.level

    def _set_level(self, level: AutoLevel, load: capacity.Load | None) -> None:
        if level is self.level:
            return
        before, self.level = self.level, level
        if self._on_level is not None:
            wait_s = capacity.auto_waits(load, self.limits.capacity).now_s if load else 0.0
            self._on_level(before, level, wait_s)

    def refuse_early(self, now: float) -> bool:
        """Raise `CapacityExceeded` if a new order would be refused now; take nothing.

        For a refusal before the request is read, so before its priority is known: it
        refuses only what would refuse a critical order without a deadline. An order
        that passes still has to be admitted (`admit`) once it is whole. True when it
        passes only so that fair shares see its customer: every slot is held, some by
        orders admitted and not yet claimed, and the order is most likely refused once
        read (`refuse` decides it without taking a place).
        """
        limits = self.limits
        if (
            limits.mode in (OverloadMode.QUEUE, OverloadMode.DEGRADE)
            and limits.max_queue_wait_s is None
            and sum(self._waiting) < limits.queue_limit
        ):
            return False  # room in the queue: only `admit` can refuse (priority, deadline)
        if limits.mode is OverloadMode.REJECT and self.fairness is not None:
            running = len(self.dispatcher.running)
            if running + self._waiting[_CRITICAL_RANK] < limits.capacity:
                # Slots held only by orders admitted and not yet claimed (a worker takes
                # them within milliseconds): the request is read, so that fair shares
                # note its customer as competing, and `admit` refuses it if no slot is
                # left. Without fair shares nothing learns from it: refused unread.
                return running + sum(self._waiting) >= limits.capacity
        decision, load, level = self._policy(now, Priority.CRITICAL)
        self._set_level(level, load)
        if isinstance(decision, capacity.Reject):
            # Counted as the order it most likely is: its priority was never read.
            raise self._shed(decision, load, Priority.STANDARD, None, now)
        return False

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
            fair.observe(self._judge_share(fair, customer or "", now))
        decision, _ = self._decide(now, priority, start_within_s)
        assert not isinstance(decision, capacity.Reject)
        self._waiting[priority.rank] += 1
        self._levels[priority.rank].push(decision.service_level is ServiceLevel.DEGRADED)
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

    def _judge_share(self, fair: FairShare, customer: str, now: float) -> str:
        """Fair shares' outcome for `customer` now (for the caller to observe); raise
        `OverFairShare`, observed, if one more place is over its share."""
        outcome, over = fair.judge(
            customer, now, self.places(), freed=lambda: self.dispatcher.ended_by_plan(now)
        )
        if over is not None:
            fair.observe(outcome)
            raise self._over_share(over, now)
        return outcome

    def _fair_settled(self, customer: str | None, *, kept: bool) -> None:
        if customer is not None and self.fairness is not None:
            self.fairness.settled(customer, kept=kept)

    def order_ended(self, customer: str) -> None:
        """An order of `customer` ended (fulfilled, failed or cancelled): its place is free."""
        if self.fairness is not None:
            self.fairness.gave_back(customer)

    def _over_share(self, over: OverShare, now: float) -> OverFairShare:
        free_s = self.dispatcher.next_free_s(now)
        retry_s = capacity.retry_after_s(free_s)
        return OverFairShare(
            f"Order refused: {over.reason}. Retry in {retry_s} s.",
            retry_after_s=retry_s,
            retry_after_ms=_milliseconds(free_s),
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

    def _shed(
        self,
        decision: capacity.Reject,
        load: capacity.Load | None,
        counted_as: Priority,
        asked: Priority | None,
        now: float,
    ) -> CapacityExceeded:
        """Count a refusal, as an order of `counted_as`, and make what it raises (`asked`:
        the priority the order asked for, None if never read)."""
        if self._on_decision is not None:
            self._on_decision(self.limits.mode, counted_as, decision)
        self._count_rejected(counted_as)
        return self._exceeded(decision, load, asked, now)

    def _count_rejected(self, priority: Priority) -> None:
        self.counters.rejected += 1
        self.by_priority[priority].rejected += 1

    def _settled(self, priority: Priority, *, queued: int) -> None:
        rank = priority.rank
        self._unsettled[rank] -= 1
        self._waiting[rank] = max(0, self._waiting[rank] + queued)
        if queued:
            self._levels[rank].drop_last()
        self.changes += 1

    def left_queue(self, priority: Priority = Priority.STANDARD) -> None:
        """A waiting order started (a worker claimed it), was cancelled or expired."""
        rank = priority.rank
        self._waiting[rank] = max(0, self._waiting[rank] - 1)
        self._levels[rank].drop_first()
        self.changes += 1

    def resync(self, stored_queued: int | Mapping[Priority, int], *, read_at_change: int) -> None:
        """Adopt the store's count of waiting orders (other processes enqueue and claim too):
        per priority, or one number for orders that are all standard.

        `read_at_change` is `changes` when the count was read; if anything changed here
        since, the count may be stale and is dropped (the next one will do). It is dropped
        too while an admitted order is being written: the store may count it already, and
        it counts here until it is settled (counted twice, it would refuse orders the
        service has room for until the next count).
        """
        if read_at_change == self.changes and not any(self._unsettled):
            self.restore(stored_queued)

    def restore(self, stored_queued: int | Mapping[Priority, int]) -> None:
        """Count the store's waiting orders (per priority, or all standard) as waiting here."""
        if isinstance(stored_queued, int):
            stored_queued = {Priority.STANDARD: stored_queued}
        for priority in Priority:
            rank = priority.rank
            self._waiting[rank] = stored_queued.get(priority, 0) + self._unsettled[rank]
            self._levels[rank].resize(self._waiting[rank])

    def estimated_start_s(self, now: float, queue_position: int, level: ServiceLevel) -> float:
        """Estimated seconds until the waiting order at `queue_position` (1-based, in start
        order: orders of a higher priority that wait count as ahead of it) starts."""
        load = self.load(now)
        start_s = capacity.estimated_start_s(
            load, self.limits.capacity, queue_position - 1, self.pipeline.mean_s(level)
        )
        return start_s + load.handoff_s

    def update(self, **changes: Any) -> None:
        """New limits (mode, capacity, queue_limit, max_queue_wait_s, critical_reserve,
        sheddable_max_wait_s, target_wait_s) from now on."""
        self.limits = dataclasses.replace(self.limits, **changes)
        self.dispatcher.capacity = self.limits.capacity
        if self.limits.mode is not OverloadMode.AUTO:
            self._set_level(AutoLevel.QUEUE, None)  # entering auto starts from its first level

    def _spread(self, decision: capacity.Reject) -> tuple[int, int]:
        """The Retry-After for `decision`, in whole seconds and in milliseconds: its
        estimate, dithered by the next offset."""
        wait_s = decision.retry_in_s
        self._refusals = n = self._refusals + 1
        offset = (n * GOLDEN_FRACTION) % 1.0
        fine = SPREAD_FRACTION * wait_s
        window = fine if fine > SPREAD_MIN_WINDOW_S else SPREAD_MIN_WINDOW_S
        # Never negative (the window's lower half is at most an eighth of the wait, or
        # nothing), so int() rounds down.
        value = int(wait_s + window * offset - (window - 1.0) / 2)
        return (value if value > 1 else 1), _milliseconds(wait_s + fine * (offset - 0.5))

    def _exceeded(
        self,
        decision: capacity.Reject,
        load: capacity.Load | None,
        priority: Priority | None,
        now: float,
    ) -> CapacityExceeded:
        assert load is not None  # refused only when no slot is free: the full load was read
        retry_s, retry_ms = self._spread(decision)
        # Who asked for more than the plain order is told which of it was refused.
        asked: dict[str, Any] = {}
        if priority is not None and priority is not Priority.STANDARD:
            asked["priority"] = priority.value
        if decision.cause in ("reserved", "sheddable", "deadline", "wait_target"):
            asked["cause"] = decision.cause
        return CapacityExceeded(
            _refusal_detail(decision.reason, retry_s),
            retry_after_s=retry_s,
            retry_after_ms=retry_ms,
            mode=self.limits.mode.value,
            capacity=self.limits.capacity,
            in_flight=load.in_flight,
            queued=load.queued,
            queue_limit=self.limits.queue_limit,
            **asked,
        )


def _milliseconds(seconds: float) -> int:
    """A `Retry-After-Ms`: whole milliseconds, at least 1."""
    value = round(seconds * 1000.0)
    return value if value > 1 else 1
