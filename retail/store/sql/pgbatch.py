"""PostgreSQL: a batch of orders in one statement, holding no row lock across round trips.

The general path (`orders.insert_orders` in a transaction) locks the batch's products
(`SELECT … FOR UPDATE`) and keeps them locked through half a dozen more round trips
and the commit. Every batch takes stock, so with several API processes on one
database each batch waited for the other processes' batches, including the moments
their processes were off the CPU between two statements.

Here a batch is two round trips on a connection of its own in autocommit mode:

1. read the stock and prices of the batch's SKUs, without a lock, and decide every
   order with `allocate`, as the general path does;
2. if every order is accepted, one statement (data-modifying CTEs, arrays bound as
   parameters) takes the stock of each SKU, guarded by `stock >= taken` and by the
   price and currency the decision used, and inserts the orders, lines, `created`
   events and idempotency records. It commits on its own, so the products' row locks
   are held for one statement's execution and its commit, all inside the server.

If any guard fails (another process took the stock, or a price changed, since the
read), the statement raises `division_by_zero` on purpose, which undoes all of it; a
duplicate key (an expired idempotency record, a key stored meanwhile by another
process) or any refusal of a value undoes it too. Then, and whenever the decision
refused an order, the batch goes the general way, which decides under the lock: so
the outcome is always the one the general path would give, stock is never oversold,
and a key is never stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from retail.core.events import OrderEvent
from retail.core.orders import Allocation, Placed, Stock, accepted_document, allocate
from retail.core.types import OrderStatus
from retail.store.base import ACCEPTED, Outcome, Placing, StoredResponse
from retail.store.sql import idempotency

READ_STOCK = "SELECT sku, stock, unit_price, currency FROM products WHERE sku = ANY($1::text[])"

PLACE = """
WITH taken AS (
    UPDATE products AS p
    SET stock = p.stock - t.taken, updated_at = $5
    FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
        AS t(sku, taken, unit_price, currency)
    WHERE p.sku = t.sku AND p.stock >= t.taken
        AND p.unit_price = t.unit_price AND p.currency = t.currency
    RETURNING p.sku
),
checked AS (  -- every SKU taken, or the whole statement fails (and undoes the updates)
    SELECT CASE WHEN count(*) = cardinality($1::text[]) THEN 0
                ELSE 1 / (count(*) - count(*))::int END AS ok
    FROM taken
),
new_orders AS (
    INSERT INTO orders (id, customer_id, status, service_level, skipped_steps, total,
                        currency, line_count, created_at, updated_at, step_index,
                        lease_token, priority, start_deadline)
    SELECT o.id, o.customer_id, 'queued', o.service_level, o.skipped_steps::json, o.total,
           o.currency, o.line_count, $5, $5, 0, 0, o.priority, o.start_deadline
    FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[],
                $12::int[], $13::smallint[], $14::timestamp[]) WITH ORDINALITY
        AS o(id, customer_id, service_level, skipped_steps, total, currency, line_count,
             priority, start_deadline, n)
    CROSS JOIN checked
    ORDER BY o.n
    RETURNING id, seq
),
new_lines AS (
    INSERT INTO order_lines (order_id, sku, quantity, unit_price)
    SELECT l.order_id, l.sku, l.quantity, l.unit_price
    FROM unnest($15::uuid[], $16::text[], $17::int[], $18::bigint[]) WITH ORDINALITY
        AS l(order_id, sku, quantity, unit_price, n)
    CROSS JOIN checked
    ORDER BY l.n
),
new_events AS (
    INSERT INTO order_events (order_id, kind, status, step, at, detail)
    SELECT e.order_id, 'created', 'queued', NULL, $5, e.detail::json
    FROM unnest($6::uuid[], $19::text[]) WITH ORDINALITY AS e(order_id, detail, n)
    CROSS JOIN checked
    ORDER BY e.n
    RETURNING order_id, id
),
new_keys AS (
    INSERT INTO idempotency_keys (key, request_hash, order_id, response_status,
                                  response_body, created_at, expires_at)
    SELECT k.key, k.request_hash, k.order_id, k.status, k.body::json, $5, $25
    FROM unnest($20::text[], $21::text[], $22::uuid[], $23::int[], $24::text[])
        AS k(key, request_hash, order_id, status, body)
    CROSS JOIN checked
)
SELECT 0 AS kind, id, seq AS value FROM new_orders
UNION ALL
SELECT 1, order_id, id FROM new_events
UNION ALL
SELECT 2, NULL::uuid, pg_current_xact_id()::text::bigint
"""


def _naive(value: datetime | None) -> datetime | None:
    """A UTC column's value (the columns hold naive UTC)."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def place(
    connection: Connection,
    batch: Sequence[Placing],
    *,
    now: datetime,
    keys_expire_at: datetime,
) -> list[Outcome] | None:
    """Store the batch on an autocommit `connection`: the outcome of each order, or None
    when it must go the general way (some order refused, or the stock read is stale).

    Raises the database's error if the statement fails (nothing of it is stored).
    """
    keys = [p.keyed.key for p in batch if p.keyed is not None]
    stored = idempotency.find_live(connection=connection, keys=keys, now=now)
    replays = [stored.get(p.keyed.key) if p.keyed else None for p in batch]
    new = [p for p, replay in zip(batch, replays, strict=True) if replay is None]
    if not new:
        return list(replays)  # type: ignore[arg-type]  # every one a replay
    skus = sorted({sku for p in new for sku, _ in p.order.items})
    stock = {
        row.sku: Stock(row.stock, row.unit_price, row.currency)
        for row in connection.exec_driver_sql(READ_STOCK, (skus,))
    }
    decided, taken = allocate([p.order for p in new], stock)
    if not all(isinstance(outcome, Allocation) for outcome in decided):
        return None  # a refusal is decided under the lock, on the latest stock
    accepted: list[Allocation] = decided  # type: ignore[assignment]
    stamp = _naive(now)
    details = [a.created_detail() for a in accepted]
    documents: dict[Any, tuple[str, StoredResponse]] = {}
    for p, a in zip(new, accepted, strict=True):
        if p.keyed is not None:
            body = accepted_document(a.view(seq=0, now=now), a.order)  # `seq` is not in it
            documents[a.order.id] = (
                p.keyed.key,
                StoredResponse(p.keyed.request_hash, a.order.id, ACCEPTED, body),
            )
    taken_skus = sorted(taken)
    priced = {line.sku: (line.unit_price, a.currency) for a in accepted for line in a.lines}
    lines = [(a.order.id, line) for a in accepted for line in a.lines]
    records = list(documents.values())
    rows = connection.exec_driver_sql(
        PLACE,
        (
            taken_skus,
            [taken[sku] for sku in taken_skus],
            [priced[sku][0] for sku in taken_skus],  # as the orders were priced
            [priced[sku][1] for sku in taken_skus],
            stamp,
            [a.order.id for a in accepted],
            [a.order.customer_id for a in accepted],
            [a.order.service_level.value for a in accepted],
            [json.dumps(list(a.order.skipped_steps)) for a in accepted],
            [a.total for a in accepted],
            [a.currency for a in accepted],
            [len(a.lines) for a in accepted],
            [a.order.priority.rank for a in accepted],
            [_naive(a.order.start_deadline) for a in accepted],
            [order_id for order_id, _ in lines],
            [line.sku for _, line in lines],
            [line.quantity for _, line in lines],
            [line.unit_price for _, line in lines],
            [json.dumps(detail) for detail in details],
            [key for key, _ in records],
            [r.request_hash for _, r in records],
            [r.order_id for _, r in records],
            [r.status for _, r in records],
            [json.dumps(r.body) for _, r in records],
            _naive(keys_expire_at),
        ),
    ).all()
    # The driver gives uuids of its own type: matched by their text.
    seqs = {str(row.id): row.value for row in rows if row.kind == 0}
    event_ids = {str(row.id): row.value for row in rows if row.kind == 1}
    xid = next(row.value for row in rows if row.kind == 2)  # the notice carries it too
    placed = iter(
        [
            Placed(
                a.view(seq=seqs[str(a.order.id)], now=now),
                OrderEvent(
                    event_ids[str(a.order.id)],
                    a.order.id,
                    "created",
                    OrderStatus.QUEUED,
                    None,
                    now,
                    detail,
                ),
                xid,
            )
            for a, detail in zip(accepted, details, strict=True)
        ]
    )
    outcomes: list[Outcome] = [next(placed) if replay is None else replay for replay in replays]
    return outcomes
