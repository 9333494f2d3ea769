"""The pacer: starts each order at its due time and never waits for answers.

This is what makes the generator open-loop. `pace()` sleeps only on the timer and
hands each due order to `send`, a plain function that must not block (it starts a
task). However slowly the server answers, the next order still goes out on time, and
a late start is measured, not hidden: `send` receives how late it was called.

Time is injected through `Timer`, so tests run the pacer in virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class Timer(Protocol):
    """Monotonic seconds and a way to wait for them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicTimer:
    """Real time: `time.monotonic()`, the clock asyncio's own timers use."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def pace(
    dues: Sequence[float],
    *,
    timer: Timer,
    start: float,
    send: Callable[[int, float], None],
) -> None:
    """Call `send(index, lag_s)` for each due time (seconds after `start`), in order.

    `lag_s` is how long after its due time the order was handed over (0 when on time).
    Orders already overdue are handed over at once, one after the other: the pacer
    never skips an order and never spreads a backlog out.
    """
    for index, due in enumerate(dues):
        delay = start + due - timer.now()
        if delay > 0:
            await timer.sleep(delay)
        send(index, max(0.0, timer.now() - start - due))
