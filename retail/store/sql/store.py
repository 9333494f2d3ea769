"""`SqlStore`: the `Store` protocol on SQLite or PostgreSQL, through SQLAlchemy.

It keeps `Database`'s design (one writer at a time on SQLite, `run_write` for the
batch writer, a reader pool) and the module functions of this package; what it adds
is the translation to core values, so nothing of SQLAlchemy leaves it.

A batch of orders is one transaction. If the database refuses it (an `IntegrityError`:
a key or stock taken by another process; a `DataError` or any refusal of one order's
values, such as PostgreSQL refusing a NUL character in text), the orders are written
again one by one, so that only the order at fault fails: its outcome is then a
`RetailError`, and `place_orders` raises only when the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, or_, select, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from retail.core.errors import IdempotencyKeyInUse, InvalidOrder, RetailError
from retail.core.events import OrderEvent
from retail.core.orders import Line, OrderView, Placed, accepted_document
from retail.core.types import OrderStatus, Priority, ServiceLevel
from retail.store.base import (
    ACCEPTED,
    Claim,
    Ending,
    Expired,
    LeaseLost,
    OrderQuery,
    Outcome,
    Placing,
    Product,
    Store,
    StoredResponse,
    Transition,
    Transitioned,
)
from retail.store.sql import idempotency, orders, pgbatch, products, queue
from retail.store.sql import models as m
from retail.store.sql.engine import Database
from retail.store.sql.fleet import Notice
from retail.store.sql.migrations import schema_status, upgrade_to_head
from retail.store.sql.orders import core_event
from retail.store.sql.outage import database_outage


class SqlStore:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.db = Database(url, pool_size=pool_size)
        # PostgreSQL: the batch writer's own connection, in autocommit (see `pgbatch`).
        self._batch_connection: AsyncConnection | None = None
        self._batch_lock = asyncio.Lock()
        self._on_changed: Callable[[Mapping[str, Any]], None] | None = None

    # --- life -------------------------------------------------------------------------
    async def prepare(self, *, migrate: bool, seed_catalogue: bool, now: datetime) -> int:
        if migrate:
            await upgrade_to_head(self.db.writer)
        added = 0
        if seed_catalogue:
            async with self.db.write() as session:
                added = await products.seed_catalogue(session=session, now=now)
        await asyncio.to_thread(self.db.pin_file)
        return added

    async def close(self) -> None:
        await self._drop_batch_connection()
        await self.db.dispose()

    def server_pids(self) -> frozenset[int]:
        return frozenset(self.db.server_pids)

    def follow_changes(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        self._on_changed = listener

    def _changed(self, notice: Notice | None) -> None:
        """A transaction of this store committed: tell the listener what its notices say."""
        if notice is not None and self._on_changed is not None:
            self._on_changed(notice)

    async def problems(self) -> list[str]:
        file_problem = await asyncio.to_thread(self.db.file_problem)
        if file_problem is not None:
            return [file_problem]
        async with self.db.read() as session:
            await session.execute(text("SELECT 1"))
        current, head = await schema_status(self.db.reader)
        if current != head:
            return [f"schema at {current}, code expects {head}: run `retail db upgrade`"]
        return []

    # --- placing --------------------------------------------------------------------------
    async def place_orders(
        self, batch: Sequence[Placing], *, now: datetime, keys_expire_at: datetime
    ) -> list[Outcome]:
        if not batch:
            return []
        try:
            return await self._write(batch, now, keys_expire_at)
        except DBAPIError as error:
            if _unreachable(error):
                raise
            if len(batch) == 1:
                return [_refused(batch[0], error)]
        # One order of the batch is at fault: write them one by one, so only it fails.
        outcomes: list[Outcome] = []
        for placing in batch:
            try:
                outcomes.extend(await self._write([placing], now, keys_expire_at))
            except DBAPIError as error:
                outcomes.append(_refused(placing, error))
        return outcomes

    async def _write(
        self, batch: Sequence[Placing], now: datetime, keys_expire_at: datetime
    ) -> list[Outcome]:
        if not self.db.is_sqlite:
            placed = await self._place_in_one_statement(batch, now, keys_expire_at)
            if placed is not None:
                return placed

        def write(connection: Connection) -> list[Outcome]:
            keys = [p.keyed.key for p in batch if p.keyed is not None]
            stored = idempotency.find_live(connection=connection, keys=keys, now=now)
            replays = [stored.get(p.keyed.key) if p.keyed else None for p in batch]
            new = [p.order for p, replay in zip(batch, replays, strict=True) if replay is None]
            inserted = orders.insert_orders(connection=connection, orders=new, now=now)
            if inserted and connection.dialect.name == "postgresql":
                xid = connection.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar_one()
                inserted = [
                    dataclasses.replace(p, xid=int(xid)) if isinstance(p, Placed) else p
                    for p in inserted
                ]
            placed = iter(inserted)
            outcomes: list[Outcome] = [
                next(placed) if replay is None else replay for replay in replays
            ]
            records = [
                (
                    p.keyed.key,
                    StoredResponse(
                        p.keyed.request_hash,
                        outcome.order.id,
                        ACCEPTED,
                        accepted_document(outcome.order, p.order),
                    ),
                )
                for p, outcome in zip(batch, outcomes, strict=True)
                if p.keyed is not None and isinstance(outcome, Placed)
            ]
            idempotency.store(
                connection=connection, records=records, now=now, expires_at=keys_expire_at
            )
            return outcomes

        return await self.db.run_write(write)

    async def _place_in_one_statement(
        self, batch: Sequence[Placing], now: datetime, keys_expire_at: datetime
    ) -> list[Outcome] | None:
        """PostgreSQL: the batch in one statement (`pgbatch`); None when it must go the
        general way, which then also decides what any error of this one meant."""
        async with self._batch_lock:
            try:
                connection = self._batch_connection
                if connection is None:
                    connection = await self.db.writer.connect()
                    self._batch_connection = connection
                    await connection.execution_options(isolation_level="AUTOCOMMIT")
                return await connection.run_sync(
                    pgbatch.place, batch, now=now, keys_expire_at=keys_expire_at
                )
            except SQLAlchemyError:
                await self._drop_batch_connection()
                return None

    async def _drop_batch_connection(self) -> None:
        connection, self._batch_connection = self._batch_connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                await connection.invalidate()

    async def find_response(self, key: str, *, now: datetime) -> StoredResponse | None:
        async with self.db.read() as session:
            return await idempotency.find(session=session, key=key, now=now)

    async def purge_expired_responses(self, *, now: datetime) -> int:
        async with self.db.write() as session:
            return await idempotency.purge_expired(session=session, now=now)

    # --- reading --------------------------------------------------------------------------
    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        async with self.db.read() as session:
            return _view(await orders.get_order(session=session, order_id=order_id))

    async def list_orders(self, query: OrderQuery) -> tuple[list[OrderView], int | None]:
        async with self.db.read() as session:
            rows, cursor = await orders.list_orders(session=session, query=query)
            return [_view(row) for row in rows], cursor

    async def queue_position(self, order: OrderView) -> int:
        async with self.db.read() as session:
            ahead = await session.scalar(
                select(func.count())
                .select_from(m.Order)
                .where(
                    m.Order.status == OrderStatus.QUEUED.value,
                    or_(
                        m.Order.priority < order.priority.rank,
                        and_(m.Order.priority == order.priority.rank, m.Order.seq < order.seq),
                    ),
                )
            )
        return int(ahead or 0) + 1

    async def list_events(self, order_id: uuid.UUID, *, after_id: int = 0) -> list[OrderEvent]:
        async with self.db.read() as session:
            rows = await orders.list_events(session=session, order_id=order_id, after_id=after_id)
            return [core_event(row) for row in rows]

    async def count_by_status(self) -> dict[OrderStatus, int]:
        async with self.db.read() as session:
            counts = await queue.count_by_status(session=session)
        return {OrderStatus.QUEUED: 0, OrderStatus.PROCESSING: 0, **counts}

    async def queued_by_priority(self) -> dict[Priority, int]:
        async with self.db.read() as session:
            return await queue.queued_by_priority(session=session)

    async def count_active_by_customer(self) -> dict[str, int]:
        async with self.db.read() as session:
            return await queue.count_active_by_customer(session=session)

    async def oldest_queued_at(self) -> datetime | None:
        async with self.db.read() as session:
            return await queue.oldest_queued_at(session=session)

    # --- changing -------------------------------------------------------------------------
    async def cancel_order(self, order_id: uuid.UUID, *, now: datetime) -> OrderEvent:
        async with self.db.write() as session:
            event, notice = await orders.cancel_order(session=session, order_id=order_id, now=now)
        self._changed(notice)
        return core_event(event)

    async def expire_due(self, *, now: datetime) -> list[Expired]:
        async with self.db.read() as session:  # most of the time there is none: no write
            if not await queue.any_due(session=session, now=now):
                return []
        async with self.db.write() as session:
            expired, notice = await queue.expire_due(session=session, now=now)
        self._changed(notice)
        return [Expired(core_event(event), priority) for event, priority in expired]

    # --- the work queue -------------------------------------------------------------------
    async def claim_next(self, *, owner: str, now: datetime, lease_s: float) -> Claim | None:
        claims = await self.claim_many(owner=owner, now=now, lease_s=lease_s, limit=1)
        return claims[0] if claims else None

    async def claim_many(
        self, *, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Claim]:
        if limit < 1:
            return []
        claims, notice = await self.db.run_write(
            lambda connection: queue.claim_many(
                connection=connection, owner=owner, now=now, lease_s=lease_s, limit=limit
            )
        )
        self._changed(notice)
        return claims

    async def transition(
        self, batch: Sequence[Transition], *, now: datetime, lease_s: float
    ) -> list[Transitioned]:
        if not batch:
            return []
        results, notice = await self.db.run_write(
            lambda connection: queue.transition(
                connection=connection, batch=batch, now=now, lease_s=lease_s
            )
        )
        self._changed(notice)
        return results

    async def _one(self, change: Transition, now: datetime, lease_s: float) -> list[OrderEvent]:
        (result,) = await self.transition([change], now=now, lease_s=lease_s)
        if isinstance(result, LeaseLost):
            raise result
        return result

    async def step_boundary(
        self,
        claim: Claim,
        *,
        now: datetime,
        completed: tuple[str, int, float] | None,
        starting: tuple[str, float] | None,
        lease_s: float,
    ) -> list[OrderEvent]:
        return await self._one(Transition(claim, completed, starting), now, lease_s)

    async def finish(
        self,
        claim: Claim,
        *,
        now: datetime,
        status: OrderStatus,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> OrderEvent:
        change = Transition(claim, ending=Ending(status, reason, detail))
        return (await self._one(change, now, 0.0))[-1]

    async def release_leases(self, *, owner: str, now: datetime) -> int:
        async with self.db.write() as session:
            return await queue.release_leases(session=session, owner=owner, now=now)

    # --- the catalogue --------------------------------------------------------------------
    async def list_products(self) -> list[Product]:
        async with self.db.read() as session:
            return [_product(row) for row in await products.list_products(session=session)]

    async def get_product(self, sku: str) -> Product:
        async with self.db.read() as session:
            return _product(await products.get_product(session=session, sku=sku))

    async def upsert_product(
        self, *, sku: str, name: str, unit_price: int, stock: int, currency: str, now: datetime
    ) -> tuple[Product, bool]:
        async with self.db.write() as session:
            row, created = await products.upsert_product(
                session=session,
                sku=sku,
                name=name,
                unit_price=unit_price,
                stock=stock,
                currency=currency,
                now=now,
            )
            return _product(row), created


def _unreachable(error: DBAPIError) -> bool:
    """The database, not one order, is the problem: retrying order by order cannot help."""
    return not _data_error(error) and database_outage(error) is not None


def _data_error(error: DBAPIError) -> bool:
    """A value the database refuses (SQLSTATE class 22), on either driver."""
    if isinstance(error, DataError):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def _refused(placing: Placing, error: DBAPIError) -> RetailError:
    """Why one order written on its own was not stored."""
    if isinstance(error, IntegrityError):
        if placing.keyed is not None:
            return IdempotencyKeyInUse(
                "Another request with this Idempotency-Key was stored first; "
                "retry to get its response."
            )
        return RetailError("The order could not be stored; retry.")
    if _data_error(error):
        return InvalidOrder(
            "The order could not be stored: the database refused one of its values "
            "(a text field with a character it does not accept, or a value too long)."
        )
    return RetailError("The order could not be stored; retry.")


def _view(order: m.Order) -> OrderView:
    return OrderView(
        id=order.id,
        seq=order.seq,
        customer_id=order.customer_id,
        status=OrderStatus(order.status),
        service_level=ServiceLevel(order.service_level),
        skipped_steps=tuple(order.skipped_steps),
        lines=tuple(Line(line.sku, line.quantity, line.unit_price) for line in order.lines),
        total=order.total,
        currency=order.currency,
        created_at=order.created_at,
        updated_at=order.updated_at,
        started_at=order.started_at,
        finished_at=order.finished_at,
        failure_reason=order.failure_reason,
        step_index=order.step_index,
        priority=Priority.of_rank(order.priority),
        start_deadline=order.start_deadline,
    )


def _product(product: m.Product) -> Product:
    return Product(
        sku=product.sku,
        name=product.name,
        unit_price=product.unit_price,
        currency=product.currency,
        stock=product.stock,
        updated_at=product.updated_at,
    )


if TYPE_CHECKING:  # mypy checks the class against the protocol

    def _conforms(store: SqlStore) -> Store:
        return store
