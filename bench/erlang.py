"""Physical limits the overload figures are held against.

- Queue mode keeps every slot busy once the queue is non-empty: by Little's law
  `C` slots that each hold an order for `D` seconds finish `C / D` orders per second.
- Reject mode is a loss system (M/G/C/C): an arrival that finds all `C` slots busy
  is turned away. With Poisson arrivals at rate λ and offered load `a = λ·D` Erlangs,
  the share turned away is Erlang's B formula `B(C, a)` (whatever the service time
  distribution), so the carried load is `λ·(1 - B(C, a))` orders per second.

`loss_system_finishes` replays an actual arrival sequence through an ideal loss
system, for a reference free of the sampling noise of a 20 s run.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from retail.sim.theory import erlang_b


def carried_load(rate: float, servers: int, service_s: float) -> float:
    """Orders per second a loss system with `servers` slots completes: λ·(1 - B(C, λ·D))."""
    return rate * (1 - erlang_b(servers, rate * service_s))


def queue_limit_rate(servers: int, service_s: float) -> float:
    """Orders per second `servers` always-busy slots complete (Little's law): C / D."""
    return servers / service_s


def loss_system_finishes(
    arrivals_s: Iterable[float], servers: int, service_s: float
) -> list[float]:
    """Finish times of the arrivals an ideal loss system admits (a slot free on arrival)."""
    busy_until: list[float] = []  # a heap of the busy slots' finish times
    finishes = []
    for t in sorted(arrivals_s):
        while busy_until and busy_until[0] <= t:
            heapq.heappop(busy_until)
        if len(busy_until) < servers:
            heapq.heappush(busy_until, t + service_s)
            finishes.append(t + service_s)
    return finishes
