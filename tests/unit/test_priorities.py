"""Priorities and deadlines in the pure policy: `decide`, the waiting line, admission's counts."""

from __future__ import annotations

import pytest

from retail.core import capacity
from retail.core.admission import Admission
from retail.core.capacity import Admit, Degrade, Limits, Load, Queue, Reject, decide
from retail.core.dispatch import WaitingLine
from retail.core.errors import CapacityExceeded
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority

CRITICAL, STANDARD, SHEDDABLE = Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE
FULL_S = 2.0


def load(
    in_flight: int, queued: int = 0, *, critical: int = 0, sheddable: int = 0, degraded: int = 0
) -> Load:
    """`in_flight` orders, each `FULL_S` from done; `queued` waiting, of which some critical,
    some sheddable, and some standard ones on the reduced path (`degraded`)."""
    return Load(
        in_flight=in_flight,
        queued=queued,
        remaining_s=(FULL_S,) * in_flight,
        full_service_s=FULL_S,
        degraded_service_s=1.0,
        critical_queued=critical,
        sheddable_queued=sheddable,
        degraded_queued=degraded,
    )


def limits(mode: OverloadMode, capacity_: int = 2, queue_limit: int = 4, **more: float) -> Limits:
    return Limits(mode=mode, capacity=capacity_, queue_limit=queue_limit, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", list(OverloadMode))
def test_without_a_reserve_nor_others_waiting_critical_and_standard_are_decided_alike(
    mode: OverloadMode,
) -> None:
    for busy in (load(0), load(1), load(2), load(2, 4, critical=4)):
        standard = decide(limits(mode), busy)
        assert decide(limits(mode), busy, priority=STANDARD) == standard
        critical = decide(limits(mode), busy, priority=CRITICAL)
        if isinstance(standard, Degrade):  # the one difference: critical is never degraded
            assert critical == Queue(standard.queue_position, standard.estimated_start_s)
        elif isinstance(standard, Reject):
            assert isinstance(critical, Reject)
        else:
            assert critical == standard


def test_the_reserve_holds_slots_for_critical_orders_in_reject_mode() -> None:
    rules = limits(OverloadMode.REJECT, capacity_=4, critical_reserve=1)
    assert decide(rules, load(2)) == Admit()
    refused = decide(rules, load(3))
    assert isinstance(refused, Reject) and refused.cause == "reserved"
    assert "held for critical orders (1 of 4 reserved, 3 in fulfilment)" in refused.reason
    assert decide(rules, load(3), priority=CRITICAL) == Admit()
    assert isinstance(decide(rules, load(4), priority=CRITICAL), Reject)


@pytest.mark.parametrize("mode", [OverloadMode.QUEUE, OverloadMode.DEGRADE])
def test_the_reserve_holds_queue_places_for_critical_orders(mode: OverloadMode) -> None:
    rules = limits(mode, capacity_=1, queue_limit=3, critical_reserve=1)
    assert not isinstance(decide(rules, load(1, 1)), Reject)
    refused = decide(rules, load(1, 2))
    assert isinstance(refused, Reject) and refused.cause == "queue_full"
    assert refused.reason == "the queue is full (2 of 3 waiting; 1 place held for critical orders)"
    # The critical order starts before the two standard ones: first in line, next slot.
    assert decide(rules, load(1, 2), priority=CRITICAL) == Queue(1, FULL_S)
    assert isinstance(decide(rules, load(1, 3, critical=1), priority=CRITICAL), Reject)


def test_a_critical_order_is_estimated_among_the_orders_that_start_before_it() -> None:
    rules = limits(OverloadMode.QUEUE, capacity_=1, queue_limit=10)
    busy = load(1, 5, critical=1, sheddable=2)  # 1 critical, 2 standard, 2 sheddable waiting
    assert decide(rules, busy, priority=CRITICAL) == Queue(2, 2 * FULL_S)
    assert decide(rules, busy, priority=STANDARD) == Queue(4, 4 * FULL_S)
    # A free slot goes to a critical order even while lower priorities wait for theirs.
    assert decide(rules, load(0, 1), priority=CRITICAL) == Admit(queue_position=1)


@pytest.mark.parametrize("mode", list(OverloadMode))
def test_a_sheddable_order_is_taken_only_if_it_starts_in_time(mode: OverloadMode) -> None:
    assert decide(limits(mode), load(1), priority=SHEDDABLE) == Admit()
    refused = decide(limits(mode), load(2), priority=SHEDDABLE)
    assert isinstance(refused, Reject)
    if mode is not OverloadMode.REJECT:
        assert refused.cause == "sheddable"
        assert refused.retry_after_s == 2  # when it could start at once
        patient = limits(mode, sheddable_max_wait_s=FULL_S)
        taken = decide(patient, load(2), priority=SHEDDABLE)
        level = Degrade if mode is OverloadMode.DEGRADE else Queue
        assert isinstance(taken, level)


def test_critical_orders_are_never_degraded() -> None:
    rules = limits(OverloadMode.DEGRADE, sheddable_max_wait_s=10)
    assert isinstance(decide(rules, load(2)), Degrade)
    assert isinstance(decide(rules, load(2), priority=SHEDDABLE), Degrade)
    assert decide(rules, load(2), priority=CRITICAL) == Queue(1, FULL_S)  # full service


@pytest.mark.parametrize("mode", [OverloadMode.QUEUE, OverloadMode.DEGRADE])
def test_a_deadline_that_cannot_be_met_is_refused(mode: OverloadMode) -> None:
    rules = limits(mode, capacity_=1, queue_limit=10)
    # The slot frees in 2 s, then two orders of 2 s (full) or 1 s (degraded) start first.
    degrading = mode is OverloadMode.DEGRADE
    busy = load(1, 2, degraded=2 if degrading else 0)
    start_s = FULL_S + 2 * (1.0 if degrading else FULL_S)
    assert not isinstance(decide(rules, busy, start_within_s=start_s), Reject)
    refused = decide(rules, busy, start_within_s=start_s - 0.5)
    assert isinstance(refused, Reject) and refused.cause == "deadline"
    assert refused.retry_after_s == 1  # 0.5 s too late: whole seconds, at least 1
    assert f"cannot start within {start_s - 0.5:g} s" in refused.reason
    # An order that starts at once always meets its deadline.
    assert decide(rules, load(0), start_within_s=0.001) == Admit()


def test_in_degrade_mode_the_start_is_estimated_with_each_waiting_orders_own_level() -> None:
    """Critical orders run in full even in degrade mode: a new order waits their full time
    (the estimate once planned every waiting order on the reduced path, so critical
    orders with a deadline were accepted and then expired)."""
    rules = limits(OverloadMode.DEGRADE, capacity_=1, queue_limit=10)
    # The slot frees in 2 s; two critical orders wait (2 s each, in full).
    busy = load(1, 2, critical=2)
    assert decide(rules, busy, priority=CRITICAL) == Queue(3, 3 * FULL_S)
    assert decide(rules, busy) == Degrade(3, 3 * FULL_S)
    refused = decide(rules, busy, priority=CRITICAL, start_within_s=3 * FULL_S - 0.1)
    assert isinstance(refused, Reject) and refused.cause == "deadline"
    # One critical (full) then one standard on the reduced path (1 s): 2 + 2 + 1.
    mixed = load(1, 2, critical=1, degraded=1)
    assert decide(rules, mixed) == Degrade(3, 5.0)
    assert decide(rules, mixed, priority=CRITICAL) == Queue(2, 4.0)


def test_the_estimate_plays_out_the_start_order_when_levels_are_mixed() -> None:
    """Two slots free at 0 and 0.9 s; one critical order (2 s) then one degraded (1 s) wait.
    The critical one takes the slot at 0 (free again at 2), the degraded one the slot at
    0.9 (free again at 1.9): a new order starts at 1.9. A mean service time of the two
    (1.5 s) would say 0.9, and an order with a deadline of 1 s would expire."""
    busy = Load(
        in_flight=2,
        queued=2,
        remaining_s=(0.0, 0.9),
        full_service_s=FULL_S,
        degraded_service_s=1.0,
        critical_queued=1,
        degraded_queued=1,
    )
    rules = limits(OverloadMode.DEGRADE, capacity_=2, queue_limit=10)
    assert decide(rules, busy) == Degrade(3, 1.9)
    assert capacity.start_after_s(busy, 2, capacity.ahead_segments(busy, STANDARD)) == 1.9
    refused = decide(rules, busy, start_within_s=1.0)
    assert isinstance(refused, Reject) and refused.cause == "deadline"


def test_the_waiting_line_starts_by_priority_then_first_come() -> None:
    line: WaitingLine[str] = WaitingLine()
    for item, priority in (
        ("s1", SHEDDABLE),
        ("t1", STANDARD),
        ("c1", CRITICAL),
        ("t2", STANDARD),
        ("c2", CRITICAL),
    ):
        line.push(item, priority)
    assert list(line) == ["c1", "c2", "t1", "t2", "s1"]
    assert (line.ahead_of("t2"), line.count(CRITICAL), line.first()) == (3, 2, "c1")
    line.remove("c2")
    assert "c2" not in line
    with pytest.raises(ValueError, match="not waiting"):
        line.remove("c2")
    assert [line.pop() for _ in range(len(line))] == ["c1", "t1", "t2", "s1"]
    assert line.first() is None


def test_admission_counts_waiting_orders_and_decisions_per_priority() -> None:
    gate = Admission(
        capacity.Limits(OverloadMode.QUEUE, capacity=1, queue_limit=2, critical_reserve=1),
        Pipeline.build(fulfilment_delay=str(FULL_S)),
    )
    gate.dispatcher.start("busy", now=0.0, planned_s=FULL_S)
    gate.admit(now=0.0).keep()
    with pytest.raises(CapacityExceeded) as refused:
        gate.admit(now=0.0)
    assert refused.value.extra.get("cause") is None  # the plain queue-full refusal
    critical = gate.admit(now=0.0, priority=CRITICAL)
    assert critical.decision == Queue(1, FULL_S)
    critical.keep()
    assert (gate.waiting(CRITICAL), gate.waiting(STANDARD), gate.queued) == (1, 1, 2)
    assert gate.by_priority[STANDARD].rejected == 1
    assert gate.by_priority[CRITICAL].queued == 1
    assert gate.counters.accepted == 2
    gate.left_queue(CRITICAL)
    assert gate.load(0.0).critical_queued == 0
    gate.resync({STANDARD: 1, SHEDDABLE: 3}, read_at_change=gate.changes)
    assert (gate.queued, gate.waiting(SHEDDABLE)) == (4, 3)
