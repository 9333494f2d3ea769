"""Group commit for the workers: many orders' step transitions per transaction.

Every order in flight writes at each step boundary (the end of a step, the start of
the next) and at its end. Written one transaction each, a few dozen orders in flight
spend their time waiting on commits (an fsync each on SQLite), not on their steps.
So an order's task hands its `Transition` to `Completer.write()` and awaits it; one
writer task takes everything that is waiting and gives it to the store as one batch
(`Store.transition`: one transaction, each transition fenced by its claim's lease
token on its own), then answers each order. Under light load a batch is one
transition; under heavy load batches grow by themselves (River's batch completer
works the same way).

The guarantees are the store's: a stale claim's transition writes nothing and its
order sees `LeaseLost`; an order awaits its own write before its next step, so a
batch holds at most one transition per order and each order's events stay in order;
what is committed is the last durable step a crash resumes from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from retail.core.events import OrderEvent
from retail.runtime.batching import next_batch
from retail.runtime.clock import Clock
from retail.store.base import LeaseLost, Store, Transition

log = logging.getLogger(__name__)

MAX_BATCH = 512
# Batches written at once. PostgreSQL runs them side by side (an order has one transition
# in flight at most, so two batches never hold the same order); on SQLite the ones that
# wait together share the writer thread's next commit.
WRITERS = 4


@dataclass(eq=False)
class _Pending:
    change: Transition
    future: asyncio.Future[list[OrderEvent]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Completer:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        lease_s: float,
        on_written: Callable[[int], None] = lambda transitions: None,
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._clock = clock
        self._lease_s = lease_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0  # transactions written
        self.written = 0  # transitions in them

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"retail-completer-{n}")
                for n in range(WRITERS)
            ]

    async def stop(self) -> None:
        """Write what is already waiting, then stop."""
        if not self._tasks:
            return
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, change: Transition) -> list[OrderEvent]:
        """Queue the transition for the next batch; its events once it is durable.

        `LeaseLost` if its claim no longer holds the order (nothing written). The write
        happens whether or not the caller still awaits it.
        """
        if not self._tasks:
            raise RuntimeError("the completer is not running")
        pending = _Pending(change)
        self._queue.put_nowait(pending)
        return await asyncio.shield(pending.future)

    async def _run(self) -> None:
        while True:
            batch = await next_batch(self._queue, MAX_BATCH)
            try:
                results = await self._store.transition(
                    [pending.change for pending in batch],
                    now=self._clock.now(),
                    lease_s=self._lease_s,
                )
                self.batches += 1
                self.written += len(batch)
                self._on_written(len(batch))
                for pending, result in zip(batch, results, strict=True):
                    if not pending.future.done():
                        if isinstance(result, LeaseLost):
                            pending.future.set_exception(result)
                        else:
                            pending.future.set_result(result)
            except Exception as error:
                log.exception("writing a batch of %d step transitions failed", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            finally:
                for pending in batch:
                    self._queue.task_done()
                    if pending.future.done() and not pending.future.cancelled():
                        pending.future.exception()  # retrieved: an abandoned one logs nothing
