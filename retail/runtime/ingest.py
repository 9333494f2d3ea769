"""Group commit: many orders per transaction, each all-or-nothing.

Request handlers hand their order to `Ingest.submit()` and await it. One writer
task takes everything that is waiting, writes it in one transaction (see
`retail.store.sql.orders.place_orders`), commits once, and only then answers each
handler: a `202` is never sent before its order is durable. Under light load a
batch is one order; under heavy load batches grow by themselves, and the cost of
a commit (an fsync) is shared by every order in it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from retail.core.errors import IdempotencyKeyInUse, RetailError
from retail.core.types import OrderStatus
from retail.runtime.bus import EventBus, OrderNotice
from retail.runtime.clock import Clock
from retail.store.sql import idempotency
from retail.store.sql.engine import Database
from retail.store.sql.orders import NewOrder, PlacedOrder, place_orders

log = logging.getLogger(__name__)

MAX_BATCH_ORDERS = 512


# What a submitted order comes to: stored, or the response stored for an earlier
# request with its key (whose body the caller compares), or why not (`RetailError`).
Outcome = PlacedOrder | idempotency.StoredResponse | RetailError


class IngestClosed(RetailError):
    status, slug, title = 503, "shutting-down", "Shutting down"


@dataclass(frozen=True, slots=True)
class KeyedResponse:
    """The idempotency key of a request and how to render its stored response."""

    key: str
    request_hash: str
    render: Callable[[PlacedOrder], dict[str, Any]]


@dataclass(eq=False)
class _Pending:
    order: NewOrder
    keyed: KeyedResponse | None
    future: asyncio.Future[PlacedOrder | idempotency.StoredResponse] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # The submitter's context (its request id): the order's first event is published in it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class Ingest:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        bus: EventBus,
        idempotency_ttl_s: float,
        on_committed: Callable[[list[PlacedOrder]], None] = lambda placed: None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._bus = bus
        self._ttl = timedelta(seconds=idempotency_ttl_s)
        self._on_committed = on_committed
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.orders = 0

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
        self, order: NewOrder, keyed: KeyedResponse | None = None
    ) -> asyncio.Future[PlacedOrder | idempotency.StoredResponse]:
        """Queue the order for the next batch; the future resolves once it is durable.

        With a key already stored (and live), the future resolves to that key's stored
        response instead, and nothing is written: the caller replays it if the request
        is the same, and refuses it if not. The write happens whether or not
        anyone still awaits the future.
        """
        if self._closed:
            raise IngestClosed("The service is shutting down; retry against a running instance.")
        pending = _Pending(order, keyed)
        self._queue.put_nowait(pending)
        return pending.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH_ORDERS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as error:
                log.exception("writing a batch of %d orders failed", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            await self._write_alone(batch[0])
            return
        try:
            outcomes, notices = await self._transaction(batch)
        except IntegrityError:
            # Someone else (another process) took a key or stock moved under us:
            # write the orders one by one so only the offending one fails.
            for pending in batch:
                await self._write_alone(pending)
            return
        self._answer(batch, outcomes, notices)

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            outcomes, notices = await self._transaction([pending])
        except IntegrityError:
            error: Exception = (
                IdempotencyKeyInUse(
                    "Another request with this Idempotency-Key was stored first; "
                    "retry to get its response."
                )
                if pending.keyed is not None
                else RetailError("The order could not be stored; retry.")
            )
            pending.future.set_exception(error)
            return
        self._answer([pending], outcomes, notices)

    async def _transaction(self, batch: list[_Pending]) -> tuple[list[Outcome], list[OrderNotice]]:
        now = self._clock.now()
        expires_at = now + self._ttl

        def write(connection: Connection) -> list[Outcome]:
            keys = [p.keyed.key for p in batch if p.keyed is not None]
            stored = idempotency.find_live(connection=connection, keys=keys, now=now)
            replays = [stored.get(p.keyed.key) if p.keyed else None for p in batch]
            new = [p.order for p, replay in zip(batch, replays, strict=True) if replay is None]
            placed = iter(place_orders(connection=connection, orders=new, now=now))
            outcomes: list[Outcome] = [
                next(placed) if replay is None else replay for replay in replays
            ]
            records = [
                (
                    p.keyed.key,
                    idempotency.StoredResponse(
                        p.keyed.request_hash, outcome.id, 202, p.keyed.render(outcome)
                    ),
                )
                for p, outcome in zip(batch, outcomes, strict=True)
                if p.keyed is not None and isinstance(outcome, PlacedOrder)
            ]
            idempotency.store(
                connection=connection, records=records, now=now, expires_at=expires_at
            )
            return outcomes

        outcomes = await self._db.run_write(write)
        notices = [
            OrderNotice(
                order_id=outcome.id,
                event_id=outcome.created_event.id,
                kind="created",
                status=OrderStatus.QUEUED,
                step=None,
                at=now,
                detail=outcome.created_event.detail,
            )
            for outcome in outcomes
            if isinstance(outcome, PlacedOrder) and outcome.created_event is not None
        ]
        return outcomes, notices

    def _answer(
        self,
        batch: list[_Pending],
        outcomes: list[Outcome],
        notices: list[OrderNotice],
    ) -> None:
        self.batches += 1
        placed = [o for o in outcomes if isinstance(o, PlacedOrder)]
        self.orders += len(placed)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, RetailError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        contexts = {pending.order.id: pending.context for pending in batch}
        for notice in notices:
            contexts[notice.order_id].run(self._bus.publish, notice)
        if placed:
            self._on_committed(placed)
