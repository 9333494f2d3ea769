"""The fulfilment pipeline: which steps an order goes through and how long each takes.

The pipeline is pure: given an order's sequence number, line count and service
level it returns a `Plan` (step names and delays, and whether payment is
declined). The plan depends only on the seed and the order, so a worker that
resumes an order after a crash recomputes exactly the same plan.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from retail.core.delays import DelayModel, Exponential, Fixed, parse_delay
from retail.core.types import ServiceLevel


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    share: float  # of the order's total delay
    optional: bool = False
    description: str = ""


STEPS: tuple[Step, ...] = (
    Step("reserve", 0.10, description="confirm the stock reserved at order time"),
    Step("fraud_check", 0.20, optional=True, description="screen the order for fraud"),
    Step("payment", 0.15, description="charge the customer (may be declined)"),
    Step("pick", 0.20, description="pick the items in the warehouse"),
    Step("pack", 0.15, description="pack the parcel"),
    Step("ship", 0.20, description="hand the parcel to the carrier"),
)
STEP_NAMES = tuple(step.name for step in STEPS)
PAYMENT_STEP = "payment"


class PlannedStep(NamedTuple):
    name: str
    delay_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    # The steps' names and delays side by side, not a `PlannedStep` each: a simulation
    # plans millions of orders and needs only the delays.
    names: tuple[str, ...]
    delays_s: tuple[float, ...]
    skipped: tuple[str, ...]
    payment_declined: bool

    @property
    def steps(self) -> tuple[PlannedStep, ...]:
        """The steps in order, each with its delay."""
        return tuple(map(PlannedStep._make, zip(self.names, self.delays_s, strict=True)))

    @property
    def total_s(self) -> float:
        return sum(self.delays_s)


@dataclass(frozen=True, slots=True)
class Pipeline:
    total: DelayModel
    per_step: dict[str, DelayModel]
    delay_per_extra_line: float
    seed: int | None
    decline_probability: float
    degrade_skip: frozenset[str]
    degrade_factor: float
    # Sum of the step means per service level, filled on first use: every admission
    # decision asks for both, and the models do not change while the pipeline lives.
    _step_means_s: dict[ServiceLevel, float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The steps and their delay models per service level, also filled on first use.
    _step_models: dict[ServiceLevel, tuple[tuple[str, DelayModel], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # What a plan of each (service level, line count) draws with, also filled on first use.
    _draws: dict[tuple[ServiceLevel, int], _Draws] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(
        cls,
        *,
        fulfilment_delay: str,
        step_delays: Mapping[str, str] | None = None,
        delay_per_extra_line: float = 0.0,
        seed: int | None = None,
        decline_probability: float = 0.0,
        degrade_skip_steps: Iterable[str] = ("fraud_check",),
        degrade_delay_factor: float = 0.5,
    ) -> Pipeline:
        """The pipeline from its settings' plain values; `ValueError` says what is wrong."""
        step_delays = step_delays or {}
        degrade_skip_steps = list(degrade_skip_steps)
        total = parse_delay(fulfilment_delay)
        unknown = set(step_delays) - set(STEP_NAMES)
        if unknown:
            raise ValueError(
                f"step_delays: unknown step(s) {sorted(unknown)}; steps are {list(STEP_NAMES)}"
            )
        per_step = {name: parse_delay(spec) for name, spec in step_delays.items()}
        optional = {step.name for step in STEPS if step.optional}
        not_optional = set(degrade_skip_steps) - optional
        if not_optional:
            raise ValueError(
                f"degrade_skip_steps: {sorted(not_optional)} cannot be skipped; "
                f"optional steps are {sorted(optional)}"
            )
        return cls(
            total=total,
            per_step=per_step,
            delay_per_extra_line=delay_per_extra_line,
            seed=seed,
            decline_probability=decline_probability,
            degrade_skip=frozenset(degrade_skip_steps),
            degrade_factor=degrade_delay_factor,
        )

    def _model(self, step: Step) -> DelayModel:
        return self.per_step.get(step.name) or self.total.scaled(step.share)

    def _steps(self, level: ServiceLevel) -> list[Step]:
        if level is ServiceLevel.DEGRADED:
            return [step for step in STEPS if step.name not in self.degrade_skip]
        return list(STEPS)

    def _factor(self, level: ServiceLevel, line_count: int) -> float:
        factor = 1 + self.delay_per_extra_line * max(0, line_count - 1)
        return factor * (self.degrade_factor if level is ServiceLevel.DEGRADED else 1)

    def step_models(self, level: ServiceLevel) -> tuple[tuple[str, DelayModel], ...]:
        """The steps an order of `level` goes through, each with its delay model (unscaled)."""
        models = self._step_models.get(level)
        if models is None:
            models = tuple((step.name, self._model(step)) for step in self._steps(level))
            self._step_models[level] = models
        return models

    def mean_s(self, level: ServiceLevel = ServiceLevel.FULL, line_count: int = 1) -> float:
        """Expected fulfilment time of one order: what the capacity policy plans with."""
        steps_s = self._step_means_s.get(level)
        if steps_s is None:
            steps_s = sum(self._model(step).mean_s for step in self._steps(level))
            self._step_means_s[level] = steps_s
        return steps_s * self._factor(level, line_count)

    def skipped(self, level: ServiceLevel) -> tuple[str, ...]:
        if level is ServiceLevel.DEGRADED:
            return tuple(name for name in STEP_NAMES if name in self.degrade_skip)
        return ()

    def plan(
        self,
        *,
        order_seq: int,
        line_count: int,
        level: ServiceLevel,
        rng: random.Random | None = None,
    ) -> Plan:
        """The order's plan. Its draws come from a generator seeded by the seed and `order_seq`,
        or from `rng` when given (a simulation's one stream: cheaper than a generator per order).
        """
        if rng is None:
            rng = random.Random(f"{self.seed}:{order_seq}" if self.seed is not None else None)
        drawn = self._draws.get((level, line_count))
        if drawn is None:
            drawn = self._draws[level, line_count] = self._prepare(level, line_count)
        factor = drawn.factor
        if drawn.fixed is not None:  # nothing to draw
            delays = drawn.fixed
        elif drawn.exponential is not None:
            # `Exponential.sample` written out (the same draw, the same arithmetic).
            draw = rng.random
            delays = tuple([-_log(1.0 - draw()) / rate * factor for rate in drawn.exponential])
        else:
            delays = tuple([sample(rng) * factor for sample in drawn.samplers])
        declined = rng.random() < self.decline_probability
        return Plan(drawn.names, delays, drawn.skipped, declined)

    def _prepare(self, level: ServiceLevel, line_count: int) -> _Draws:
        models = self.step_models(level)
        factor = self._factor(level, line_count)
        fixed = exponential = None
        if all(isinstance(model, Fixed) for _, model in models):
            fixed = tuple(model.mean_s * factor for _, model in models)
        elif all(isinstance(model, Exponential) and model.mean > 0 for _, model in models):
            exponential = tuple(1 / cast(Exponential, model).mean for _, model in models)
        return _Draws(
            factor=factor,
            names=tuple(name for name, _ in models),
            samplers=tuple(model.sample for _, model in models),
            skipped=self.skipped(level),
            fixed=fixed,
            exponential=exponential,
        )


_log = math.log


class _Draws(NamedTuple):
    """What `Pipeline.plan` needs for one service level and line count, besides the draws."""

    factor: float
    names: tuple[str, ...]  # of the steps, in order
    samplers: tuple[Callable[[random.Random], float], ...]  # of the steps, in order
    skipped: tuple[str, ...]
    fixed: tuple[float, ...] | None  # every delay fixed: the delays are always these
    exponential: tuple[float, ...] | None  # every delay exponential: 1 / mean of each step
