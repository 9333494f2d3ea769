"""Admission and the dispatcher: the load model, with time as a plain number."""

from __future__ import annotations

import pytest

from retail.core import capacity
from retail.core.admission import Admission
from retail.core.dispatch import Dispatcher, WaitingLine
from retail.core.errors import CapacityExceeded
from retail.core.fairness import FairShare
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority, ServiceLevel

FULL_S = 2.0


def admission(
    mode: OverloadMode = OverloadMode.QUEUE, capacity_: int = 2, **limits: object
) -> Admission:
    values: dict[str, object] = {"mode": mode, "capacity": capacity_, "queue_limit": 10}
    values.update(limits)
    return Admission(
        capacity.Limits(**values),  # type: ignore[arg-type]
        Pipeline.build(fulfilment_delay=str(FULL_S)),
    )


def test_the_dispatcher_knows_when_each_slot_frees() -> None:
    slots: Dispatcher[str] = Dispatcher(2)
    assert slots.free_slots == 2
    assert slots.next_free_s(now=0.0) == 0.0
    slots.start("a", now=0.0, planned_s=3.0)
    slots.start("b", now=1.0, planned_s=1.5)
    assert slots.free_slots == 0
    assert slots.remaining_s(now=2.0) == (0.5, 1.0)  # soonest first
    assert slots.next_free_s(now=2.0) == 0.5
    assert slots.remaining_s(now=10.0) == (0.0, 0.0)  # late, never negative
    assert slots.finish("b") is not None
    assert slots.finish("b") is None
    assert slots.free_slots == 1


def test_a_slot_counts_as_free_from_its_orders_planned_end() -> None:
    """The order past its planned end is only recording its end: the policy takes the slot
    as free (as the simulator does), and the next order's timetable starts at that end."""
    slots: Dispatcher[str] = Dispatcher(2)
    slots.start("a", now=0.0, planned_s=1.0)
    slots.start("b", now=0.5, planned_s=1.0)
    assert [slots.busy(0.99), slots.busy(1.0), slots.busy(1.6)] == [2, 1, 0]
    assert slots.free_slots == 0  # until they give their slots back
    slots.finish("a", at=1.004)  # its end written 4 ms after its plan ended
    slots.finish("b", at=1.2)  # a step that took less than planned (payment declined)
    assert slots.freed_at() == 1.0  # the slot free the longest goes to the next order
    slots.start("c", now=1.3, planned_s=1.0)
    assert slots.freed_at() == 1.2
    slots.start("d", now=1.3, planned_s=1.0)
    slots.finish("c")  # without `at`: no moment to hand over
    assert slots.freed_at() is None


def test_a_slot_free_before_any_end_was_recorded_is_handed_over_first() -> None:
    slots: Dispatcher[str] = Dispatcher(2)
    slots.start("a", now=0.0, planned_s=1.0)
    slots.finish("a", at=1.0)
    assert slots.free_slots == 2
    assert slots.freed_at() is None  # the slot never taken has been free longer
    slots.start("b", now=1.5, planned_s=1.0)
    assert slots.freed_at() == 1.0


def test_an_order_arriving_as_a_slots_plan_ends_is_admitted_at_once() -> None:
    gate = admission(OverloadMode.REJECT, capacity_=1)
    gate.dispatcher.start("a", now=0.0, planned_s=FULL_S)
    with pytest.raises(CapacityExceeded):
        gate.admit(FULL_S - 0.001)
    # Its end is still being written (the slot is not given back), but the plan is over.
    ticket = gate.admit(FULL_S)
    assert isinstance(ticket.decision, capacity.Admit)
    assert gate.load(FULL_S).in_flight == 0


def test_a_lowered_capacity_frees_a_slot_only_once_enough_orders_end() -> None:
    slots: Dispatcher[str] = Dispatcher(3)
    for key, end in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        slots.start(key, now=0.0, planned_s=end)
    slots.capacity = 1
    assert slots.free_slots == 0
    assert slots.next_free_s(now=0.0) == 3.0  # two must end before one slot is free


