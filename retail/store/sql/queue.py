"""The orders table as a work queue: claims, leases and fenced transitions.

A worker claims the oldest available order (queued, or processing under an
expired lease) by setting itself as the lease owner and incrementing
`lease_token`. Every later write by that worker is conditional on the token it
got (`WHERE lease_token = :token`): a worker whose lease was taken over cannot
overwrite the newer owner's state; it sees `LeaseLost` and walks away.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate

from retail.core.events import OrderEvent as Event
from retail.core.events import iso
from retail.core.types import OrderStatus, Priority, ServiceLevel
from retail.store.base import Claim, EventSpec, LeaseLost, Transition, Transitioned
from retail.store.sql.bulk import BulkInsert
from retail.store.sql.fleet import XACT_ID, Notice, updated, xact_id_column
from retail.store.sql.models import Order, OrderEvent, OrderLine, Product, table
from retail.store.sql.orders import add_event, release_stock

__all__ = ["LeaseLost", "claim_many", "expire_due", "release_leases", "transition"]

PROCESSING = OrderStatus.PROCESSING.value
_orders = table(Order)

# The batch's statements, built once (see `orders.py`).
_ROWS_PER_UPDATE = 240  # 4 values a row: under SQLite's 999 parameters of old versions
_IDS_PER_READ = 900
_lines = table(OrderLine)
_products = table(Product)
_EVENTS = BulkInsert(table(OrderEvent), ("order_id", "kind", "status", "step", "at", "detail"))
# PostgreSQL: each order's lease token, the rows locked (in id order), and the
# transaction's id its notice will carry. SQLite reads the same (`_tokens`).
_TOKENS_LOCKED = (
    select(_orders.c.id, _orders.c.lease_token, literal_column(XACT_ID).label("xid"))
    .where(_orders.c.id.in_(bindparam("ids", expanding=True)), _orders.c.status == PROCESSING)
    .order_by(_orders.c.id)
    .with_for_update()
)
_FENCE = and_(
    _orders.c.id == bindparam("b_id"),
    _orders.c.lease_token == bindparam("b_token"),
    _orders.c.status == PROCESSING,
)
_NEW_STEP = func.coalesce(bindparam("b_step", type_=Integer), _orders.c.step_index)
_STEP = (
    update(_orders)
    .where(_FENCE)
    .values(
        step_index=_NEW_STEP, lease_expires_at=bindparam("b_lease"), updated_at=bindparam("b_now")
    )
)
_END = (
    update(_orders)
    .where(_FENCE)
    .values(
        step_index=_NEW_STEP,
        status=bindparam("b_status"),
        failure_reason=bindparam("b_reason"),
        finished_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        lease_owner=None,
        lease_expires_at=None,
    )
)


# A claim's statements, built once: `c_now` is the claim's time, `c_limit` how many
# it may take, `c_seqs` those it chose.
_NOW = bindparam("c_now", type_=_orders.c.created_at.type)
_CLAIMABLE: tuple[tuple[ColumnElement[bool], tuple[Any, ...]], ...] = (
    # Orders whose worker vanished come first: they are older than anything queued.
    (
        and_(_orders.c.status == PROCESSING, _orders.c.lease_expires_at <= _NOW),
        (_orders.c.seq,),
    ),
    # Then the queued ones in start order; one whose deadline passed never starts (one
    # that starts exactly at it is in time, as the policy plans it).
    (
        and_(
            _orders.c.status == OrderStatus.QUEUED.value,
            or_(_orders.c.start_deadline.is_(None), _orders.c.start_deadline >= _NOW),
        ),
        (_orders.c.priority, _orders.c.seq),
    ),
)
_PICKS = tuple(
    select(_orders.c.seq).where(condition).order_by(*start_order).limit(bindparam("c_limit"))
    for condition, start_order in _CLAIMABLE
)
# PostgreSQL: the chosen rows locked, those another claim holds passed over.
_PICKS_LOCKED = tuple(pick.with_for_update(skip_locked=True) for pick in _PICKS)
_CLAIM = (
    update(_orders)
    .where(
        _orders.c.seq.in_(bindparam("c_seqs", expanding=True)),
        or_(*(condition for condition, _ in _CLAIMABLE)),
    )
    .values(
        status=PROCESSING,
        lease_owner=bindparam("c_owner"),
        lease_token=_orders.c.lease_token + 1,
        lease_expires_at=bindparam("c_lease"),
        # Never before the order was created: `now` was read before this transaction,
        # which may claim an order committed since.
        started_at=func.coalesce(
            _orders.c.started_at,
            case((_orders.c.created_at > _NOW, _orders.c.created_at), else_=_NOW),
        ),
        updated_at=_NOW,
    )
    .returning(
        _orders.c.seq,
        _orders.c.id,
        _orders.c.lease_token,
        _orders.c.step_index,
        _orders.c.line_count,
        _orders.c.service_level,
        _orders.c.created_at,
        _orders.c.started_at,
        _orders.c.priority,
        _orders.c.customer_id,
    )
)
# PostgreSQL: and the transaction's id its notice will carry.
_CLAIM_XID: ReturningUpdate[Any] = _CLAIM.returning(literal_column(XACT_ID).label("xid"))


def claim_many(
    *, connection: Connection, owner: str, now: datetime, lease_s: float, limit: int
) -> tuple[list[Claim], Notice | None]:
    """Claim up to `limit` orders in start order: one select per kind, one update, one
    insert of their `started`/`resumed` events. On PostgreSQL the chosen rows are locked
    (`SKIP LOCKED`: two processes never wait on, or take, the same order), and what the
    transaction's notice will say comes back with the claims (see `fleet.updated`)."""
    postgres = connection.dialect.name == "postgresql"
    seqs: list[int] = []
    for pick in _PICKS_LOCKED if postgres else _PICKS:
        seqs.extend(connection.scalars(pick, {"c_now": now, "c_limit": limit - len(seqs)}).all())
        if len(seqs) >= limit:
            break
    if not seqs:
        return [], None
    returned = connection.execute(
        _CLAIM_XID if postgres else _CLAIM,
        {
            "c_seqs": seqs,
            "c_now": now,
            "c_owner": owner,
            "c_lease": now + timedelta(seconds=lease_s),
        },
    ).all()
    place = {seq: index for index, seq in enumerate(seqs)}
    rows = sorted(returned, key=lambda row: place[row.seq])
    details = [
        {"worker": owner, "attempt": row.lease_token, "from_step": row.step_index} for row in rows
    ]
    kinds = ["resumed" if row.lease_token > 1 else "started" for row in rows]
    ids = _EVENTS.returning(
        connection,
        [
            (row.id, kind, PROCESSING, None, max(now, row.created_at), detail)
            for row, kind, detail in zip(rows, kinds, details, strict=True)
        ],
        key="order_id",
        value="id",
    )
    claims = [
        Claim(
            order_id=row.id,
            seq=row.seq,
            token=row.lease_token,
            step_index=row.step_index,
            line_count=row.line_count,
            service_level=ServiceLevel(row.service_level),
            resumed=row.lease_token > 1,
            event=Event(
                event_id,
                row.id,
                kind,
                OrderStatus.PROCESSING,
                None,
                max(now, row.created_at),
                detail,
            ),
            created_at=row.created_at,
            started_at=row.started_at,
            priority=Priority.of_rank(row.priority),
            customer_id=row.customer_id,
        )
        for row, kind, detail, event_id in zip(rows, kinds, details, ids, strict=True)
    ]
    if not postgres:
        return claims, None
    # A resumed order was in flight already (under an expired lease): it moves.
    entries = {
        claim.seq: [
            claim.seq,
            claim.priority.rank,
            claim.service_level.value,
            claim.step_index,
            owner,
        ]
        for claim in claims
    }
    notice = updated(
        rows[0].xid if rows else None,
        started=[entries[c.seq] for c in claims if not c.resumed],
        moved=[entries[c.seq] for c in claims if c.resumed],
    )
    return claims, notice


