"""The capacity policy on its own: each mode's decision at and around its bounds."""

from __future__ import annotations

import pytest

from retail.core.capacity import (
    Admit,
    Degrade,
    Limits,
    Load,
    Queue,
    Reject,
    auto_level,
    decide,
    estimated_start_s,
    slot_free_times,
)
from retail.core.types import AutoLevel, OverloadMode, Priority, ServiceLevel

FULL_S = 2.0
DEGRADED_S = 0.8


def load(
    in_flight: int,
    queued: int = 0,
    remaining_s: tuple[float, ...] | None = None,
    *,
    degraded: int = 0,
) -> Load:
    """`in_flight` orders, each `FULL_S` from done unless `remaining_s` says otherwise;
    `queued` waiting, `degraded` of them on the reduced path."""
    return Load(
        in_flight=in_flight,
        queued=queued,
        remaining_s=remaining_s if remaining_s is not None else (FULL_S,) * in_flight,
        full_service_s=FULL_S,
        degraded_service_s=DEGRADED_S,
        degraded_queued=degraded,
    )


def limits(mode: OverloadMode, capacity: int = 2, queue_limit: int = 3, **more: float) -> Limits:
    return Limits(mode=mode, capacity=capacity, queue_limit=queue_limit, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", list(OverloadMode))
def test_a_free_slot_admits_in_full_in_every_mode(mode: OverloadMode) -> None:
    assert decide(limits(mode), load(0)) == Admit(queue_position=1)
    assert decide(limits(mode), load(1)) == Admit(queue_position=1)
    # One order already waits for the last free slot: the new one is second in line.
    assert decide(limits(mode), load(0, queued=1, remaining_s=())) == Admit(queue_position=2)


def test_reject_refuses_once_every_slot_is_busy() -> None:
    decision = decide(limits(OverloadMode.REJECT), load(2, remaining_s=(0.4, 1.3)))
    assert isinstance(decision, Reject)
    # The first slot frees in 0.4 s: Retry-After is whole seconds, at least 1.
    assert decision.retry_after_s == 1
    assert "2 fulfilment slots" in decision.reason


def test_reject_retry_after_counts_the_orders_still_waiting() -> None:
    # Both slots busy for 1.5 s and 2.5 s; one order waits and takes the first slot,
    # so room for a new order comes when the second one frees: 2.5 s -> 3 s.
    decision = decide(limits(OverloadMode.REJECT), load(2, queued=1, remaining_s=(1.5, 2.5)))
    assert decision == Reject(
        retry_after_s=3, reason="all 2 fulfilment slots are busy", retry_in_s=2.5
    )


def test_queue_accepts_up_to_the_queue_limit_with_position_and_estimate() -> None:
    rules = limits(OverloadMode.QUEUE, capacity=2, queue_limit=3)
    busy = (1.0, 1.5)
    assert decide(rules, load(2, 0, busy)) == Queue(queue_position=1, estimated_start_s=1.0)
    assert decide(rules, load(2, 1, busy)) == Queue(queue_position=2, estimated_start_s=1.5)
    # The third waits for the first slot's second round: 1.0 + 2.0.
    assert decide(rules, load(2, 2, busy)) == Queue(queue_position=3, estimated_start_s=3.0)
    refused = decide(rules, load(2, 3, busy))
    assert isinstance(refused, Reject)
    assert refused.reason == "the queue is full (3 of 3 waiting)"
    # Room comes back when the first of those waiting starts (1.0 s): Retry-After 1.
    assert refused.retry_after_s == 1


def test_a_hand_off_delays_the_starts_of_waiting_orders_but_not_a_slot_for_reject() -> None:
    # In a fleet a freed slot is seen taken 0.2 s later: every waiting order starts
    # that much later, and a queue place comes back that much later too.
    busy = (1.0, 1.5)
    handed = load(2, 1, busy)
    handed.handoff_s = 0.2
    rules = limits(OverloadMode.QUEUE, capacity=2, queue_limit=3)
    assert decide(rules, handed) == Queue(queue_position=2, estimated_start_s=1.7)
    full = load(2, 3, busy)
    full.handoff_s = 0.2
    refused = decide(rules, full)
    assert isinstance(refused, Reject)
    assert refused.retry_in_s == pytest.approx(1.2)
    # Reject mode counts a slot free once its plan ends: room then, with no hand-off.
    alone = load(2, 0, busy)
    alone.handoff_s = 0.2
    refused = decide(limits(OverloadMode.REJECT), alone)
    assert isinstance(refused, Reject)
    assert refused.retry_in_s == 1.0


def test_queue_wait_bound_sheds_before_the_length_bound() -> None:
    rules = limits(OverloadMode.QUEUE, capacity=1, queue_limit=100, max_queue_wait_s=5.0)
    # One in flight (2 s left); waiting orders start at 2, 4, 6 s.
    assert decide(rules, load(1, 1)) == Queue(queue_position=2, estimated_start_s=4.0)
    refused = decide(rules, load(1, 2))
    assert isinstance(refused, Reject)
    assert refused.retry_after_s == 1  # 6 s estimated, 5 s allowed
    assert "exceeds the limit 5 s" in refused.reason


def test_degrade_serves_overflow_on_the_reduced_path_up_to_its_ceiling() -> None:
    rules = limits(OverloadMode.DEGRADE, capacity=2, queue_limit=2)
    decision = decide(rules, load(2, 0, (1.0, 1.5)))
    assert decision == Degrade(queue_position=1, estimated_start_s=1.0)
    assert decision.service_level is ServiceLevel.DEGRADED
    # The order waiting is on the reduced path: the first slot comes round again after
    # 0.8 s, before the second one frees.
    one_degraded = load(2, 1, (1.0, 1.5), degraded=1)
    assert decide(rules, one_degraded) == Degrade(queue_position=2, estimated_start_s=1.5)
    # Had it been taken in full (a slot was free when it came), it would hold the first
    # slot 2 s: the second slot is still first to free.
    assert decide(rules, load(2, 1, (1.0, 1.5))) == Degrade(queue_position=2, estimated_start_s=1.5)
    two_degraded = load(2, 2, (0.2, 1.5), degraded=2)  # 0.2 -> 1.0 -> 1.5 (the other slot)
    assert decide(rules, load(2, 1, (0.2, 1.5), degraded=1)) == Degrade(2, 1.0)
    assert isinstance(decide(rules, two_degraded), Reject)


def test_capacity_lowered_below_the_orders_in_flight_waits_for_enough_to_finish() -> None:
    # Four in flight after capacity went from 4 to 2: a slot is back only when three finish.
    busy = (0.5, 1.0, 1.5, 2.0)
    assert slot_free_times(load(4, remaining_s=busy), 2) == [1.5, 2.0]
    assert decide(limits(OverloadMode.QUEUE), load(4, 0, busy)) == Queue(
        queue_position=1, estimated_start_s=1.5
    )


def test_estimates_never_go_backwards_as_the_queue_grows() -> None:
    snapshot = load(3, remaining_s=(0.1, 3.7, 9.0))
    starts = [estimated_start_s(snapshot, 3, i, FULL_S) for i in range(20)]
    assert starts == sorted(starts)
    # In steady state the three slots come round every 2 s: three more starts per 2 s.
    assert starts[19] - starts[16] == pytest.approx(FULL_S)


def test_zero_service_time_starts_everyone_at_the_first_free_slot() -> None:
    snapshot = Load(2, 0, (0.3, 0.7), full_service_s=0.0, degraded_service_s=0.0)
    assert estimated_start_s(snapshot, 2, 5, 0.0) == 0.3


# --- auto mode -------------------------------------------------------------------------


def waiting(remaining_s: float, queued: int, degraded: int = 0) -> Load:
    """Capacity 1: one order in flight with `remaining_s` left, `queued` waiting."""
    return Load(
        in_flight=1,
        queued=queued,
        remaining_s=(remaining_s,),
        full_service_s=FULL_S,
        degraded_service_s=DEGRADED_S,
        degraded_queued=degraded,
    )


def test_auto_levels_rise_with_the_predicted_wait_and_fall_only_well_under_the_target() -> None:
    rules = limits(OverloadMode.AUTO, capacity=1, queue_limit=100, target_wait_s=6.0)
    q, d, r = AutoLevel.QUEUE, AutoLevel.DEGRADE, AutoLevel.REFUSE
    level = q
    rising = []
    for queued in range(8):  # in full: a new order would wait 2 + 2·n s
        level = auto_level(rules, waiting(2.0, queued), level)
        rising.append(level)
    # Over 6 s from 3 waiting: whatever its path, the next order would not start in time.
    assert rising == [q, q, q, r, r, r, r, r]
    falling = []
    for queued in reversed(range(8)):  # all on the reduced path now, 0.5 s left
        level = auto_level(rules, waiting(0.5, queued, degraded=queued), level)
        falling.append(level)
    # Left only under a quarter of the target (1.5 s): 0.5 + 0.8 s with one waiting,
    # to the reduced path; to queue once the backlog is gone.
    assert falling == [r, r, r, r, r, r, d, d]
    assert auto_level(rules, load(1, remaining_s=(0.5,)), d) is d  # one still in flight
    assert auto_level(rules, load(0), d) is q
    # On the reduced path the wait may grow up to the target: 0.5 + 0.8·7 = 6.1 s is over.
    assert auto_level(rules, waiting(0.5, 5, degraded=5), d) is d
    assert auto_level(rules, waiting(0.5, 7, degraded=7), d) is r


def test_auto_decides_by_its_level_and_never_degrades_a_critical_order() -> None:
    rules = limits(OverloadMode.AUTO, capacity=1, queue_limit=100, target_wait_s=6.0)
    assert decide(rules, load(0)) == Admit(queue_position=1)
    assert decide(rules, waiting(2.0, 2), level=AutoLevel.QUEUE) == Queue(
        queue_position=3, estimated_start_s=6.0
    )
    # The orders ahead take their own level's time: three degraded ones, 0.8 s each.
    busy = waiting(2.0, 3, degraded=3)
    assert decide(rules, busy, level=AutoLevel.DEGRADE) == Degrade(
        queue_position=4, estimated_start_s=pytest.approx(2.0 + 3 * DEGRADED_S)
    )
    # Three in full ahead: 8 s, over the target whatever the level; orders are taken
    # again once the wait is under a quarter of the target.
    over = decide(rules, waiting(2.0, 3), level=AutoLevel.DEGRADE)
    assert isinstance(over, Reject)
    assert (over.cause, over.retry_in_s) == ("wait_target", pytest.approx(8.0 - 1.5))
    refused = decide(rules, busy, level=AutoLevel.REFUSE)
    assert isinstance(refused, Reject)
    assert refused.cause == "wait_target"
    # Refusing until the wait (4.4 s) is back under a quarter of the target (1.5 s).
    assert refused.retry_in_s == pytest.approx(2.0 + 3 * DEGRADED_S - 1.5)
    for level in AutoLevel:
        critical = decide(rules, busy, priority=Priority.CRITICAL, level=level)
        assert critical == Queue(queue_position=1, estimated_start_s=2.0)
