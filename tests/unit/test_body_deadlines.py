"""`BodyDeadlines`: a request reading its body past its time is cancelled, and only then."""

from __future__ import annotations

import asyncio

import pytest

from retail.web.limits import BodyDeadlines


async def test_a_reader_past_its_time_is_cancelled_and_told_apart() -> None:
    deadlines = BodyDeadlines.for_loop(asyncio.get_running_loop())
    assert BodyDeadlines.for_loop(asyncio.get_running_loop()) is deadlines  # one per loop

    async def read(seconds: float, timeout_s: float) -> str:
        task = asyncio.current_task()
        assert task is not None
        tick = deadlines.start(task, timeout_s)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            return "timed out" if deadlines.stop(task, tick) else "cancelled"
        deadlines.stop(task, tick)
        return "read"

    slow = asyncio.create_task(read(10, 0.01))
    quick = asyncio.create_task(read(0, 0.01))
    assert await quick == "read"
    assert await asyncio.wait_for(slow, 1) == "timed out"
    # Done in time: its tick fires later and finds nothing to cancel.
    done_in_time = asyncio.create_task(read(0, 0.01))
    assert await done_in_time == "read"
    await asyncio.sleep(0.1)
    assert not deadlines.expired

    # Cancelled by someone else, before its time: not a timeout.
    other = asyncio.create_task(read(10, 5))
    await asyncio.sleep(0)
    other.cancel()
    assert await other == "cancelled"


@pytest.mark.parametrize("timeout_s", [0.0, 0.01])
async def test_the_deadline_is_kept_at_most_a_tick_late(timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines.for_loop(loop)
    task = asyncio.current_task()
    assert task is not None
    started = loop.time()
    tick = deadlines.start(task, timeout_s)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(10)
    assert deadlines.stop(task, tick)
    task.uncancel()
    assert timeout_s <= loop.time() - started <= timeout_s + 2 * BodyDeadlines.TICK_S + 0.5
