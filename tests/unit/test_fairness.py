"""Fair shares between customers: the pure policy, and admission's places per customer."""

from __future__ import annotations

import random

import pytest

from retail.core import capacity
from retail.core.admission import Admission
from retail.core.errors import CapacityExceeded, OverFairShare
from retail.core.fairness import FairLimits, FairShare, fair_share, within_share
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode


def test_within_share_is_max_min_water_filling() -> None:
    # Four places; a competitor that wants one leaves three to the other.
    assert within_share(2, [1], places=4)  # a third place: 3 + 1 <= 4
    assert not within_share(3, [1], places=4)  # a fourth would leave the other none
    # Two competitors that want a lot: equal shares of six.
    assert within_share(1, [5, 5], places=6)
    assert not within_share(2, [5, 5], places=6)
    # Places a competitor does not want go to those that do.
    assert within_share(4, [1, 1], places=7)
    assert not within_share(5, [1, 1], places=7)
    # A place nobody else wants goes to the first that asks: one past an equal share.
    assert within_share(1, [2], places=3)
    assert not within_share(2, [2], places=3)
    assert within_share(0, [9, 9, 9], places=1)  # holding nothing is never over a share


def test_fair_share_counts_whole_places() -> None:
    assert fair_share([1], places=4) == 3
    assert fair_share([5, 5], places=6) == 2
    assert fair_share([1, 1], places=7) == 5
    assert fair_share([2], places=3) == 2
    assert fair_share([9, 9, 9, 9], places=4) == 1  # one place is always within a share


def test_a_customer_alone_is_never_over_its_share() -> None:
    fair = FairShare()
    for _ in range(100):
        assert fair.check("solo", now=0.0, places=4) is None
        fair.took("solo")
    assert fair.held == {"solo": 100}


def test_a_flooder_stops_short_of_the_last_place_while_another_customer_is_active() -> None:
    outcomes: list[str] = []
    fair = FairShare(on_outcome=outcomes.append)
    assert fair.check("small", now=0.0, places=4) is None  # seen: it competes for a while
    for _ in range(3):
        assert fair.check("flood", now=1.0, places=4) is None
        fair.took("flood")
    over = fair.check("flood", now=1.0, places=4)
    assert over is not None
    assert (over.held, over.share, over.places, over.competing) == (3, 3, 4, 2)
    assert "holds 3 of 4 places while 2 customers compete" in over.reason
    assert outcomes == ["alone", "within_share", "within_share", "within_share", "over_share"]
    assert fair.top_refused() == [1]
    # The small customer holds nothing: never over its share.
    assert fair.check("small", now=2.0, places=4) is None


def test_a_customer_stops_competing_after_the_window() -> None:
    fair = FairShare(FairLimits(window_s=5.0))
    fair.check("small", now=0.0, places=2)
    fair.took("flood")
    assert fair.check("flood", now=1.0, places=2) is not None  # 2 + 1 > 2
    assert fair.competing(now=1.0) == 2
    assert fair.check("flood", now=6.0, places=2) is None  # small forgotten: flood alone
    assert fair.competing(now=6.0) == 1
    assert fair.top_refused() == [1]
    assert fair.competing(now=100.0) == 1  # flood still holds its place
    assert fair.top_refused() == []  # refusals of forgotten customers go with them


def test_only_the_most_recent_customers_are_remembered() -> None:
    fair = FairShare(FairLimits(max_customers=3))
    for index in range(10):
        fair.check(f"c{index}", now=float(index), places=100)
    assert fair.competing(now=10.0) == 3


def test_places_are_taken_settled_given_back_and_rebuilt() -> None:
    fair = FairShare()
    fair.took("a")
    fair.took("a")
    fair.took("b")
    fair.settled("a", kept=True)
    fair.settled("b", kept=False)  # not stored: its place is free at once
    assert fair.held == {"a": 2}
    # The store counts stored orders; the one not yet stored is added.
    fair.rebuild({"a": 5, "c": 1})
    assert fair.held == {"a": 6, "c": 1}
    before = fair.changes
    fair.gave_back("c")
    fair.rebuild({"a": 9, "c": 1}, read_at_change=before)  # stale: dropped
    assert fair.held == {"a": 6}
    fair.gave_back("a")
    fair.gave_back("zzz")  # never below zero
    assert fair.held == {"a": 5}


