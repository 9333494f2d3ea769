"""Database reads for probes and scrapes that answer in time, however the database is.

A query stuck on a silent network can take as long to cancel as to answer, so
`within` never waits for a cancellation: the read runs as its own task, the
caller waits for it at most `timeout_s`, and a slow read is left to finish in the
background. One read of each name runs at a time: probes that come while it is
under way wait for that one instead of piling up more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI

T = TypeVar("T")


async def within(
    app: FastAPI, name: str, read: Callable[[], Coroutine[Any, Any, T]], timeout_s: float
) -> T:
    """The result of `read()` (the run under way, or a new one); TimeoutError after `timeout_s`."""
    tasks: dict[str, asyncio.Task[Any]] | None = getattr(app.state, "bounded_reads", None)
    if tasks is None:
        tasks = app.state.bounded_reads = {}
    task = tasks.get(name)
    if task is None or task.done():
        task = asyncio.create_task(read(), name=f"retail-{name}")
        task.add_done_callback(_retrieve)
        tasks[name] = task
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if task.cancelled():
        raise RuntimeError("cancelled: the service is stopping")
    result: T = task.result()
    return result


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark the outcome as seen, even if every caller that wanted it has given up."""
    if not task.cancelled():
        task.exception()
