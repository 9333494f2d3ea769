"""Orders: placing them (stock reserved in the same transaction), reading, cancelling.

`insert_orders` writes a whole batch in a handful of statements: it locks the
products the batch needs, decides every order in memory against that stock
(`retail.core.orders.allocate`: each order all or nothing, in arrival order), then
inserts every accepted order, line and first event with one multi-row statement each.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from retail.core import events as core
from retail.core.errors import InvalidTransition, OrderNotFound, RetailError
from retail.core.events import OrderEvent as Event
from retail.core.orders import Allocation, NewOrder, Placed, Stock, allocate
from retail.core.types import OrderStatus
from retail.store.base import OrderQuery
from retail.store.sql import products
from retail.store.sql.bulk import BulkInsert
from retail.store.sql.fleet import Notice, updated, xact_id_column
from retail.store.sql.models import Order, OrderEvent, OrderLine, Product, table

products_table = table(Product)


orders_table = table(Order)
lines_table = table(OrderLine)
events_table = table(OrderEvent)

# The batch's statements, built once: a statement object caches its own cache key, so
# executing it again goes straight to the compiled form.
_STOCK = (
    select(
        products_table.c.sku,
        products_table.c.stock,
        products_table.c.unit_price,
        products_table.c.currency,
    )
    .where(products_table.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(products_table.c.sku)
)
_STOCK_LOCKED = _STOCK.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds the lock
_TAKE_STOCK = (
    update(products_table)
    .where(
        products_table.c.sku == bindparam("b_sku"),
        products_table.c.stock >= bindparam("b_taken"),
    )
    .values(stock=products_table.c.stock - bindparam("b_taken"), updated_at=bindparam("b_now"))
)
_INSERT_ORDERS = BulkInsert(
    orders_table,
    (
        "id",
        "customer_id",
        "status",
        "service_level",
        "skipped_steps",
        "total",
        "currency",
        "line_count",
        "created_at",
        "updated_at",
        "step_index",
        "lease_token",
        "priority",
        "start_deadline",
    ),
)
_INSERT_LINES = BulkInsert(lines_table, ("order_id", "sku", "quantity", "unit_price"))
_INSERT_EVENTS = BulkInsert(events_table, ("order_id", "kind", "status", "step", "at", "detail"))


def insert_orders(
    *, connection: Connection, orders: Sequence[NewOrder], now: datetime
) -> list[Placed | RetailError]:
    """Reserve stock for and insert each order; per order, what was stored or why not.

    One read of the stock the batch needs (locked on PostgreSQL; on SQLite the
    transaction's `BEGIN IMMEDIATE` holds the lock), `allocate` decides every order
    in arrival order, then one multi-row statement per table writes the accepted ones.
    """
    skus = sorted({sku for order in orders for sku, _ in order.items})
    query = _STOCK_LOCKED if connection.dialect.name == "postgresql" else _STOCK
    stock = {
        row.sku: Stock(row.stock, row.unit_price, row.currency)
        for row in connection.execute(query, {"skus": skus})
    }
    decided, taken = allocate(orders, stock)
    accepted = [outcome for outcome in decided if isinstance(outcome, Allocation)]
    if not accepted:
        return [outcome for outcome in decided if isinstance(outcome, RetailError)]
    connection.execute(
        _TAKE_STOCK,
        [
            {"b_sku": sku, "b_taken": quantity, "b_now": now}
            for sku, quantity in sorted(taken.items())
        ],
    )
    queued = OrderStatus.QUEUED.value
    seqs = _INSERT_ORDERS.returning(
        connection,
        [
            (
                a.order.id,
                a.order.customer_id,
                queued,
                a.order.service_level.value,
                a.order.skipped_steps,
                a.total,
                a.currency,
                len(a.lines),
                now,
                now,
                0,
                0,
                a.order.priority.rank,
                a.order.start_deadline,
            )
            for a in accepted
        ],
        key="id",
        value="seq",
    )
    _INSERT_LINES.execute(
        connection,
        [
            (a.order.id, line.sku, line.quantity, line.unit_price)
            for a in accepted
            for line in a.lines
        ],
    )
    details = [a.created_detail() for a in accepted]
    event_ids = _INSERT_EVENTS.returning(
        connection,
        [
            (a.order.id, "created", queued, None, now, detail)
            for a, detail in zip(accepted, details, strict=True)
        ],
        key="order_id",
        value="id",
    )
    placed = iter(
        [
            Placed(
                a.view(seq=seq, now=now),
                Event(event_id, a.order.id, "created", OrderStatus.QUEUED, None, now, detail),
            )
            for a, seq, event_id, detail in zip(accepted, seqs, event_ids, details, strict=True)
        ]
    )
    return [next(placed) if isinstance(o, Allocation) else o for o in decided]


async def get_order(*, session: AsyncSession, order_id: uuid.UUID) -> Order:
    order = await session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.lines))
    )
    if order is None:
        raise OrderNotFound(f"No order with id {order_id}.", order_id=str(order_id))
    return order


async def list_orders(
    *, session: AsyncSession, query: OrderQuery
) -> tuple[Sequence[Order], int | None]:
    """Newest first, keyset-paginated on `seq`; returns the page and the next cursor."""
    statement = select(Order).options(selectinload(Order.lines)).order_by(Order.seq.desc())
    if query.status is not None:
        statement = statement.where(Order.status == query.status.value)
    if query.customer_id is not None:
        statement = statement.where(Order.customer_id == query.customer_id)
    if query.priority is not None:
        statement = statement.where(Order.priority == query.priority.rank)
    if query.before_seq is not None:
        statement = statement.where(Order.seq < query.before_seq)
    limit = query.limit
    rows = (await session.scalars(statement.limit(limit + 1))).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


async def list_events(
    *, session: AsyncSession, order_id: uuid.UUID, after_id: int = 0
) -> Sequence[OrderEvent]:
    exists = await session.scalar(select(Order.seq).where(Order.id == order_id))
    if exists is None:
        raise OrderNotFound(f"No order with id {order_id}.", order_id=str(order_id))
    return (
        await session.scalars(
            select(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.id > after_id)
            .order_by(OrderEvent.id)
        )
    ).all()


async def add_event(
    *,
    session: AsyncSession,
    order_id: uuid.UUID,
    kind: str,
    status: OrderStatus,
    at: datetime,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> OrderEvent:
    event = OrderEvent(
        order_id=order_id, kind=kind, status=status.value, step=step, at=at, detail=detail
    )
    session.add(event)
    await session.flush()
    return event


def core_event(event: OrderEvent) -> core.OrderEvent:
    """A stored event as the value the rest of the service speaks."""
    return core.OrderEvent(
        id=event.id,
        order_id=event.order_id,
        kind=event.kind,
        status=OrderStatus(event.status),
        step=event.step,
        at=event.at,
        detail=event.detail,
    )


async def release_stock(*, session: AsyncSession, order_id: uuid.UUID, now: datetime) -> None:
    lines = await session.execute(
        select(OrderLine.sku, OrderLine.quantity).where(OrderLine.order_id == order_id)
    )
    await products.restock(session=session, lines=[(r.sku, r.quantity) for r in lines], now=now)


async def cancel_order(
    *, session: AsyncSession, order_id: uuid.UUID, now: datetime
) -> tuple[OrderEvent, Notice | None]:
    """Cancel a queued order and give its stock back, exactly once; and on PostgreSQL
    what the transaction's notice will say (the order left the queue)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    xid_column = xact_id_column(postgres)
    cancelled = (
        await session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == OrderStatus.QUEUED.value)
            .values(status=OrderStatus.CANCELLED.value, finished_at=now, updated_at=now)
            .returning(Order.seq, Order.priority, Order.customer_id, *xid_column)
        )
    ).first()
    if cancelled is None:
        status = await session.scalar(select(Order.status).where(Order.id == order_id))
        if status is None:
            raise OrderNotFound(f"No order with id {order_id}.", order_id=str(order_id))
        raise InvalidTransition(
            f"Order {order_id} is {status}: only a queued order can be cancelled, "
            "before fulfilment starts.",
            order_status=status,
        )
    await release_stock(session=session, order_id=order_id, now=now)
    event = await add_event(
        session=session,
        order_id=order_id,
        kind="cancelled",
        status=OrderStatus.CANCELLED,
        at=now,
        detail={"stock_released": True},
    )
    left = [[cancelled.seq, cancelled.priority, cancelled.customer_id]]
    return event, updated(cancelled.xid if postgres else None, left=left)
