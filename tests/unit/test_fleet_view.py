"""The fleet view: a read of the database plus the notices it has not seen, once each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from retail.core.fleet import FleetState, FleetView, FleetWorker, Processing, Snapshot
from retail.core.pipeline import Pipeline
from retail.core.types import Priority, ServiceLevel

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def view() -> FleetView:
    return FleetView(Pipeline.build(fulfilment_delay="fixed:6"))


def state(snapshot: str, *, queued: int = 0, processing: tuple[int, ...] = ()) -> FleetState:
    return FleetState(
        snapshot=Snapshot.parse(snapshot),
        read_at=T0,
        workers=[FleetWorker("w1", 2, T0, T0), FleetWorker("w2", 3, T0, T0)],
        processing=[
            Processing(seq, Priority.STANDARD, ServiceLevel.FULL, 0, "w1") for seq in processing
        ],
        queued={Priority.STANDARD: queued},
    )


def inserted(xid: int, seq: int, count: int = 1, rank: int = 1) -> dict[str, Any]:
    return {"k": "i", "x": str(xid), "s": seq, "q": [[rank, count]], "t": 1.0}


def started(xid: int, seq: int, step_index: int = 0) -> dict[str, Any]:
    return {"k": "u", "x": str(xid), "s": [[seq, 1, "full", step_index, "w1"]], "t": 1.0}


def ended(xid: int, seq: int) -> dict[str, Any]:
    return {"k": "u", "x": str(xid), "e": [[seq, "alice"]], "t": 1.0}


def test_a_snapshot_sees_what_committed_before_it_and_nothing_in_progress() -> None:
    snapshot = Snapshot.parse("100:105:101,103")
    assert [x for x in range(98, 108) if snapshot.sees(x)] == [98, 99, 100, 102, 104]


def test_capacity_is_the_sum_of_the_live_workers_slots() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:"), now=0.0)
    assert fleet.capacity == 5


def test_notices_the_read_already_counted_are_not_counted_again() -> None:
    fleet = view()
    fleet.notice(inserted(8, seq=1), now=0.0)  # before the read: the read counts it too
    fleet.reconcile(state("10:12:11", queued=1), now=0.0)
    assert fleet.queued == 1
    fleet.notice(inserted(9, seq=2), now=0.0)  # committed before the read, arrives after
    assert fleet.queued == 1
    fleet.notice(inserted(11, seq=3, count=2), now=0.0)  # in progress during the read
    fleet.notice(inserted(12, seq=5), now=0.0)  # after it
    assert fleet.queued == 4
    assert fleet.queued_by_priority()[Priority.STANDARD] == 4


def test_starts_move_orders_from_the_queue_to_the_timetable_and_ends_free_them() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=2), now=100.0)
    fleet.notice(started(10, seq=1), now=100.0)
    fleet.notice(started(11, seq=2, step_index=3), now=101.0)
    assert (fleet.queued, fleet.in_flight) == (0, 2)
    # A whole order plans the mean; one three steps in, what its steps left take.
    remaining = sorted(fleet.dispatcher.remaining_s(101.0))
    assert remaining[1] == 5.0
    assert 0 < remaining[0] < 5.0
    applied = fleet.notice(ended(12, seq=1), now=102.0)
    assert applied.ended_customers == ["alice"]
    assert fleet.in_flight == 1


def test_a_reconcile_keeps_known_ends_and_drops_orders_no_longer_in_flight() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", processing=(1, 2)), now=100.0)
    ends = dict(fleet.dispatcher.running)
    fleet.reconcile(state("20:20:", processing=(2, 3)), now=103.0)
    assert set(fleet.dispatcher.running) == {2, 3}
    assert fleet.dispatcher.running[2] is ends[2]
    assert fleet.drift == 2  # one ended and one started without a notice


def test_a_notice_too_large_to_send_asks_for_a_read() -> None:
    fleet = view()
    assert fleet.notice({"k": "r"}, now=0.0).reread


def own_inserted(xid: int, count: int = 1, rank: int = 1) -> dict[str, Any]:
    """What this process knows of its own batch when the store has committed it."""
    return {"k": "i", "x": xid, "q": [[rank, count]]}


def test_a_commit_of_this_process_counts_at_once_and_its_notice_not_again() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=1), now=0.0)
    assert fleet.own(own_inserted(12, count=3), now=0.0)
    assert fleet.queued == 4
    fleet.notice(inserted(11, seq=5), now=0.0)  # another process's
    assert fleet.queued == 5
    assert not fleet.notice(inserted(12, seq=2, count=3), now=0.0).counted
    assert fleet.queued == 5
    assert not fleet.own(own_inserted(12, count=3), now=0.0)  # told twice: once
    assert fleet.queued == 5


def test_a_notice_that_comes_before_its_commit_is_reported_counts_once() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:"), now=0.0)
    assert fleet.notice(inserted(12, seq=1, count=2), now=0.0).counted
    assert not fleet.own(own_inserted(12, count=2), now=0.0)
    assert fleet.queued == 2


def test_a_read_taken_before_a_commit_and_adopted_after_it_keeps_the_commit() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:"), now=0.0)
    fleet.reading()
    # While the read is under way: this process commits, another one's notice arrives.
    fleet.own(own_inserted(14, count=2), now=0.0)
    fleet.notice(inserted(15, seq=9), now=0.0)
    fleet.notice(inserted(11, seq=3), now=0.0)  # committed before the read: it counts it
    fleet.reconcile(state("12:12:", queued=1), now=0.0)
    assert fleet.queued == 4
    assert fleet.drift == 0
    # This process's notice, late: counted once already.
    assert not fleet.notice(inserted(14, seq=7, count=2), now=0.0).counted
    assert fleet.queued == 4
    # The next read sees all of it: nothing applied again, nothing lost.
    fleet.reading()
    fleet.reconcile(state("20:20:", queued=4), now=0.0)
    assert (fleet.queued, fleet.drift) == (4, 0)


def test_a_notice_applied_between_a_read_and_its_adoption_is_not_dropped() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=2), now=0.0)
    fleet.reading()
    fleet.notice(started(13, seq=1), now=0.0)  # committed after the read's snapshot
    fleet.reconcile(state("12:12:", queued=2), now=0.0)
    assert (fleet.queued, fleet.in_flight) == (1, 1)


def test_a_commit_whose_inserts_took_several_statements_counts_the_rest_of_them() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:"), now=0.0)
    fleet.notice(inserted(12, seq=1, count=71), now=0.0)  # one statement's notice came
    assert fleet.own(own_inserted(12, count=100), now=0.0)  # the batch: 29 more
    assert fleet.queued == 100
    assert not fleet.notice(inserted(12, seq=72, count=29), now=0.0).counted
    assert fleet.queued == 100


def own_claimed(xid: int, *seqs: int, rank: int = 1) -> dict[str, Any]:
    """What this process knows of its own claim when the store has committed it."""
    return {"k": "u", "x": xid, "s": [[seq, rank, "full", 0, "w1"] for seq in seqs]}


def own_ended(xid: int, *seqs: int) -> dict[str, Any]:
    return {"k": "u", "x": xid, "e": [[seq, "alice"] for seq in seqs]}


def cancelled(xid: int, seq: int, rank: int = 1) -> dict[str, Any]:
    return {"k": "u", "x": str(xid), "l": [[seq, rank, "alice"]], "t": 1.0}


def test_a_claim_of_this_process_starts_its_orders_at_once_and_its_notice_not_again() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=3), now=100.0)
    assert fleet.own(own_claimed(12, 1, 2), now=100.0)
    assert (fleet.queued, fleet.in_flight) == (1, 2)
    assert set(fleet.dispatcher.running) == {1, 2}
    late = {**started(12, seq=1), "s": [[1, 1, "full", 0, "w1"], [2, 1, "full", 0, "w1"]]}
    assert not fleet.notice(late, now=101.0).counted
    assert (fleet.queued, fleet.in_flight) == (1, 2)
    assert fleet.own(own_claimed(12, 1, 2), now=101.0) is None  # told twice: once
    assert (fleet.queued, fleet.in_flight) == (1, 2)


def test_a_claim_whose_notice_came_first_changes_nothing_when_reported() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=2), now=100.0)
    assert fleet.notice(started(12, seq=1), now=100.0).counted
    assert fleet.own(own_claimed(12, 1), now=100.0) is None
    assert (fleet.queued, fleet.in_flight) == (1, 1)


def test_ends_of_this_process_free_their_slots_at_once_once_each() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", processing=(1, 2, 3)), now=100.0)
    # A batch of three endings: PostgreSQL sends one notice per row of the statement; one
    # came before the store answered, the others after.
    assert fleet.notice(ended(12, seq=1), now=100.0).counted
    applied = fleet.own(own_ended(12, 1, 2, 3), now=100.0)
    assert applied is not None and applied.ended_customers == ["alice", "alice"]
    assert fleet.in_flight == 0
    assert not fleet.notice(ended(12, seq=2), now=100.0).counted
    assert not fleet.notice(ended(12, seq=3), now=100.0).counted
    assert fleet.in_flight == 0


def test_a_cancel_of_this_process_frees_its_place_at_once_whenever_its_notice_comes() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=3), now=0.0)
    own_cancel = {**cancelled(12, seq=2), "x": 12}
    assert fleet.own(own_cancel, now=0.0)
    assert fleet.queued == 2
    assert not fleet.notice(cancelled(12, seq=2), now=0.0).counted
    assert fleet.queued == 2
    # The other way round: the notice first, then the store's answer.
    assert fleet.notice(cancelled(13, seq=3), now=0.0).counted
    assert fleet.own({**cancelled(13, seq=3), "x": 13}, now=0.0) is None
    assert fleet.queued == 1


def test_a_claim_counted_at_once_survives_a_read_taken_before_it_and_is_not_doubled() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=2), now=0.0)
    fleet.reading()
    fleet.own(own_claimed(14, 1), now=0.0)  # commits while the read is under way
    fleet.reconcile(state("12:12:", queued=2), now=0.0)  # its snapshot was taken before
    assert (fleet.queued, fleet.in_flight, fleet.drift) == (1, 1, 0)
    assert not fleet.notice(started(14, seq=1), now=0.0).counted  # late: skipped
    fleet.reading()
    fleet.reconcile(state("20:20:", queued=1, processing=(1,)), now=0.0)  # sees it
    assert (fleet.queued, fleet.in_flight, fleet.drift) == (1, 1, 0)
    assert not fleet.notice(started(14, seq=1), now=0.0).counted


def test_an_order_claimed_here_before_its_insert_notice_came_counts_once_in_between() -> None:
    """Another process stored it, this one claimed it: the claim is known here before the
    insert's notice (notices come in commit order, the store's answer does not wait)."""
    fleet = view()
    fleet.reconcile(state("10:10:"), now=0.0)
    fleet.own(own_claimed(13, 1), now=0.0)
    assert (fleet.queued, fleet.in_flight) == (0, 1)
    assert fleet.queued_by_priority()[Priority.STANDARD] == 0
    fleet.notice(inserted(12, seq=1), now=0.0)  # the insert, late
    assert (fleet.queued, fleet.in_flight) == (0, 1)
    fleet.notice(inserted(15, seq=2), now=0.0)
    assert fleet.queued == 1


def test_an_order_ending_and_another_starting_between_two_reads_move_the_timetable() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=1, processing=(1, 2)), now=100.0)
    assert fleet.dispatcher.remaining_s(100.0) == (6.0, 6.0)
    fleet.notice(ended(11, seq=1), now=103.0)
    fleet.notice(started(12, seq=3), now=103.0)
    # The ended order's plan no longer counts; the started one's does (as many in flight).
    assert fleet.dispatcher.remaining_s(104.0) == (2.0, 5.0)
    fleet.reconcile(state("20:20:", processing=(2, 4)), now=105.0)
    assert fleet.dispatcher.remaining_s(105.0) == (1.0, 6.0)


def test_the_hand_off_is_learned_from_slots_freed_while_orders_wait_and_the_next_start() -> None:
    fleet = view()
    fleet.reconcile(state("10:10:", queued=3, processing=(1, 2)), now=100.0)
    assert fleet.handoff_s == 0.0
    fleet.notice(ended(11, seq=1), now=106.1)  # planned to end at 106
    fleet.notice(started(12, seq=3), now=106.3)  # the slot taken, seen 0.3 s after it freed
    assert fleet.handoff_s == pytest.approx(0.3)
    fleet.notice(ended(13, seq=2), now=105.0)  # before its plan: freed then
    fleet.notice(started(14, seq=4), now=105.1)
    assert 0.1 < fleet.handoff_s < 0.3  # a moving average
    # With nobody waiting a slot stays free: the start that comes later is no hand-off.
    learned = fleet.handoff_s
    fleet.notice({"k": "u", "x": "15", "l": [[5, 1, "bob"]], "t": 1.0}, now=105.2)
    assert fleet.queued == 0
    fleet.notice(ended(16, seq=3), now=112.0)
    fleet.notice(inserted(17, seq=6), now=115.0)
    fleet.notice(started(18, seq=6), now=115.1)
    assert fleet.handoff_s == learned
