"""`retail plan`: the least capacity (and a queue limit) that meets targets at a given load.

Targets: the p99 wait for a slot (`p99_wait_s`) and the refused share (`max_refused`).

- queue and degrade modes: the capacity is the least whose p99 wait meets the target with
  an unbounded queue (the waits are met without shedding); the queue limit is then the
  least that keeps the refused share within `max_refused` at that capacity (M/M/c/K),
  so it sheds only in bursts beyond the load planned for.
- reject mode: the least capacity whose refused share is within `max_refused` (Erlang B).

Theory gives the first guess (Erlang C for the waits, scaled for service times that are
not exponential; Erlang B for the refusals), simulation of the same settings confirms it:
from the guess the search steps down while the simulated run still meets the targets, or
up until it does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from retail.core.capacity import Limits
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, ServiceLevel
from retail.loadgen.schedule import Arrivals, Schedule
from retail.sim import theory
from retail.sim.engine import SimConfig, simulate
from retail.sim.report import summarize

UNBOUNDED_QUEUE = 10**9
MAX_CAPACITY = 10_000
MAX_STEPS = 200


@dataclass(frozen=True)
class Targets:
    p99_wait_s: float
    max_refused: float


@dataclass(frozen=True)
class Row:
    """One capacity: what theory predicts and what the simulated run shows."""

    capacity: int
    queue_limit: int
    utilisation: float
    theory_p99_wait_s: float | None
    theory_refused: float | None
    p99_wait_s: float
    mean_wait_s: float
    refused_share: float
    throughput_per_s: float
    meets: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Plan:
    mode: OverloadMode
    rate: float
    service_s: float
    scv: float | None  # squared coefficient of variation of the service time
    exact_theory: bool  # the theory is exact for these settings (else an estimate)
    targets: Targets
    first_guess: int
    recommended: Row
    rows: tuple[Row, ...]  # the neighbouring capacities, the recommended one among them
    simulated_orders: int

    @property
    def offered_erlangs(self) -> float:
        return self.rate * self.service_s

    def to_json(self) -> dict[str, Any]:
        return {
            "overload_mode": self.mode.value,
            "rate": self.rate,
            "service_s": self.service_s,
            "service_scv": self.scv,
            "offered_erlangs": self.offered_erlangs,
            "exact_theory": self.exact_theory,
            "targets": {
                "p99_wait_s": self.targets.p99_wait_s,
                "max_refused": self.targets.max_refused,
            },
            "first_guess": self.first_guess,
            "capacity": self.recommended.capacity,
            "queue_limit": self.recommended.queue_limit,
            "predicted": self.recommended.to_json(),
            "rows": [row.to_json() for row in self.rows],
            "simulated_orders": self.simulated_orders,
        }


def theory_p99_wait_s(capacity: int, rate: float, mean_s: float, scv: float | None) -> float:
    return theory.approx_p99_wait_s(capacity, rate, mean_s, 1.0 if scv is None else scv)


def least_capacity(fits: Callable[[int], bool], start: int = 1) -> int:
    capacity = max(1, start)
    while not fits(capacity) and capacity < MAX_CAPACITY:
        capacity += 1
    return capacity


def queue_limit_for(capacity: int, erlangs: float, max_refused: float) -> int:
    """The least queue limit whose M/M/c/K refused share is within `max_refused`."""
    if capacity <= erlangs:
        return UNBOUNDED_QUEUE if max_refused <= 0 else _grow(capacity, erlangs, max_refused)
    return _grow(capacity, erlangs, max_refused)


def _grow(capacity: int, erlangs: float, max_refused: float) -> int:
    high = 1
    while theory.mmck_refused(capacity, high, erlangs) > max_refused:
        high *= 2
        if high > 1_000_000:
            return UNBOUNDED_QUEUE
    low = high // 2
    while low < high:  # the least limit in (low, high] that fits
        middle = (low + high) // 2
        if theory.mmck_refused(capacity, middle, erlangs) <= max_refused:
            high = middle
        else:
            low = middle + 1
    return high


def make_plan(
    *,
    mode: OverloadMode,
    pipeline: Pipeline,
    rate: float,
    targets: Targets,
    arrivals: Arrivals = Arrivals.POISSON,
    orders: int = 50_000,
    seed: int = 0,
) -> Plan:
    if rate <= 0:
        raise ValueError("the rate must be above 0")
    mean_s, scv = theory.service_moments(pipeline, ServiceLevel.FULL)
    erlangs = rate * mean_s
    exact = arrivals is Arrivals.POISSON and (
        mode is OverloadMode.REJECT
        or (mode is OverloadMode.QUEUE and theory.is_exponential(pipeline))
    )
    schedule = Schedule.constant(rate, (orders + 10 * math.sqrt(orders) + 10) / rate)

    def run(capacity: int, queue_limit: int) -> dict[str, Any]:
        limits = Limits(mode=mode, capacity=capacity, queue_limit=queue_limit)
        config = SimConfig(
            limits=limits,
            pipeline=pipeline,
            schedule=schedule,
            arrivals=arrivals,
            seed=seed,
            max_orders=orders,
        )
        return summarize(simulate(config), timeline=False)

    def theory_row(capacity: int, queue_limit: int) -> tuple[float | None, float | None]:
        if mode is OverloadMode.REJECT:
            return 0.0, theory.erlang_b(capacity, erlangs)
        refused = theory.mmck_refused(capacity, queue_limit, erlangs)
        return theory_p99_wait_s(capacity, rate, mean_s, scv), refused

    if mode is OverloadMode.REJECT:
        guess = least_capacity(
            lambda c: theory.erlang_b(c, erlangs) <= targets.max_refused, math.floor(erlangs)
        )
    else:
        guess = least_capacity(
            lambda c: theory_p99_wait_s(c, rate, mean_s, scv) <= targets.p99_wait_s,
            math.floor(erlangs) + 1,
        )

    # The simulated check of one capacity: the waits with an unbounded queue, or the
    # refusals of a loss system.
    checked: dict[int, dict[str, Any]] = {}

    def check(capacity: int) -> dict[str, Any]:
        if capacity not in checked:
            limit = 0 if mode is OverloadMode.REJECT else UNBOUNDED_QUEUE
            checked[capacity] = run(capacity, limit)
        return checked[capacity]

    def meets(capacity: int) -> bool:
        summary = check(capacity)
        if mode is OverloadMode.REJECT:
            return bool(summary["refused_share"] <= targets.max_refused)
        p99 = summary["wait_s"]["p99"]
        return p99 is not None and p99 <= targets.p99_wait_s

    capacity = guess
    steps = 0
    if meets(capacity):
        while capacity > 1 and steps < MAX_STEPS and meets(capacity - 1):
            capacity -= 1
            steps += 1
    else:
        while not meets(capacity) and steps < MAX_STEPS and capacity < MAX_CAPACITY:
            capacity += 1
            steps += 1

    def row(c: int) -> Row:
        summary = check(c)
        if mode is OverloadMode.REJECT:
            limit = 0
            refused = summary["refused_share"]
        else:
            limit = queue_limit_for(c, erlangs, targets.max_refused)
            bounded = summary if limit >= UNBOUNDED_QUEUE else run(c, limit)
            refused = bounded["refused_share"]
        theory_wait, theory_refused = theory_row(c, limit)
        return Row(
            capacity=c,
            queue_limit=limit,
            utilisation=erlangs / c,
            theory_p99_wait_s=theory_wait,
            theory_refused=theory_refused,
            p99_wait_s=summary["wait_s"]["p99"] or 0.0,
            mean_wait_s=summary["wait_s"]["mean"] or 0.0,
            refused_share=refused,
            throughput_per_s=summary["throughput_per_s"],
            meets=meets(c) and refused <= targets.max_refused,
        )

    rows = [row(c) for c in range(max(1, capacity - 1), capacity + 3)]
    recommended = next(r for r in rows if r.capacity == capacity)
    if mode is not OverloadMode.REJECT and recommended.refused_share > targets.max_refused:
        # The simulated refusals exceed the theory's: lengthen the queue until they fit.
        limit = recommended.queue_limit
        for _ in range(8):
            limit = math.ceil(limit * 1.5)
            refused = run(capacity, limit)["refused_share"]
            if refused <= targets.max_refused:
                break
        recommended = replace(
            recommended,
            queue_limit=limit,
            refused_share=refused,
            meets=recommended.p99_wait_s <= targets.p99_wait_s and refused <= targets.max_refused,
        )
        rows = [recommended if r.capacity == capacity else r for r in rows]
    return Plan(
        mode=mode,
        rate=rate,
        service_s=mean_s,
        scv=scv,
        exact_theory=exact,
        targets=targets,
        first_guess=guess,
        recommended=recommended,
        rows=tuple(rows),
        simulated_orders=orders,
    )
