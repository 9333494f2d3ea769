"""Orders: placing them (stock reserved in the same transaction), reading, cancelling.

`place_orders` writes a whole batch in a handful of statements: it locks the
products the batch needs, decides every order in memory against that stock (each
order all or nothing, in arrival order), then inserts every accepted order, line
and first event with one multi-row statement each.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from retail.core.errors import (
    InsufficientStock,
    InvalidTransition,
    OrderNotFound,
    RetailError,
    UnknownSku,
)
from retail.core.types import OrderStatus, ServiceLevel
from retail.store.sql import products
from retail.store.sql.bulk import BulkInsert
from retail.store.sql.models import Order, OrderEvent, OrderLine, Product, table

products_table = table(Product)


class MixedCurrencies(RetailError):
    status, slug, title = 422, "mixed-currencies", "Mixed currencies"


@dataclass(frozen=True, slots=True)
class NewOrder:
    id: uuid.UUID
    customer_id: str
    items: tuple[tuple[str, int], ...]  # (sku, quantity), one per SKU
    service_level: ServiceLevel
    skipped_steps: tuple[str, ...]
    queue_position: int


@dataclass(frozen=True, slots=True)
class PlacedLine:
    sku: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order as stored by `place_orders` (what the 202 response shows)."""

    id: uuid.UUID
    customer_id: str
    status: OrderStatus
    service_level: ServiceLevel
    skipped_steps: list[str]
    lines: list[PlacedLine]
    total: int
    currency: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure_reason: str | None = None
    created_event: CreatedEvent | None = None  # set once stored


@dataclass(frozen=True, slots=True)
class CreatedEvent:
    """The `created` event stored with a placed order (for its notice)."""

    id: int
    detail: dict[str, Any]


@dataclass
class _Stock:
    available: int
    unit_price: int
    currency: str
    taken: int = field(default=0)


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
    ),
)
_INSERT_LINES = BulkInsert(lines_table, ("order_id", "sku", "quantity", "unit_price"))
_INSERT_EVENTS = BulkInsert(events_table, ("order_id", "kind", "status", "step", "at", "detail"))


def place_orders(
    *, connection: Connection, orders: Sequence[NewOrder], now: datetime
) -> list[PlacedOrder | RetailError]:
    """Reserve stock for and insert each order; per order, the order or why it was refused."""
    skus = sorted({sku for order in orders for sku, _ in order.items})
    query = _STOCK_LOCKED if connection.dialect.name == "postgresql" else _STOCK
    stock = {
        row.sku: _Stock(row.stock, row.unit_price, row.currency)
        for row in connection.execute(query, {"skus": skus})
    }

    outcomes: list[_Accepted | RetailError] = []
    for order in orders:
        outcome = _allocate(order, stock)
        if isinstance(outcome, _Accepted):
            for line in outcome.lines:
                stock[line.sku].taken += line.quantity
        outcomes.append(outcome)

    accepted = [outcome for outcome in outcomes if isinstance(outcome, _Accepted)]
    if not accepted:
        return [outcome for outcome in outcomes if isinstance(outcome, RetailError)]
    taken = [(sku, s.taken) for sku, s in stock.items() if s.taken]
    connection.execute(
        _TAKE_STOCK,
        [{"b_sku": sku, "b_taken": quantity, "b_now": now} for sku, quantity in sorted(taken)],
    )
    queued = OrderStatus.QUEUED.value
    _INSERT_ORDERS.execute(
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
            )
            for a in accepted
        ],
    )
    _INSERT_LINES.execute(
        connection,
        [
            (a.order.id, line.sku, line.quantity, line.unit_price)
            for a in accepted
            for line in a.lines
        ],
    )
    event_ids = _INSERT_EVENTS.returning(
        connection,
        [(a.order.id, "created", queued, None, now, a.detail) for a in accepted],
        key="order_id",
        value="id",
    )
    placed = iter(
        [a.placed(now, event_id) for a, event_id in zip(accepted, event_ids, strict=True)]
    )
    return [next(placed) if isinstance(outcome, _Accepted) else outcome for outcome in outcomes]


