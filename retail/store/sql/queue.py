"""The orders table as a work queue: claims, leases and fenced transitions.

A worker claims the oldest available order (queued, or processing under an
expired lease) by setting itself as the lease owner and incrementing
`lease_token`. Every later write by that worker is conditional on the token it
got (`WHERE lease_token = :token`): a worker whose lease was taken over cannot
overwrite the newer owner's state; it sees `LeaseLost` and walks away.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from retail.core.events import iso
from retail.core.types import OrderStatus, Priority, ServiceLevel
from retail.store.base import Claim, LeaseLost
from retail.store.sql.models import Order, OrderEvent
from retail.store.sql.orders import add_event, core_event, release_stock

__all__ = ["LeaseLost", "claim_next", "expire_due", "finish", "release_leases", "step_boundary"]


async def claim_next(
    *, session: AsyncSession, owner: str, now: datetime, lease_s: float
) -> Claim | None:
    """Claim the next available order, or return None when there is none."""
    postgres = session.get_bind().dialect.name == "postgresql"
    candidates = [
        # Orders whose worker vanished come first: they are older than anything queued.
        (
            and_(Order.status == OrderStatus.PROCESSING.value, Order.lease_expires_at <= now),
            (Order.seq,),
        ),
        # Then the queued ones in start order; one whose deadline passed never starts.
        (
            and_(
                Order.status == OrderStatus.QUEUED.value,
                or_(Order.start_deadline.is_(None), Order.start_deadline > now),
            ),
            (Order.priority, Order.seq),
        ),
    ]
    for condition, start_order in candidates:
        query = select(Order.seq).where(condition).order_by(*start_order).limit(1)
        if postgres:
            query = query.with_for_update(skip_locked=True)
        seq = await session.scalar(query)
        if seq is not None:
            break
    else:
        return None
    row = (
        await session.execute(
            update(Order)
            .where(Order.seq == seq, condition)
            .values(
                status=OrderStatus.PROCESSING.value,
                lease_owner=owner,
                lease_token=Order.lease_token + 1,
                lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=func.coalesce(Order.started_at, now),
                updated_at=now,
            )
            .returning(
                Order.id,
                Order.lease_token,
                Order.step_index,
                Order.line_count,
                Order.service_level,
                Order.created_at,
                Order.started_at,
                Order.priority,
                Order.customer_id,
            )
        )
    ).one_or_none()
    if row is None:  # taken between the select and the update (another process)
        return None
    resumed = row.lease_token > 1
    event = await add_event(
        session=session,
        order_id=row.id,
        kind="resumed" if resumed else "started",
        status=OrderStatus.PROCESSING,
        at=now,
        detail={"worker": owner, "attempt": row.lease_token, "from_step": row.step_index},
    )
    return Claim(
        order_id=row.id,
        seq=seq,
        token=row.lease_token,
        step_index=row.step_index,
        line_count=row.line_count,
        service_level=ServiceLevel(row.service_level),
        resumed=resumed,
        event=core_event(event),
        created_at=row.created_at,
        started_at=row.started_at,
        priority=Priority.of_rank(row.priority),
        customer_id=row.customer_id,
    )


async def _fenced(session: AsyncSession, claim: Claim, now: datetime, **values: Any) -> None:
    updated = await session.scalar(
        update(Order)
        .where(
            Order.id == claim.order_id,
            Order.lease_token == claim.token,
            Order.status == OrderStatus.PROCESSING.value,
        )
        .values(updated_at=now, **values)
        .returning(Order.seq)
    )
    if updated is None:
        raise LeaseLost(str(claim.order_id))


async def step_boundary(
    *,
    session: AsyncSession,
    claim: Claim,
    now: datetime,
    completed: tuple[str, int, float] | None,
    starting: tuple[str, float] | None,
    lease_s: float,
) -> list[OrderEvent]:
    """Record the end of one step and/or the start of the next, renewing the lease.

    `completed` is (step name, new step_index, seconds it took); `starting` is
    (step name, planned seconds). The lease is extended past the planned delay.
    """
    values: dict[str, Any] = {}
    if completed is not None:
        values["step_index"] = completed[1]
    planned = starting[1] if starting is not None else 0.0
    values["lease_expires_at"] = now + timedelta(seconds=lease_s + planned)
    await _fenced(session, claim, now, **values)
    events = []
    if completed is not None:
        events.append(
            await add_event(
                session=session,
                order_id=claim.order_id,
                kind="step_completed",
                status=OrderStatus.PROCESSING,
                step=completed[0],
                at=now,
                detail={"took_s": round(completed[2], 6)},
            )
        )
    if starting is not None:
        events.append(
            await add_event(
                session=session,
                order_id=claim.order_id,
                kind="step_started",
                status=OrderStatus.PROCESSING,
                step=starting[0],
                at=now,
                detail={"planned_s": round(starting[1], 6)},
            )
        )
    return events


async def finish(
    *,
    session: AsyncSession,
    claim: Claim,
    now: datetime,
    status: OrderStatus,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> OrderEvent:
    """Move the order to a terminal state; a failure gives its stock back (once)."""
    await _fenced(
        session,
        claim,
        now,
        status=status.value,
        finished_at=now,
        failure_reason=reason,
        lease_owner=None,
        lease_expires_at=None,
    )
    if status is OrderStatus.FAILED:
        await release_stock(session=session, order_id=claim.order_id, now=now)
    return await add_event(
        session=session,
        order_id=claim.order_id,
        kind=status.value,
        status=status,
        at=now,
        detail={**(detail or {}), **({"reason": reason} if reason else {})},
    )


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


async def expire_due(*, session: AsyncSession, now: datetime) -> list[tuple[OrderEvent, Priority]]:
    """End the queued orders whose start deadline is `now` or earlier: `expired`, stock back.

    Conditional on `queued`, so a cancel or claim in between wins and nothing ends twice.
    """
    rows = (
        await session.execute(
            update(Order)
            .where(Order.status == OrderStatus.QUEUED.value, Order.start_deadline <= now)
            .values(status=OrderStatus.EXPIRED.value, finished_at=now, updated_at=now)
            .returning(Order.id, Order.priority, Order.start_deadline)
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
    return expired


async def any_due(*, session: AsyncSession, now: datetime) -> bool:
    """Whether a queued order's start deadline is `now` or earlier."""
    found = await session.scalar(
        select(Order.seq)
        .where(Order.status == OrderStatus.QUEUED.value, Order.start_deadline <= now)
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
