"""Exact results of queueing theory, for Poisson arrivals at rate λ and `c` slots.

- Erlang B (M/G/c/c, reject mode): the share of arrivals that find every slot busy;
  it depends on the service time only through its mean.
- Erlang C (M/M/c, queue mode with an unbounded queue): the chance an arrival waits;
  the mean wait is C / (cμ - λ) and P(wait > t) = C·exp(-(cμ - λ)·t).
- M/M/c/K (queue mode with a queue limit L, K = c + L): the refused share.
- Pollaczek-Khinchine (M/G/1): the mean wait λ·E[S²] / (2(1 - rho)).

For service times that are not exponential, `approx_p99_wait_s` scales the M/M/c wait by
(1 + SCV)/2 (Allen-Cunneen), the squared coefficient of variation of the service time
(`service_moments` reads it from the delay models). That is an estimate, which the
planner checks by simulation.
"""

from __future__ import annotations

import math

from retail.core.delays import DelayModel, Exponential, Fixed, Lognormal, Uniform
from retail.core.pipeline import Pipeline
from retail.core.types import ServiceLevel


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """The chance an arrival finds all `servers` busy in a loss system (stable recursion)."""
    if servers < 0 or offered_erlangs < 0:
        raise ValueError("servers and offered load cannot be negative")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_erlangs * blocking / (k + offered_erlangs * blocking)
    return blocking


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """The chance an arrival has to wait in M/M/c (1 when the load is at or past capacity)."""
    if offered_erlangs >= servers:
        return 1.0
    b = erlang_b(servers, offered_erlangs)
    rho = offered_erlangs / servers
    return b / (1 - rho + rho * b)


def mmc_mean_wait_s(servers: int, rate: float, service_s: float) -> float:
    """Mean wait in M/M/c (infinite when unstable)."""
    a = rate * service_s
    if a >= servers:
        return math.inf
    return erlang_c(servers, a) * service_s / (servers - a)


def mmc_wait_quantile_s(servers: int, rate: float, service_s: float, q: float) -> float:
    """The wait not exceeded by a share `q` of arrivals in M/M/c."""
    a = rate * service_s
    if a >= servers:
        return math.inf
    waiting = erlang_c(servers, a)
    if waiting <= 1 - q:
        return 0.0
    return math.log(waiting / (1 - q)) * service_s / (servers - a)


def mmck_refused(servers: int, queue_limit: int, offered_erlangs: float) -> float:
    """The refused share of M/M/c/K with K = servers + queue_limit (PASTA: P(N = K))."""
    # Unnormalised state probabilities, scaled as they go so nothing overflows.
    term, total = 1.0, 1.0
    for n in range(1, servers + queue_limit + 1):
        term *= offered_erlangs / min(n, servers)
        total += term
        if total > 1e250:
            term, total = term / total, 1.0
    return term / total


def pk_mean_wait_s(rate: float, mean_s: float, second_moment_s2: float) -> float:
    """Pollaczek-Khinchine: the mean wait in M/G/1 (infinite when unstable)."""
    rho = rate * mean_s
    if rho >= 1:
        return math.inf
    return rate * second_moment_s2 / (2 * (1 - rho))


def model_variance(model: DelayModel) -> float | None:
    """The variance of a delay model, None for one this module does not know."""
    match model:
        case Fixed():
            return 0.0
        case Uniform(low_s=low, high_s=high):
            return (high - low) ** 2 / 12
        case Exponential(mean=mean):
            return mean * mean
        case Lognormal(mean=mean, sigma=sigma):
            return mean * mean * (math.exp(sigma * sigma) - 1)
    return None


def service_moments(
    pipeline: Pipeline, level: ServiceLevel = ServiceLevel.FULL
) -> tuple[float, float | None]:
    """(mean, squared coefficient of variation) of an order's time; SCV None if unknown.

    Steps are drawn independently, so their variances add up.
    """
    factor = pipeline.mean_s(level) / max(
        1e-300, sum(model.mean_s for _, model in pipeline.step_models(level))
    )
    mean = pipeline.mean_s(level)
    variances = [model_variance(model) for _, model in pipeline.step_models(level)]
    if mean <= 0 or any(v is None for v in variances):
        return mean, None
    variance = sum(v for v in variances if v is not None) * factor * factor
    return mean, variance / (mean * mean)


def is_exponential(pipeline: Pipeline, level: ServiceLevel = ServiceLevel.FULL) -> bool:
    """Whether an order's time is one exponential draw (one step holds all of it)."""
    timed = [model for _, model in pipeline.step_models(level) if model.mean_s > 0]
    return len(timed) == 1 and isinstance(timed[0], Exponential)


def approx_p99_wait_s(servers: int, rate: float, mean_s: float, scv: float) -> float:
    """The M/M/c p99 wait, scaled by (1 + SCV)/2 for other service times (exact for SCV 1)."""
    return mmc_wait_quantile_s(servers, rate, mean_s, 0.99) * (1 + scv) / 2
