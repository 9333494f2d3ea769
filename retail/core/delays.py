"""Delay models: how long a simulated step takes.

A delay spec is a short string, so it fits an environment variable:

| spec                     | meaning                                              |
|--------------------------|------------------------------------------------------|
| `2` or `fixed:2`         | always 2 s                                           |
| `uniform:1,3`            | uniformly between 1 s and 3 s                        |
| `exponential:2`          | exponential with mean 2 s                            |
| `lognormal:2,0.5`        | lognormal with mean 2 s and shape (sigma) 0.5        |

Every model has an analytic `mean_s`, which the capacity policy uses for its
estimates, and samples from a `random.Random` the caller owns, so runs repeat.
"""

from __future__ import annotations

import math
import random
from dataclasses import astuple, dataclass
from typing import Protocol


class DelayModel(Protocol):
    @property
    def mean_s(self) -> float: ...

    def sample(self, rng: random.Random) -> float: ...

    def scaled(self, factor: float) -> DelayModel: ...


def spec_of(model: Fixed | Uniform | Exponential | Lognormal) -> str:
    """A model's delay spec, as `parse_delay` reads it: `uniform:1,3`."""
    numbers = ",".join(f"{value:g}" for value in astuple(model))
    return f"{type(model).__name__.lower()}:{numbers}"


@dataclass(frozen=True, slots=True)
class Fixed:
    seconds: float

    @property
    def mean_s(self) -> float:
        return self.seconds

    def sample(self, rng: random.Random) -> float:
        return self.seconds

    def scaled(self, factor: float) -> Fixed:
        return Fixed(self.seconds * factor)

    __str__ = spec_of


@dataclass(frozen=True, slots=True)
class Uniform:
    low_s: float
    high_s: float

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low_s, self.high_s)

    def scaled(self, factor: float) -> Uniform:
        return Uniform(self.low_s * factor, self.high_s * factor)

    __str__ = spec_of


@dataclass(frozen=True, slots=True)
class Exponential:
    mean: float

    @property
    def mean_s(self) -> float:
        return self.mean

    def sample(self, rng: random.Random) -> float:
        # `rng.expovariate(1 / self.mean)` written out (the same draw, the same arithmetic):
        # it runs for every step of every order, and a simulation plans millions.
        return -math.log(1.0 - rng.random()) / (1 / self.mean) if self.mean > 0 else 0.0

    def scaled(self, factor: float) -> Exponential:
        return Exponential(self.mean * factor)

    __str__ = spec_of


@dataclass(frozen=True, slots=True)
class Lognormal:
    """Lognormal parameterised by its mean (seconds) and sigma (spread of the log)."""

    mean: float
    sigma: float

    @property
    def mean_s(self) -> float:
        return self.mean

    def sample(self, rng: random.Random) -> float:
        if self.mean <= 0:
            return 0.0
        mu = math.log(self.mean) - self.sigma**2 / 2
        return rng.lognormvariate(mu, self.sigma)

    def scaled(self, factor: float) -> Lognormal:
        return Lognormal(self.mean * factor, self.sigma)

    __str__ = spec_of


def parse_delay(spec: str) -> DelayModel:
    """Parse a delay spec; raise `ValueError` saying what is wrong."""
    text = spec.strip().lower()
    kind, _, args = text.partition(":") if ":" in text else ("fixed", "", text)
    try:
        numbers = [float(part) for part in args.split(",")] if args else []
    except ValueError:
        raise ValueError(f"delay {spec!r}: arguments must be numbers of seconds") from None
    if any(math.isnan(n) or math.isinf(n) or n < 0 for n in numbers):
        raise ValueError(f"delay {spec!r}: arguments must be finite and >= 0")
    expected = {"fixed": 1, "uniform": 2, "exponential": 1, "lognormal": 2}
    if kind not in expected:
        raise ValueError(
            f"delay {spec!r}: unknown model {kind!r}; use a number, fixed:S, uniform:LO,HI, "
            "exponential:MEAN or lognormal:MEAN,SIGMA"
        )
    if len(numbers) != expected[kind]:
        raise ValueError(f"delay {spec!r}: {kind} takes {expected[kind]} number(s)")
    match kind:
        case "fixed":
            return Fixed(numbers[0])
        case "uniform":
            low, high = numbers
            if low > high:
                raise ValueError(f"delay {spec!r}: low must not exceed high")
            return Uniform(low, high)
        case "exponential":
            return Exponential(numbers[0])
        case _:
            return Lognormal(numbers[0], numbers[1])