def transition(
    *, connection: Connection, batch: Sequence[Transition], now: datetime, lease_s: float
) -> tuple[list[Transitioned], Notice | None]:
    """Apply a batch of claims' transitions in one transaction, each fenced on its own.

    One read of the batch's orders (locked on PostgreSQL, in id order; on SQLite the
    transaction's `BEGIN IMMEDIATE` holds the lock) says which claims still hold their
    order; only those are written: one statement for the step boundaries, one for the
    endings, the stock of failed orders back, and the events in at most three multi-row
    inserts (an order's first event in the first, its second in the second...), so each
    order's events keep their order. On PostgreSQL, what the transaction's notices will
    say comes back with the results: the orders that ended.
    """
    if not batch:
        return [], None

    def _fence(change: Transition, now: datetime) -> dict[str, Any]:
        return {
            "b_id": change.claim.order_id,
            "b_token": change.claim.token,
            "b_step": change.completed[1] if change.completed else None,
            "b_lease": now + timedelta(seconds=change.lease_for(lease_s)),
            "b_now": now,
        }

    postgres = connection.dialect.name == "postgresql"
    ids = sorted({change.claim.order_id for change in batch})
    xid = None
    if postgres:
        locked = connection.execute(_TOKENS_LOCKED, {"ids": ids}).all()
        tokens: dict[uuid.UUID, int] = {row.id: row.lease_token for row in locked}
        xid = locked[0].xid if locked else None
    else:
        tokens = _tokens(connection, ids)
    live = [change for change in batch if tokens.get(change.claim.order_id) == change.claim.token]
    steps = [_fence(change, now) for change in live if change.ending is None]
    if steps:
        _update_steps(connection, steps, now)
    endings = [(change, change.ending) for change in live if change.ending is not None]
    if endings:
        connection.execute(
            _END,
            [
                {**_fence(change, now), "b_status": ending.status.value, "b_reason": ending.reason}
                for change, ending in endings
            ],
        )
        failed = [c.claim.order_id for c, e in endings if e.status is OrderStatus.FAILED]
        if failed:
            _restock(connection, failed, now)
    specs = [change.events() for change in live]
    recorded: list[list[Event]] = [[] for _ in live]
    for round_ in range(max((len(s) for s in specs), default=0)):
        members = [i for i, s in enumerate(specs) if len(s) > round_]
        rows = [(live[i].claim.order_id, *_spec_row(specs[i][round_], now)) for i in members]
        event_ids = _EVENTS.returning(connection, rows, key="order_id", value="id")
        for i, event_id in zip(members, event_ids, strict=True):
            kind, status, step, detail = specs[i][round_]
            recorded[i].append(
                Event(event_id, live[i].claim.order_id, kind, status, step, now, detail)
            )
    written = {id(change): events for change, events in zip(live, recorded, strict=True)}
    results: list[Transitioned] = [
        written.get(id(change)) or LeaseLost(str(change.claim.order_id)) for change in batch
    ]
    if xid is None or not endings:
        return results, None
    ended = [[change.claim.seq, change.claim.customer_id] for change, _ in endings]
    return results, updated(xid, ended=ended)


