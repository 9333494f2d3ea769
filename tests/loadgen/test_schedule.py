"""Due times and the pacer, in virtual time: orders go out exactly when they are due."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from retail.loadgen.pacer import pace
from retail.loadgen.schedule import Arrivals, Schedule, due_times, parse_schedule


class VirtualTimer:
    """Virtual time: a sleep moves the clock forward by what was asked, plus `oversleep_s`."""

    def __init__(self, oversleep_s: float = 0.0, stall_at: float | None = None) -> None:
        self.t = 0.0
        self.oversleep_s = oversleep_s
        self.stall_at = stall_at

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds) + self.oversleep_s
        if self.stall_at is not None and self.t >= self.stall_at:
            self.t += 1.0  # the process was descheduled for a second
            self.stall_at = None
        await asyncio.sleep(0)


async def sent_at(dues: list[float], timer: VirtualTimer) -> list[tuple[int, float, float]]:
    """(index, virtual time the pacer handed the order over, lag it reported)."""
    sent: list[tuple[int, float, float]] = []
    await pace(
        dues, timer=timer, start=timer.now(), send=lambda i, lag: sent.append((i, timer.now(), lag))
    )
    return sent


async def test_fixed_rate_orders_go_out_evenly_spaced_from_zero() -> None:
    dues = due_times(Schedule.constant(10, 2))
    assert dues == pytest.approx([k / 10 for k in range(20)])
    sent = await sent_at(dues, VirtualTimer())
    assert [i for i, _, _ in sent] == list(range(20))
    assert [t for _, t, _ in sent] == pytest.approx(dues)
    assert all(lag == 0 for _, _, lag in sent)


async def test_poisson_arrivals_are_repeatable_with_a_seed_and_keep_the_mean_rate() -> None:
    schedule = Schedule.constant(100, 10)
    first = due_times(schedule, Arrivals.POISSON, seed=7)
    assert first == due_times(schedule, Arrivals.POISSON, seed=7)
    assert first != due_times(schedule, Arrivals.POISSON, seed=8)
    # 1000 expected, standard deviation about 32
    assert 870 <= len(first) <= 1130
    assert first == sorted(first)
    assert first[0] > 0 and first[-1] < 10
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert len({round(g, 9) for g in gaps}) > len(gaps) * 0.9  # irregular, unlike fixed
    # exponential gaps: their standard deviation is about their mean
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert mean == pytest.approx(0.01, rel=0.15)
    assert sd == pytest.approx(mean, rel=0.2)
    sent = await sent_at(first, VirtualTimer())
    assert [t for _, t, _ in sent] == pytest.approx(first)


async def test_step_schedule_changes_rate_at_the_step() -> None:
    dues = due_times(parse_schedule("step:10@5,20@5"))
    before = [t for t in dues if t < 5]
    after = [t for t in dues if t >= 5]
    assert len(before) == 50 and len(after) == 100
    assert after[0] == pytest.approx(5.0)
    assert [b - a for a, b in itertools.pairwise(before)] == pytest.approx([0.1] * 49)
    assert [b - a for a, b in itertools.pairwise(after)] == pytest.approx([0.05] * 99)
    sent = await sent_at(dues, VirtualTimer())
    assert [t for _, t, _ in sent] == pytest.approx(dues)


async def test_ramp_schedule_takes_its_length_from_duration() -> None:
    schedule = parse_schedule("ramp:0..20", default_duration_s=10)
    # rate 2t: Λ(t) = t², so order k is due at √k
    dues = due_times(schedule)
    assert len(dues) == 100
    assert dues == pytest.approx([math.sqrt(k) for k in range(100)])
    sent = await sent_at(dues, VirtualTimer())
    assert [t for _, t, _ in sent] == pytest.approx(dues)


def test_ramp_down_and_mixed_segments() -> None:
    down = due_times(parse_schedule("40..0@10"))
    assert len(down) == 200
    gaps = [b - a for a, b in itertools.pairwise(down)]
    assert gaps == sorted(gaps)  # the rate falls, so gaps grow
    mixed = parse_schedule("2@5,2..20@10,20@5")
    assert mixed.expected_orders == pytest.approx(10 + 110 + 100)
    assert mixed.duration_s == 20
    assert len(due_times(mixed)) == 220
    assert mixed.describe() == "2@5,2..20@10,20@5"


def test_max_orders_bounds_the_run() -> None:
    assert len(due_times(Schedule.constant(1000, 60), max_orders=25)) == 25
    assert (
        len(due_times(Schedule.constant(1000, 60), Arrivals.POISSON, seed=1, max_orders=25)) == 25
    )


async def test_a_late_pacer_reports_its_lag_and_does_not_drift() -> None:
    dues = due_times(Schedule.constant(10, 1))
    sent = await sent_at(dues, VirtualTimer(oversleep_s=0.03))
    # each send is 30 ms late, and the lateness does not pile up
    assert [lag for _, _, lag in sent[1:]] == pytest.approx([0.03] * 9)
    assert [t for _, t, _ in sent[1:]] == pytest.approx([d + 0.03 for d in dues[1:]])


async def test_after_a_stall_overdue_orders_all_go_out_at_once() -> None:
    dues = due_times(Schedule.constant(10, 2))
    sent = await sent_at(dues, VirtualTimer(stall_at=0.5))
    assert [i for i, _, _ in sent] == list(range(20))  # none skipped
    burst = [(i, t) for i, t, lag in sent if lag > 0]
    # due at 0.5 .. 1.4: all sent together when the process woke at 1.5
    assert [i for i, _ in burst] == list(range(5, 15))
    assert {round(t, 9) for _, t in burst} == {1.5}
    assert [t for i, t, _ in sent if i >= 15] == pytest.approx(dues[15:])


@pytest.mark.parametrize(
    "text",
    ["", "step:", "10", "10@5,20", "10@0", "5..@3", "fast@5", "10@5,,20@5", "-5@3"],
)
def test_invalid_schedules_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"schedule|segment|duration"):
        parse_schedule(text)


def test_only_the_last_segment_may_fill_the_duration() -> None:
    assert parse_schedule("10@5,20", default_duration_s=8).segments[-1].duration_s == 3
    with pytest.raises(ValueError, match="leaves nothing"):
        parse_schedule("10@5,20", default_duration_s=5)
    with pytest.raises(ValueError, match="needs @SECONDS"):
        parse_schedule("10,20@5", default_duration_s=10)
