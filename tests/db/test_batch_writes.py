"""A batch of orders written as one transaction: every order all or nothing, in order."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select

from retail.core.errors import InsufficientStock, RetailError, UnknownSku
from retail.core.types import OrderStatus, ServiceLevel
from retail.store.sql import orders as order_repo
from retail.store.sql.bulk import MAX_PARAMETERS
from retail.store.sql.models import OrderEvent, table
from retail.store.sql.orders import NewOrder, PlacedOrder, place_orders
from tests.conftest import ADMIN, StartApp

# More created events than one multi-row statement takes (six values each).
BATCH = 3 * (MAX_PARAMETERS // 6) + 7


def new_order(sku: str, quantity: int = 1) -> NewOrder:
    return NewOrder(
        id=uuid.uuid4(),
        customer_id="batch",
        items=((sku, quantity),),
        service_level=ServiceLevel.FULL,
        skipped_steps=(),
        queue_position=1,
    )


async def test_a_large_batch_stores_every_order_with_its_own_created_event(
    start_app: StartApp,
) -> None:
    running = await start_app(workers_enabled=False)
    db, now = running.services.db, running.services.clock.now()
    put = await running.client.put(
        "/products/BATCH-1",
        json={"name": "Batch", "unit_price": 300, "stock": BATCH - 2},
        headers=ADMIN,
    )
    assert put.status_code == 201
    orders = [new_order("BATCH-1") for _ in range(BATCH)]
    orders.insert(5, new_order("NOPE-1"))

    def write(connection: Connection) -> list[PlacedOrder | RetailError]:
        return place_orders(connection=connection, orders=orders, now=now)

    outcomes = await db.run_write(write)

    # In arrival order: the unknown SKU is refused, the stock runs out for the last two.
    assert isinstance(outcomes[5], UnknownSku)
    assert all(isinstance(o, InsufficientStock) for o in outcomes[-2:])
    placed = [o for o in outcomes if isinstance(o, PlacedOrder)]
    assert [p.id for p in placed] == [o.id for o in orders[:5] + orders[6:-2]]
    assert all(p.total == 300 and p.status is OrderStatus.QUEUED for p in placed)
    assert (await running.client.get("/products/BATCH-1")).json()["stock"] == 0

    events = table(OrderEvent)
    async with db.read() as session:
        stored = dict((await session.execute(select(events.c.id, events.c.order_id))).all())
        order = await order_repo.get_order(session=session, order_id=placed[-1].id)
    ids = [p.created_event.id for p in placed if p.created_event is not None]
    assert len(set(ids)) == len(placed)
    assert all(stored[p.created_event.id] == p.id for p in placed if p.created_event)
    assert order.created_at == now and [line.sku for line in order.lines] == ["BATCH-1"]