def _tokens(connection: Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """SQLite: the lease token of each of these orders still in fulfilment.

    What `_TOKENS` reads, sent as the driver's SQL: compiling its `IN` list for each
    batch size costs more than the read (the transaction's lock is held already).
    """
    dialect = connection.dialect
    to_id = _orders.c.id.type.dialect_impl(dialect).bind_processor(dialect)
    assert to_id is not None
    stored = {to_id(order_id): order_id for order_id in ids}
    keys = list(stored)
    tokens: dict[uuid.UUID, int] = {}
    for start in range(0, len(keys), _IDS_PER_READ):
        chunk = keys[start : start + _IDS_PER_READ]
        rows = connection.exec_driver_sql(
            f"SELECT id, lease_token FROM {_orders.name} "
            f"WHERE id IN ({', '.join(['?'] * len(chunk))}) AND status = '{PROCESSING}'",
            tuple(chunk),
        )
        tokens.update((stored[key], token) for key, token in rows)
    return tokens


def _update_steps(connection: Connection, steps: list[dict[str, Any]], now: datetime) -> None:
    """The step boundaries' fenced update.

    On SQLite one `UPDATE … FROM (VALUES …)` statement per 240 orders rather than
    `executemany`, which steps once per row and lets go of the GIL each time, so a big
    batch would keep the writer thread (and with it every write waiting) for as many
    turns of the event loop. PostgreSQL pipelines `executemany` in one round trip.
    """
    dialect = connection.dialect
    if dialect.name != "sqlite" or _sqlite_version(connection) < (3, 33, 0):
        connection.execute(_STEP, steps)
        return
    to_id = _orders.c.id.type.dialect_impl(dialect).bind_processor(dialect)
    to_time = _orders.c.lease_expires_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert to_id is not None and to_time is not None
    stamp = to_time(now)
    for start in range(0, len(steps), _ROWS_PER_UPDATE):
        chunk = steps[start : start + _ROWS_PER_UPDATE]
        values: list[Any] = [stamp]
        for step in chunk:
            values += [
                to_id(step["b_id"]),
                step["b_token"],
                step["b_step"],
                to_time(step["b_lease"]),
            ]
        rows = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
        connection.exec_driver_sql(
            f"UPDATE {_orders.name} SET step_index = COALESCE(v.column3, step_index), "
            f"lease_expires_at = v.column4, updated_at = ? FROM (VALUES {rows}) AS v "
            f"WHERE {_orders.name}.id = v.column1 AND lease_token = v.column2 "
            f"AND status = '{PROCESSING}'",
            tuple(values),
        )


def _sqlite_version(connection: Connection) -> tuple[int, ...]:
    version: tuple[int, ...] = connection.dialect.dbapi.sqlite_version_info  # type: ignore[union-attr]
    return version


def _restock(connection: Connection, order_ids: list[uuid.UUID], now: datetime) -> None:
    """Give the stock of these (failed) orders back, in SKU order (one lock order)."""
    lines = connection.execute(
        select(_lines.c.sku, func.sum(_lines.c.quantity))
        .where(_lines.c.order_id.in_(order_ids))
        .group_by(_lines.c.sku)
        .order_by(_lines.c.sku)
    ).all()
    if lines:
        connection.execute(
            update(_products)
            .where(_products.c.sku == bindparam("b_sku"))
            .values(stock=_products.c.stock + bindparam("b_quantity"), updated_at=now),
            [{"b_sku": sku, "b_quantity": int(quantity)} for sku, quantity in lines],
        )


def _spec_row(spec: EventSpec, now: datetime) -> tuple[Any, ...]:
    kind, status, step, detail = spec
    return (kind, status.value, step, now, detail)


async def release_leases(*, session: AsyncSession, owner: str, now: datetime) -> int:
    """Give up this owner's unfinished orders so the next worker resumes them at once."""
    rows = (
        await session.execute(
            update(Order)
            .where(Order.lease_owner == owner, Order.status == OrderStatus.PROCESSING.value)
            .values(lease_expires_at=now, updated_at=now)
            .returning(Order.id)
        )
    ).all()
    for row in rows:
        await add_event(
            session=session,
            order_id=row.id,
            kind="lease_released",
            status=OrderStatus.PROCESSING,
            at=now,
            detail={"worker": owner},
        )
    return len(rows)


async def expire_due(
    *, session: AsyncSession, now: datetime
) -> tuple[list[tuple[OrderEvent, Priority]], Notice | None]:
    """End the queued orders whose start deadline is before `now`: `expired`, stock back;
    and on PostgreSQL what the transaction's notice will say (the orders that left).

    Conditional on `queued`, so a cancel or claim in between wins and nothing ends twice.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    xid_column = xact_id_column(postgres)
    rows = (
        await session.execute(
            update(Order)
            .where(Order.status == OrderStatus.QUEUED.value, Order.start_deadline < now)
            .values(status=OrderStatus.EXPIRED.value, finished_at=now, updated_at=now)
            .returning(
                Order.id,
                Order.seq,
                Order.priority,
                Order.customer_id,
                Order.start_deadline,
                *xid_column,
            )
        )
    ).all()
    expired = []
    for row in sorted(rows, key=lambda r: (r.priority, r.start_deadline)):
        await release_stock(session=session, order_id=row.id, now=now)
        event = await add_event(
            session=session,
            order_id=row.id,
            kind="expired",
            status=OrderStatus.EXPIRED,
            at=now,
            detail={"start_deadline": iso(row.start_deadline), "stock_released": True},
        )
        expired.append((event, Priority.of_rank(row.priority)))
    left = [[row.seq, row.priority, row.customer_id] for row in rows]
    return expired, updated(rows[0].xid if postgres and rows else None, left=left)


async def any_due(*, session: AsyncSession, now: datetime) -> bool:
    """Whether a queued order's start deadline is before `now`."""
    found = await session.scalar(
        select(Order.seq)
        .where(Order.status == OrderStatus.QUEUED.value, Order.start_deadline < now)
        .limit(1)
    )
    return found is not None


async def queued_by_priority(*, session: AsyncSession) -> dict[Priority, int]:
    rows = await session.execute(
        select(Order.priority, func.count())
        .where(Order.status == OrderStatus.QUEUED.value)
        .group_by(Order.priority)
    )
    counts = dict.fromkeys(Priority, 0)
    for rank, count in rows:
        counts[Priority.of_rank(rank)] = count
    return counts


async def count_by_status(*, session: AsyncSession) -> dict[OrderStatus, int]:
    rows = await session.execute(
        select(Order.status, func.count())
        .where(Order.status.in_([OrderStatus.QUEUED.value, OrderStatus.PROCESSING.value]))
        .group_by(Order.status)
    )
    return {OrderStatus(status): count for status, count in rows}


async def count_active_by_customer(*, session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Order.customer_id, func.count())
        .where(Order.status.in_([OrderStatus.QUEUED.value, OrderStatus.PROCESSING.value]))
        .group_by(Order.customer_id)
    )
    return {str(customer): int(count) for customer, count in rows}


async def oldest_queued_at(*, session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(Order.created_at)
        .where(Order.status == OrderStatus.QUEUED.value)
        .order_by(Order.seq)
        .limit(1)
    )
