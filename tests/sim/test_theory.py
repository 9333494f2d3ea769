"""The simulator against exact results of queueing theory, on fixed seeds.

Every check drives the service's own policy objects (`retail.sim.engine`), in three layers:

1. The mechanics, exactly. An independent first-come-first-served recursion on `c` slots
   (`fcfs_waits`: the Kiefer-Wolfowitz workload vector, Lindley's recursion for one slot)
   is fed the arrival times and the service times the simulator drew (`SimRun.accepted_at`,
   `SimRun.services`); every order's wait must equal the simulator's to float precision.
   In reject mode a loss-system recursion must accept and refuse exactly the same orders.
   This catches any fault of the policy (start order, slot count, who is refused) at once.
2. The draws. The mean inter-arrival time, the first two moments of the service time
   and the correlation of successive service times are within four standard errors of
   what the settings ask (a standard error of a mean is about 0.3 % at 100,000 orders):
   wrong delay rates or shapes fail here.
3. The mean wait against Erlang C or Pollaczek-Khinchine within 2 %, by control
   variates. The raw mean wait of a queue at high load converges slowly (neighbouring
   waits are strongly correlated): three standard errors are 4-27 % of the mean even at
   100,000 orders. The same recursion, fed the same arrivals with every service time
   scaled by 1 - d and by 1 + d (d = 1 %), gives two neighbouring queues whose mean waits
   theory also knows exactly and whose slow fluctuations are nearly those of the
   simulated queue. The estimator

       W = mean(w_sim) - 1/2 (mean(w_-) - E[w_-]) - 1/2 (mean(w_+) - E[w_+])

   is unbiased for the simulated queue's mean wait whatever d (up to the start from an
   empty queue, which the neighbours share), and three of its standard errors (batch
   means over the run) are 0.01-2 % of the mean at 100,000 orders (the most at
   utilisation 0.9), which the test asserts too. It leans on theory only through the
   neighbours' means, and on the simulator through `w_sim` with weight one: waits off by
   some share move it by that share. (Why the draws are checked separately: a wrong rate
   shifts the neighbours with the simulated queue, which the estimator would largely
   absorb.) The raw mean is still checked against the larger of 2 % and three standard
   errors.
"""

from __future__ import annotations

import math
import statistics
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from retail.config import Settings
from retail.core.types import OverloadMode
from retail.loadgen.schedule import Arrivals, Schedule
from retail.sim import theory
from retail.sim.engine import SimConfig, SimRun, arrival_times, simulate
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


ORDERS = 100_000
NEIGHBOUR = 0.01  # the control queues' service times are scaled by 1 -/+ this


def fcfs_waits(arrivals: Sequence[float], services: Sequence[float], servers: int) -> list[float]:
    """Each order's wait in a first-come-first-served queue on `servers` slots.

    The Kiefer-Wolfowitz recursion: `work` holds, in increasing order, the work each slot
    has left when an order arrives; the order waits for the least, which grows by its
    service time, and everything drains by the time to the next arrival.
    """
    work = [0.0] * servers
    waits: list[float] = []
    previous = arrivals[0] if arrivals else 0.0
    for arrival, service in zip(arrivals, services, strict=True):
        gap = arrival - previous
        previous = arrival
        if gap:
            work = [w - gap if w > gap else 0.0 for w in work]
        wait = work.pop(0)
        waits.append(wait)
        insort(work, wait + service)
    return waits


def batch_means(values: Sequence[float], batches: int = 20) -> list[float]:
    size = len(values) // batches
    return [statistics.fmean(values[i * size : (i + 1) * size]) for i in range(batches)]


def mean_and_error(values: Sequence[float], batches: int = 20) -> tuple[float, float]:
    """The mean and its standard error by batch means (values in start order)."""
    means = batch_means(values, batches)
    return statistics.fmean(values), statistics.stdev(means) / math.sqrt(batches)


def queue_run(servers: int, utilisation: float, delay: str) -> SimRun:
    """A queue-mode run with an unbounded queue; `delay` is "exponential" or "fixed"."""
    delays = EXPONENTIAL if delay == "exponential" else {"fulfilment_delay": "1"}
    settings = {"capacity": servers, "queue_limit": UNBOUNDED, **delays}
    return simulate(config(rate=utilisation * servers, orders=ORDERS, **settings))


def check_mechanics(run: SimRun, servers: int) -> None:
    """The simulator's waits are those of the FCFS recursion on its own draws."""
    arrivals, _ = arrival_times(run.config)
    assert run.refused == 0
    assert list(run.accepted_at) == arrivals  # every order admitted when it was due
    assert len(run.services) == len(run.waits) == len(arrivals)
    # Orders start in the order they arrived (FCFS): the k-th start is the k-th arrival.
    started = [s - w for s, w in zip(run.starts, run.waits, strict=True)]
    assert max(abs(a - b) for a, b in zip(started, arrivals, strict=True)) < 1e-9
    expected = fcfs_waits(arrivals, run.services, servers)
    assert max(abs(a - b) for a, b in zip(expected, run.waits, strict=True)) < 1e-9


