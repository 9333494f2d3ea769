"""Priorities, deadlines and budgeted retries of a load: what `retail load` and
`retail simulate` share, so that a simulated run sends what a live one sends.

- `Mix`: the share of orders sent at each priority, `--mix critical=0.2,standard=0.5,
  sheddable=0.3` (shares as fractions or percentages; left-out priorities get 0; the
  shares must add up to 1). `Mix.assign(count, seed)` gives every order its priority,
  the same for the same seed whatever runs the orders.
- `RetryBudget`: a refused order is retried only while the retries so far stay within
  a share of the orders sent so far (`--retry-budget`, 0.1 by default: at most 10 %
  extra load), as gRPC's and Finagle's retry budgets do; a retry storm cannot multiply
  the load.
- `retry_delay`: the `Retry-After` given, stretched by a random 0 to 50 %, so the
  retries of a burst do not all come back at the same instant.

Priorities are the service's names (`critical`, `standard`, `sheddable`), spelled here
because the load generator imports nothing of the server.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

PRIORITIES = ("critical", "standard", "sheddable")  # in start order, as the service has them
DEFAULT_PRIORITY = "standard"
DEFAULT_RETRY_BUDGET = 0.1  # retries at most 10 % of the orders sent
DEFAULT_RETRIES_PER_ORDER = 3  # with --retry and no --retries
RETRY_JITTER = 0.5  # a retry comes back after Retry-After x (1 + up to 50 %)
_SHARE = re.compile(r"^\s*(?P<name>[a-z_]+)\s*=\s*(?P<value>[0-9.]+)\s*(?P<pct>%?)\s*$")


@dataclass(frozen=True)
class Mix:
    """Share of orders per priority, in `PRIORITIES` order; they add up to 1."""

    shares: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.shares) != len(PRIORITIES):
            raise ValueError(f"a mix has one share per priority ({', '.join(PRIORITIES)})")
        if any(share < 0 or not math.isfinite(share) for share in self.shares):
            raise ValueError("a share cannot be negative")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"the shares add up to {sum(self.shares):g}, not 1")

    @classmethod
    def parse(cls, text: str) -> Mix:
        """`critical=0.2,standard=0.5,sheddable=0.3` (or `critical=20%,...`)."""
        found: dict[str, float] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            match = _SHARE.match(part.lower())
            if match is None:
                raise ValueError(
                    f"--mix: {part.strip()!r} is not PRIORITY=SHARE "
                    "(e.g. critical=0.2,standard=0.5,sheddable=0.3)"
                )
            name = match["name"]
            if name not in PRIORITIES:
                raise ValueError(
                    f"--mix: unknown priority {name!r}; the priorities are {', '.join(PRIORITIES)}"
                )
            if name in found:
                raise ValueError(f"--mix: {name} is given twice")
            try:
                value = float(match["value"])
            except ValueError:
                raise ValueError(f"--mix: {match['value']!r} is not a number") from None
            found[name] = value / 100 if match["pct"] else value
        if not found:
            raise ValueError("--mix: give at least one PRIORITY=SHARE")
        try:
            return cls(tuple(found.get(name, 0.0) for name in PRIORITIES))
        except ValueError as error:
            raise ValueError(f"--mix {text.strip()}: {error}") from None

    def share(self, priority: str) -> float:
        return self.shares[PRIORITIES.index(priority)]

    def describe(self) -> str:
        """`critical=0.2,standard=0.5,sheddable=0.3` (priorities with a share only)."""
        return ",".join(
            f"{name}={share:g}"
            for name, share in zip(PRIORITIES, self.shares, strict=True)
            if share
        )

    def assign(self, count: int, seed: int | None) -> list[str]:
        """The priority of each of `count` orders, drawn independently with these shares;
        the same list for the same seed."""
        rng = random.Random(f"retail-mix:{seed}")
        bounds = []
        total = 0.0
        for share in self.shares:
            total += share
            bounds.append(total)
        last = len(PRIORITIES) - 1
        result = []
        for _ in range(count):
            draw = rng.random() * total
            index = 0
            while index < last and (draw >= bounds[index] or self.shares[index] == 0):
                index += 1
            result.append(PRIORITIES[index])
        return result


def parse_start_within(value: float | None) -> float | None:
    """`--start-within S`: a positive number of seconds, or None."""
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--start-within: expected a positive number of seconds, got {value:g}")
    return value


@dataclass
class RetryBudget:
    """Retries allowed while `retries <= ratio x first attempts` (both counted so far)."""

    ratio: float = DEFAULT_RETRY_BUDGET
    first_attempts: int = 0
    retries: int = 0
    denied: int = 0  # retries the budget did not allow

    def __post_init__(self) -> None:
        if not math.isfinite(self.ratio) or self.ratio < 0:
            raise ValueError(f"--retry-budget: expected a share of 0 or more, got {self.ratio:g}")

    def sent(self) -> None:
        """An order's first attempt went out."""
        self.first_attempts += 1

    def spend(self) -> bool:
        """True (and counted) if one more retry fits in the budget now."""
        if self.retries + 1 <= self.ratio * self.first_attempts + 1e-9:
            self.retries += 1
            return True
        self.denied += 1
        return False


def retry_delay(retry_after_s: float, rng: random.Random) -> float:
    """When to come back: `Retry-After` plus a random 0 to 50 % of it."""
    return retry_after_s * (1.0 + RETRY_JITTER * rng.random())