def test_the_waiting_line_is_first_come_first_served() -> None:
    line: WaitingLine[str] = WaitingLine()
    for item in ("a", "b", "c"):
        line.push(item)
    line.remove("b")
    assert [line.pop(), line.pop()] == ["a", "c"]
    with pytest.raises(IndexError):
        line.pop()


def test_admitted_orders_hold_their_place_until_settled() -> None:
    gate = admission(OverloadMode.REJECT, capacity_=1)
    first = gate.admit(now=0.0)
    assert isinstance(first.decision, capacity.Admit)
    with pytest.raises(CapacityExceeded):  # the place is taken before the order is stored
        gate.admit(now=0.0)
    first.release()  # not stored after all
    second = gate.admit(now=0.0)
    second.keep()
    assert gate.queued == 1  # stored, waiting for a worker
    gate.left_queue()  # a worker took it
    gate.dispatcher.start("order", now=0.0, planned_s=FULL_S)
    with pytest.raises(CapacityExceeded) as refused:
        gate.admit(now=0.5)
    # 1.5 s left: 1 or 2 s (whole seconds, dithered so that on average it is 1.5)
    assert refused.value.retry_after_s in (1, 2)
    assert gate.counters.rejected == 2
    assert gate.counters.accepted == 2


def test_a_withdrawn_ticket_counts_as_never_admitted() -> None:
    gate = admission()
    ticket = gate.admit(now=0.0)
    ticket.withdraw()
    ticket.keep()  # settled once: later calls change nothing
    assert (gate.queued, gate.unsettled, gate.counters.accepted) == (0, 0, 0)


def test_an_early_refusal_takes_nothing_and_is_counted_once() -> None:
    gate = admission(OverloadMode.REJECT, capacity_=1)
    gate.refuse_early(now=0.0)  # room: nothing happens
    assert gate.queued == 0
    gate.admit(now=0.0).keep()
    gate.left_queue()  # a worker took it: the only slot is busy
    gate.dispatcher.start("a", now=0.0, planned_s=FULL_S)
    with pytest.raises(CapacityExceeded):
        gate.refuse_early(now=0.0)
    assert gate.counters.rejected == 1
    assert gate.queued == 0


def test_in_reject_mode_orders_not_yet_claimed_hold_their_slots_whatever_comes() -> None:
    # Two slots, both given to standard orders that no worker has claimed yet: a critical
    # order starts before them in the line, but in reject mode nobody may wait, so it is
    # refused. (Before its body is read it passes only with fair shares on, which note its
    # customer as competing; without them it is refused unread.)
    gate = admission(OverloadMode.REJECT, capacity_=2)
    fair = admission(OverloadMode.REJECT, capacity_=2)
    fair.fairness = FairShare()
    for _ in range(2):
        gate.admit(now=0.0, priority=Priority.STANDARD).keep()
        fair.admit(now=0.0, priority=Priority.STANDARD).keep()
    assert gate.queued == fair.queued == 2
    fair.refuse_early(now=0.0)
    with pytest.raises(CapacityExceeded):
        gate.refuse_early(now=0.0)
    with pytest.raises(CapacityExceeded) as refused:
        gate.admit(now=0.0, priority=Priority.CRITICAL)
    assert refused.value.retry_after_s >= 1
    gate.left_queue()  # one claimed and started, one still waiting for its worker
    gate.dispatcher.start("a", now=0.0, planned_s=FULL_S)
    with pytest.raises(CapacityExceeded):
        gate.admit(now=0.0, priority=Priority.CRITICAL)
    gate.dispatcher.start("b", now=0.0, planned_s=FULL_S)
    with pytest.raises(CapacityExceeded):  # both slots in fulfilment: refused unread
        gate.refuse_early(now=0.0)
    # In queue mode the same critical order is taken: it waits, ahead of the standard ones.
    queueing = admission(OverloadMode.QUEUE, capacity_=2)
    for _ in range(2):
        queueing.admit(now=0.0, priority=Priority.STANDARD).keep()
    assert isinstance(queueing.admit(now=0.0, priority=Priority.CRITICAL).decision, capacity.Admit)


