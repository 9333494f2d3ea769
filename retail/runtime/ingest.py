"""Group commit: many orders per transaction, each all-or-nothing.

`place_order` hands its order to `Ingest.submit()` and awaits it. One writer task
takes everything that is waiting and gives it to the store as one batch
(`Store.place_orders`: one transaction, isolating any order the database refuses),
and only then answers each submitter: a `202` is never sent before its order is
durable. Under light load a batch is one order; under heavy load batches grow by
themselves, and the cost of a commit (an fsync) is shared by every order in it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from retail.core.errors import Unavailable
from retail.core.orders import Placed
from retail.runtime.batching import next_batch
from retail.runtime.bus import EventBus
from retail.runtime.clock import Clock
from retail.store.base import Placing, Store, StoredResponse

log = logging.getLogger(__name__)

MAX_BATCH_ORDERS = 512


# Told the outcome of an order's write synchronously, before anything else can run:
# the order's admission ticket is settled before a worker can claim the order.
Settle = Callable[[Placed | StoredResponse | BaseException], None]


class _Pending:
    __slots__ = ("answered", "context", "future", "placing", "settle")

    def __init__(self, placing: Placing, settle: Settle | None) -> None:
        self.placing = placing
        self.settle = settle
        self.answered = False
        self.future: asyncio.Future[Placed | StoredResponse] = (
            asyncio.get_running_loop().create_future()
        )
        # The submitter's context (its request id): the order's first event is published in it.
        self.context = contextvars.copy_context()


class Ingest:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        bus: EventBus,
        idempotency_ttl_s: float,
        on_committed: Callable[[], None] = lambda: None,
        on_placed: Callable[[Sequence[Placed]], None] | None = None,
    ) -> None:
        self._store = store
        self._on_committed = on_committed
        # Told the orders of a batch just stored, before any of their tickets is settled.
        self._on_placed = on_placed
        self._clock = clock
        self._bus = bus
        self._ttl = timedelta(seconds=idempotency_ttl_s)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retail-ingest")

    async def stop(self) -> None:
        """Write what is already waiting, then stop."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def submit(
        self, placing: Placing, settle: Settle | None = None
    ) -> asyncio.Future[Placed | StoredResponse]:
        """Queue the order for the next batch; the future resolves once it is durable.

        With a live key already stored, the future resolves to that key's stored answer
        instead, and nothing is written. A refused order (stock, SKU) raises its
        `RetailError`. The write happens whether or not anyone still awaits the future,
        and `settle` hears its outcome even if the future was cancelled (its submitter
        was): no need to shield it.
        """
        if self._closed:
            raise Unavailable(
                "The service is shutting down; retry against a running instance.",
                retry_after_s=1,
            )
        pending = _Pending(placing, settle)
        self._queue.put_nowait(pending)
        return pending.future

    async def _run(self) -> None:
        while True:
            batch = await next_batch(self._queue, MAX_BATCH_ORDERS)
            try:
                await self._write(batch)
            except Exception as error:
                log.exception("writing a batch of %d orders failed", len(batch))
                for pending in batch:
                    if not pending.answered:
                        _answer(pending, error)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Pending]) -> None:
        now = self._clock.now()
        outcomes = await self._store.place_orders(
            [pending.placing for pending in batch], now=now, keys_expire_at=now + self._ttl
        )
        if self._on_placed is not None:
            stored = [outcome for outcome in outcomes if isinstance(outcome, Placed)]
            if stored:
                self._on_placed(stored)
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending, outcome)
        placed = False
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Placed):
                placed = True
                pending.context.run(self._bus.publish, outcome.event)
        if placed:
            self._on_committed()  # once per batch: workers look for new work


def _answer(pending: _Pending, outcome: Placed | StoredResponse | BaseException) -> None:
    pending.answered = True
    if pending.settle is not None:
        pending.settle(outcome)
    future = pending.future
    if future.cancelled():  # its submitter is gone; the order is written all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
