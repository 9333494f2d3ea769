"""The clock seam: every timestamp, simulated delay and timed wait goes through a `Clock`.

- `now()`: wall-clock time for timestamps (UTC); `seconds()`: the same as a float, the
  timeline the load model (`retail.core`) plans on.
- `sleep(s)`: a simulated delay (a fulfilment step).
- `monotonic()` and `wait(event, timeout_s)`: time for I/O — poll intervals,
  keep-alives, how long a request took.

`SystemClock` is real time. `ManualClock` stands still until `advance()` is called, so
tests decide exactly when simulated work completes and never wait through a real
delay; its I/O time stays real, so polls and streams keep moving in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current wall-clock time, timezone-aware UTC."""
        ...

    def seconds(self) -> float:
        """`now()` as seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """A simulated delay."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for measuring I/O."""
        ...

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait until `event` is set (True) or `timeout_s` of I/O time pass (False)."""
        ...


async def _wait_real(event: asyncio.Event, timeout_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    return event.is_set()


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def seconds(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        return await _wait_real(event, timeout_s)


class ManualClock:
    """Virtual time that moves only when told to (I/O time stays real)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now

    def seconds(self) -> float:
        return self._now.timestamp()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        return await _wait_real(event, timeout_s)

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (tests wait for work to reach its next sleep)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self._now + timedelta(seconds=seconds), next(self._counter), future)
        )
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleep that is now due."""
        self._now += timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