def test_a_stale_resync_is_dropped() -> None:
    gate = admission()
    read_at = gate.changes
    gate.admit(now=0.0).keep()  # changed since the count was read
    gate.resync(0, read_at_change=read_at)
    assert gate.queued == 1
    gate.resync(5, read_at_change=gate.changes)
    assert gate.queued == 5


def test_a_resync_while_an_order_is_being_written_is_dropped() -> None:
    gate = admission()
    ticket = gate.admit(now=0.0)  # being written: the count below may include it, or not
    gate.resync(1, read_at_change=gate.changes)
    ticket.keep()
    assert gate.queued == 1  # not counted twice
    gate.resync(1, read_at_change=gate.changes)
    assert gate.queued == 1


def test_queued_orders_are_estimated_on_the_slots_timetable() -> None:
    gate = admission(capacity_=2)
    gate.dispatcher.start("a", now=0.0, planned_s=1.0)
    gate.dispatcher.start("b", now=0.0, planned_s=2.0)
    decision = gate.admit(now=0.0).decision
    assert isinstance(decision, capacity.Queue)
    assert decision.estimated_start_s == 1.0  # the first slot frees after 1 s
    assert gate.estimated_start_s(0.0, 2, ServiceLevel.FULL) == 2.0


def test_decisions_reach_the_observer() -> None:
    seen: list[tuple[OverloadMode, Priority, type]] = []
    gate = Admission(
        capacity.Limits(OverloadMode.REJECT, capacity=1, queue_limit=0),
        Pipeline.build(fulfilment_delay="1"),
        on_decision=lambda mode, priority, decision: seen.append((mode, priority, type(decision))),
    )
    gate.admit(now=0.0, priority=Priority.CRITICAL).keep()
    with pytest.raises(CapacityExceeded):
        gate.admit(now=0.0)
    assert seen == [
        (OverloadMode.REJECT, Priority.CRITICAL, capacity.Admit),
        (OverloadMode.REJECT, Priority.STANDARD, capacity.Reject),
    ]


def test_a_capacity_change_reaches_the_dispatcher() -> None:
    gate = admission(capacity_=2)
    gate.update(capacity=5)
    assert gate.dispatcher.capacity == 5 == gate.limits.capacity


def test_waiting_orders_are_counted_at_their_own_service_level() -> None:
    gate = admission(OverloadMode.DEGRADE, capacity_=1)
    levels = [gate.admit(now=0.0) for _ in range(4)]  # one to start at once, three degraded
    for ticket in levels:
        ticket.keep()
    assert [t.decision.service_level for t in levels] == [ServiceLevel.FULL] + [
        ServiceLevel.DEGRADED
    ] * 3
    assert (gate.load(0.0).queued, gate.load(0.0).degraded_queued) == (4, 3)
    gate.left_queue()  # the first (in full) started
    assert (gate.load(0.0).queued, gate.load(0.0).degraded_queued) == (3, 3)
    gate.left_queue()  # then the first degraded one
    assert gate.load(0.0).degraded_queued == 2
    # The store counts five waiting (other processes enqueued three): they count in full.
    gate.restore({Priority.STANDARD: 5})
    assert (gate.load(0.0).queued, gate.load(0.0).degraded_queued) == (5, 2)
    # One left: the others started, first come first: the one left is the newest, in full.
    gate.restore({Priority.STANDARD: 1})
    assert (gate.load(0.0).queued, gate.load(0.0).degraded_queued) == (1, 0)
    refused = gate.admit(now=0.0)  # not stored after all: its place and its level go back
    refused.release()
    assert (gate.load(0.0).queued, gate.load(0.0).degraded_queued) == (1, 0)
