"""The group-commit writers' shared step: wait for work, then take all that waits."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def next_batch(queue: asyncio.Queue[T], limit: int) -> list[T]:
    """The next item (waiting for one), and every item already queued behind it, up to
    `limit` in all: under light load a batch of one, under heavy load larger batches."""
    batch = [await queue.get()]
    while len(batch) < limit and not queue.empty():
        batch.append(queue.get_nowait())
    return batch
