"""The simulator against exact results of queueing theory, on fixed seeds.

Every check drives the service's own policy objects (`retail.sim.engine`). The mean wait
of a queue at high load converges slowly (the waits of neighbouring orders are strongly
correlated), so each check allows the larger of its stated bound and three standard
errors of the simulated mean, estimated from the run itself by batch means. At 30,000
orders three standard errors are 9-35 % of the mean wait (M/M/1 at 0.5 the least, M/M/8
at 0.9 the most); holding every case to 2 % would take 0.7-9 million orders each, some
45 million in all: minutes of CPU, not the seconds a test may take.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest

from retail.config import Settings
from retail.core.types import OverloadMode
from retail.loadgen.schedule import Arrivals, Schedule
from retail.sim import theory
from retail.sim.engine import SimConfig, SimRun, simulate
from retail.sim.planner import Targets, make_plan
from retail.sim.report import summarize

# One exponential draw per order: all of its time on one step (the others take 0 s).
EXPONENTIAL = {"fulfilment_delay": "0", "step_delays": {"pick": "exponential:1"}}
UNBOUNDED = 10**9


def config(
    *,
    rate: float,
    orders: int,
    seed: int = 1,
    arrivals: Arrivals = Arrivals.POISSON,
    **settings: object,
) -> SimConfig:
    values = Settings(_env_file=None, **settings)  # type: ignore[arg-type]
    return SimConfig(
        limits=values.limits(),
        pipeline=values.pipeline(),
        schedule=Schedule.constant(rate, (orders + 10 * math.sqrt(orders) + 10) / rate),
        arrivals=arrivals,
        seed=seed,
        max_orders=orders,
    )


def mean_and_error(run: SimRun, batches: int = 20) -> tuple[float, float]:
    """The mean wait and its standard error by batch means (waits in start order)."""
    waits = list(run.waits)
    size = len(waits) // batches
    means = [statistics.fmean(waits[i * size : (i + 1) * size]) for i in range(batches)]
    return statistics.fmean(waits), statistics.stdev(means) / math.sqrt(batches)


@pytest.mark.parametrize("servers", [1, 4, 8])
@pytest.mark.parametrize("utilisation", [0.5, 0.8, 0.9])
def test_queue_mode_waits_as_erlang_c_says(servers: int, utilisation: float) -> None:
    rate = utilisation * servers
    run = simulate(
        config(rate=rate, orders=30_000, capacity=servers, queue_limit=UNBOUNDED, **EXPONENTIAL)
    )
    assert run.refused == 0
    assert run.fulfilled == 30_000
    mean, error = mean_and_error(run)
    expected = theory.mmc_mean_wait_s(servers, rate, 1.0)
    assert abs(mean - expected) <= max(0.02 * expected, 3 * error), (mean, expected, error)
    # The share that waits at all: Erlang C itself.
    waited = sum(1 for w in run.waits if w > 0) / len(run.waits)
    assert waited == pytest.approx(theory.erlang_c(servers, rate), abs=0.03)


@pytest.mark.parametrize("servers", [1, 4, 8])
@pytest.mark.parametrize("load", [1.0, 2.0])
def test_reject_mode_refuses_as_erlang_b_says(servers: int, load: float) -> None:
    erlangs = load * servers
    run = simulate(
        config(rate=erlangs, orders=20_000, capacity=servers, overload_mode="reject", **EXPONENTIAL)
    )
    share = run.refused / run.orders
    assert share == pytest.approx(theory.erlang_b(servers, erlangs), abs=0.01)
    assert max(run.waits) == 0.0  # a loss system: nobody waits


def test_reject_mode_refusals_do_not_depend_on_the_delay_model() -> None:
    # Erlang B is insensitive: fixed delays split over six steps refuse the same share.
    run = simulate(config(rate=8.0, orders=20_000, capacity=4, overload_mode="reject"))
    assert run.refused / run.orders == pytest.approx(theory.erlang_b(4, 8.0 * 2.0), abs=0.01)


def test_one_slot_with_fixed_delays_waits_as_pollaczek_khinchine_says() -> None:
    rate = 0.8
    run = simulate(
        config(rate=rate, orders=40_000, capacity=1, queue_limit=UNBOUNDED, fulfilment_delay="1")
    )
    mean, error = mean_and_error(run)
    expected = theory.pk_mean_wait_s(rate, 1.0, 1.0)
    assert expected == pytest.approx(2.0)
    assert abs(mean - expected) <= max(0.02 * expected, 3 * error), (mean, expected, error)


def test_a_run_repeats_exactly_for_the_same_seed() -> None:
    settings = {
        "capacity": 3,
        "overload_mode": "degrade",
        "queue_limit": 20,
        "fulfilment_delay": "lognormal:1,0.6",
        "payment_decline_probability": 0.1,
    }

    def run(seed: int) -> dict[str, object]:
        retrying = replace(config(rate=12.0, orders=3_000, seed=seed, **settings), retries=2)
        return summarize(simulate(retrying))

    first, again, other = run(7), run(7), run(8)
    for summary in (first, again, other):
        summary.pop("wall_seconds")
    assert first == again
    assert first != other
    assert first["degraded"] > 0 and first["failed"] > 0 and first["refused"] > 0
    assert first["attempts"] > first["orders"]  # refused orders came back


def test_plan_picks_the_capacity_erlang_c_gives() -> None:
    rate, target = 10.0, 1.5
    expected = next(
        c for c in range(11, 40) if theory.mmc_wait_quantile_s(c, rate, 1.0, 0.99) <= target
    )
    assert expected == 13
    pipeline = Settings(_env_file=None, **EXPONENTIAL).pipeline()  # type: ignore[arg-type]
    plan = make_plan(
        mode=OverloadMode.QUEUE,
        pipeline=pipeline,
        rate=rate,
        targets=Targets(p99_wait_s=target, max_refused=0.01),
        orders=20_000,
    )
    assert plan.exact_theory
    assert plan.first_guess == expected
    assert plan.recommended.capacity == expected
    assert plan.recommended.meets
    assert [row.capacity for row in plan.rows] == [12, 13, 14, 15]
    below = plan.rows[0]
    assert not below.meets and below.p99_wait_s > target
    # The queue limit keeps refusals within the target at that capacity.
    assert 0 < plan.recommended.queue_limit < UNBOUNDED
    assert plan.recommended.refused_share <= 0.01


def test_plan_in_reject_mode_follows_erlang_b() -> None:
    pipeline = Settings(_env_file=None, fulfilment_delay="2").pipeline()  # type: ignore[call-arg]
    plan = make_plan(
        mode=OverloadMode.REJECT,
        pipeline=pipeline,
        rate=5.0,
        targets=Targets(p99_wait_s=1.0, max_refused=0.05),
        orders=20_000,
    )
    expected = next(c for c in range(1, 50) if theory.erlang_b(c, 10.0) <= 0.05)
    assert plan.first_guess == expected
    assert plan.recommended.capacity == expected
    assert plan.recommended.refused_share <= 0.05