def check_draws(run: SimRun, rate: float, mean_s: float, second_moment_s2: float) -> None:
    """Inter-arrival times and service times have the moments the settings ask for."""
    n = len(run.services)
    gaps = (run.accepted_at[-1] - run.accepted_at[0]) / (n - 1)  # exponential: sd = mean
    assert abs(gaps - 1 / rate) <= 4 * (1 / rate) / math.sqrt(n - 1), (gaps, 1 / rate)
    mean = statistics.fmean(run.services)
    squares = [s * s for s in run.services]
    spread = statistics.stdev(run.services)
    assert abs(mean - mean_s) <= max(4 * spread / math.sqrt(n), 1e-9), (mean, mean_s)
    second = statistics.fmean(squares)
    spread2 = statistics.stdev(squares)
    assert abs(second - second_moment_s2) <= max(4 * spread2 / math.sqrt(n), 1e-9), second
    if spread > 0:  # one draw does not lean on the one before
        lag1 = statistics.correlation(run.services[:-1], run.services[1:])
        assert abs(lag1) <= 4 / math.sqrt(n), lag1


def controlled_mean_wait(
    run: SimRun, servers: int, theory_wait: Callable[[float], float]
) -> tuple[float, float]:
    """The control-variate estimate of the mean wait and its standard error (module doc).

    `theory_wait(scale)` is the exact mean wait of the queue whose service times are
    `scale` times the simulated ones.
    """
    arrivals = run.accepted_at
    values = list(run.waits)
    for scale in (1 - NEIGHBOUR, 1 + NEIGHBOUR):
        control = fcfs_waits(arrivals, [s * scale for s in run.services], servers)
        known = theory_wait(scale)
        values = [v - (c - known) / 2 for v, c in zip(values, control, strict=True)]
    return mean_and_error(values)


@pytest.mark.parametrize("servers", [1, 4, 8])
@pytest.mark.parametrize("utilisation", [0.5, 0.8, 0.9])
def test_queue_mode_waits_as_erlang_c_says(servers: int, utilisation: float) -> None:
    rate = utilisation * servers
    run = queue_run(servers, utilisation, "exponential")
    assert run.fulfilled == ORDERS
    check_mechanics(run, servers)
    check_draws(run, rate, 1.0, 2.0)
    expected = theory.mmc_mean_wait_s(servers, rate, 1.0)
    estimate, error = controlled_mean_wait(
        run, servers, lambda scale: theory.mmc_mean_wait_s(servers, rate, scale)
    )
    assert abs(estimate - expected) <= 0.02 * expected, (estimate, expected, error)
    assert 3 * error <= 0.02 * expected, (error, expected)  # the check is tight
    mean, raw_error = mean_and_error(run.waits)
    assert abs(mean - expected) <= max(0.02 * expected, 3 * raw_error), (mean, expected)
    # The share that waits at all: Erlang C itself.
    waited = sum(1 for w in run.waits if w > 0) / len(run.waits)
    assert waited == pytest.approx(theory.erlang_c(servers, rate), abs=0.03)


def loss_system(arrivals: Sequence[float], services: Sequence[float], servers: int) -> list[bool]:
    """Which arrivals an M/G/c/c system accepts (a slot freed at t is free at t)."""
    ends: list[float] = []
    taken = iter(services)
    accepted: list[bool] = []
    for arrival in arrivals:
        ends = [end for end in ends if end > arrival]
        accepted.append(len(ends) < servers)
        if accepted[-1]:
            ends.append(arrival + next(taken))
    return accepted


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
    # Exactly the orders a loss system fed the same draws would refuse.
    arrivals, _ = arrival_times(run.config)
    accepted = loss_system(arrivals, run.services, servers)
    assert list(run.accepted_at) == [t for t, ok in zip(arrivals, accepted, strict=True) if ok]
    assert list(run.refused_at) == [t for t, ok in zip(arrivals, accepted, strict=True) if not ok]
    check_draws_of_services(run)


def check_draws_of_services(run: SimRun) -> None:
    n = len(run.services)
    mean = statistics.fmean(run.services)
    assert abs(mean - 1.0) <= 4 / math.sqrt(n), mean  # exponential: sd = mean


def test_reject_mode_refusals_do_not_depend_on_the_delay_model() -> None:
    # Erlang B is insensitive: fixed delays split over six steps refuse the same share.
    run = simulate(config(rate=8.0, orders=20_000, capacity=4, overload_mode="reject"))
    assert run.refused / run.orders == pytest.approx(theory.erlang_b(4, 8.0 * 2.0), abs=0.01)


@pytest.mark.parametrize("utilisation", [0.5, 0.8, 0.9])
def test_one_slot_with_fixed_delays_waits_as_pollaczek_khinchine_says(utilisation: float) -> None:
    rate = utilisation
    run = queue_run(1, utilisation, "fixed")
    check_mechanics(run, 1)
    service = run.services[0]  # six fixed steps: their sum, 1 s to float precision
    assert service == pytest.approx(1.0) and set(run.services) == {service}
    check_draws(run, rate, service, service * service)
    expected = theory.pk_mean_wait_s(rate, 1.0, 1.0)
    if utilisation == 0.8:
        assert expected == pytest.approx(2.0)
    estimate, error = controlled_mean_wait(
        run, 1, lambda scale: theory.pk_mean_wait_s(rate, service * scale, (service * scale) ** 2)
    )
    assert abs(estimate - expected) <= 0.02 * expected, (estimate, expected, error)
    assert 3 * error <= 0.02 * expected, (error, expected)
    mean, raw_error = mean_and_error(run.waits)
    assert abs(mean - expected) <= max(0.02 * expected, 3 * raw_error), (mean, expected)


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