def admission(mode: OverloadMode = OverloadMode.REJECT, capacity_: int = 4) -> Admission:
    return Admission(
        capacity.Limits(mode=mode, capacity=capacity_, queue_limit=2),
        Pipeline.build(fulfilment_delay="1"),
        fairness=FairShare(),
    )


def test_admission_refuses_an_over_share_customer_with_429_and_a_full_service_with_503() -> None:
    gate = admission()
    gate.admit(0.0, "small").release()  # small asked: it competes
    tickets = [gate.admit(0.0, "flood") for _ in range(3)]
    for ticket in tickets:
        ticket.keep()
    with pytest.raises(OverFairShare) as over:
        gate.admit(0.0, "flood")
    assert over.value.status == 429
    assert over.value.retry_after_s == 1
    assert over.value.extra["fair_share"] == 3
    small = gate.admit(0.0, "small")  # within its share: the last place is its
    small.keep()
    with pytest.raises(CapacityExceeded) as full:
        gate.admit(0.0, "small")  # within its share, but every place is taken
    assert full.value.status == 503
    assert gate.fairness is not None
    assert gate.fairness.held == {"flood": 3, "small": 1}
    gate.order_ended("flood")
    gate.left_queue()
    assert gate.fairness.held == {"flood": 2, "small": 1}


def test_every_ticket_path_gives_the_customers_place_back_once() -> None:
    gate = admission(OverloadMode.QUEUE)
    fair = gate.fairness
    assert fair is not None
    kept, released, withdrawn = (gate.admit(0.0, "a") for _ in range(3))
    kept.keep()
    released.release()
    withdrawn.withdraw()
    for ticket in (kept, released, withdrawn):  # settled already: nothing more happens
        ticket.keep()
        ticket.release()
        ticket.withdraw()
    assert fair.held == {"a": 1}
    assert not fair.unsettled
    gate.order_ended("a")
    assert fair.held == {}


def test_without_a_customer_or_fairness_admission_is_unchanged() -> None:
    gate = Admission(
        capacity.Limits(mode=OverloadMode.REJECT, capacity=1, queue_limit=0),
        Pipeline.build(fulfilment_delay="1"),
    )
    gate.admit(0.0, "a").keep()
    with pytest.raises(CapacityExceeded) as full:
        gate.admit(0.0, "b")
    assert full.value.status == 503
    gate.order_ended("a")  # no shares kept: nothing to do


def test_the_quick_answer_is_the_water_filled_one() -> None:
    # Random customers take, settle, give back and ask, with few and with many places:
    # every check's outcome is the one water-filling every competitor's wants gives.
    rng = random.Random(7)
    for places in (3, 8, 40):
        fair = FairShare(FairLimits(window_s=5.0, max_customers=6))
        now = 0.0
        for _ in range(3000):
            now += rng.random()
            customer = f"c{rng.randrange(9)}"
            if rng.random() < 0.3 and fair.held.get(customer):
                fair.gave_back(customer)
                continue
            held = fair.held.get(customer, 0)
            over = fair.check(customer, now, places)
            others = fair.competitors(customer, now)  # as the check saw them
            fits = not others or held == 0 or within_share(held, others.values(), places)
            assert (over is None) == fits
            if over is None:
                fair.took(customer)
                fair.settled(customer, kept=True)
            assert sum(fair.held.values()) == fair._total_held


def test_a_place_is_free_once_its_order_is_past_its_planned_end() -> None:
    # Two customers hold every slot until t=1 (1 s orders). Past their planned end, the
    # orders are only recording their end: admission counts their slots as free, and
    # their places are free too, so the next orders of both are admitted at once, not
    # refused as over their share until the ends are written.
    gate = admission(capacity_=4)
    for customer in ("a", "a", "b", "b"):
        ticket = gate.admit(0.0, customer)
        ticket.keep()
        gate.left_queue()
        gate.dispatcher.start(object(), now=0.0, planned_s=1.0, customer=customer)
    with pytest.raises(OverFairShare):  # before the planned end: a holds its share
        gate.admit(0.5, "a")
    for customer in ("a", "b", "a", "b"):
        assert isinstance(gate.admit(1.0, customer).decision, capacity.Admit)
    with pytest.raises(OverFairShare):  # a's share of the places is 2, taken again
        gate.admit(1.0, "a")