@dataclass(slots=True)
class _Accepted:
    """An order of the batch that its stock allows, before it is written."""

    order: NewOrder
    lines: list[PlacedLine]
    total: int
    currency: str
    detail: dict[str, Any] = field(init=False)  # what its `created` event records

    def __post_init__(self) -> None:
        self.detail = {
            "service_level": self.order.service_level.value,
            "skipped_steps": list(self.order.skipped_steps),
            "queue_position": self.order.queue_position,
            "total": self.total,
        }

    def placed(self, now: datetime, event_id: int) -> PlacedOrder:
        order = self.order
        return PlacedOrder(
            id=order.id,
            customer_id=order.customer_id,
            status=OrderStatus.QUEUED,
            service_level=order.service_level,
            skipped_steps=list(order.skipped_steps),
            lines=self.lines,
            total=self.total,
            currency=self.currency,
            created_at=now,
            updated_at=now,
            created_event=CreatedEvent(event_id, self.detail),
        )


def _allocate(order: NewOrder, stock: dict[str, _Stock]) -> _Accepted | RetailError:
    unknown = [sku for sku, _ in order.items if sku not in stock]
    if unknown:
        return UnknownSku(
            f"Unknown SKU {', '.join(unknown)}: not in the catalogue (GET /products lists it).",
            skus=unknown,
        )
    short = [
        {"sku": sku, "requested": quantity, "available": stock[sku].available - stock[sku].taken}
        for sku, quantity in order.items
        if stock[sku].available - stock[sku].taken < quantity
    ]
    if short:
        named = ", ".join(
            f"{s['sku']} ({s['available']} left, {s['requested']} ordered)" for s in short
        )
        return InsufficientStock(f"Not enough stock for {named}.", short=short)
    currencies = {stock[sku].currency for sku, _ in order.items}
    if len(currencies) > 1:
        return MixedCurrencies(
            f"Products priced in different currencies ({', '.join(sorted(currencies))}) "
            "cannot share an order; place one order per currency.",
        )
    lines = [PlacedLine(sku, quantity, stock[sku].unit_price) for sku, quantity in order.items]
    return _Accepted(order, lines, sum(line.line_total for line in lines), currencies.pop())


async def get_order(*, session: AsyncSession, order_id: uuid.UUID) -> Order:
    order = await session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.lines))
    )
    if order is None:
        raise OrderNotFound(f"No order with id {order_id}.", order_id=str(order_id))
    return order


async def queue_position(*, session: AsyncSession, order: Order) -> int:
    """1 + the number of queued orders ahead of this one."""
    ahead = await session.scalar(
        select(func.count())
        .select_from(Order)
        .where(Order.status == OrderStatus.QUEUED.value, Order.seq < order.seq)
    )
    return int(ahead or 0) + 1


async def list_orders(
    *,
    session: AsyncSession,
    status: OrderStatus | None,
    customer_id: str | None,
    before_seq: int | None,
    limit: int,
) -> tuple[Sequence[Order], int | None]:
    """Newest first, keyset-paginated on `seq`; returns the page and the next cursor."""
    query = select(Order).options(selectinload(Order.lines)).order_by(Order.seq.desc())
    if status is not None:
        query = query.where(Order.status == status.value)
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
    if before_seq is not None:
        query = query.where(Order.seq < before_seq)
    rows = (await session.scalars(query.limit(limit + 1))).all()
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


async def release_stock(*, session: AsyncSession, order_id: uuid.UUID, now: datetime) -> None:
    lines = await session.execute(
        select(OrderLine.sku, OrderLine.quantity).where(OrderLine.order_id == order_id)
    )
    await products.restock(session=session, lines=[(r.sku, r.quantity) for r in lines], now=now)


async def cancel_order(*, session: AsyncSession, order_id: uuid.UUID, now: datetime) -> OrderEvent:
    """Cancel a queued order and give its stock back, exactly once."""
    cancelled = await session.scalar(
        update(Order)
        .where(Order.id == order_id, Order.status == OrderStatus.QUEUED.value)
        .values(status=OrderStatus.CANCELLED.value, finished_at=now, updated_at=now)
        .returning(Order.seq)
    )
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
    return await add_event(
        session=session,
        order_id=order_id,
        kind="cancelled",
        status=OrderStatus.CANCELLED,
        at=now,
        detail={"stock_released": True},
    )
