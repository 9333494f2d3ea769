"""The queries that must stay fast with millions of orders use an index, never a sort.

Checked on SQLite with EXPLAIN QUERY PLAN: no full table scan of orders and no
temporary B-tree for ORDER BY, whatever the number of rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, or_, select
from sqlalchemy.dialects import sqlite

from retail.core.types import OrderStatus
from retail.store.sql.engine import Database
from retail.store.sql.migrations import upgrade_to_head
from retail.store.sql.models import Order

NOW = datetime(2030, 1, 1, tzinfo=UTC)

QUERIES: dict[str, Select[Any]] = {
    "newest first": select(Order).order_by(Order.seq.desc()).limit(51),
    "next page": select(Order).where(Order.seq < 500_000).order_by(Order.seq.desc()).limit(51),
    "by status": select(Order)
    .where(Order.status == OrderStatus.QUEUED.value, Order.seq < 500_000)
    .order_by(Order.seq.desc())
    .limit(51),
    "by customer": select(Order)
    .where(Order.customer_id == "alice", Order.seq < 500_000)
    .order_by(Order.seq.desc())
    .limit(51),
    "by priority": select(Order)
    .where(Order.priority == 0, Order.seq < 500_000)
    .order_by(Order.seq.desc())
    .limit(51),
    "claim: next queued in start order": select(Order.seq)
    .where(
        Order.status == OrderStatus.QUEUED.value,
        or_(Order.start_deadline.is_(None), Order.start_deadline > NOW),
    )
    .order_by(Order.priority, Order.seq)
    .limit(1),
    "oldest queued": select(Order.created_at)
    .where(Order.status == OrderStatus.QUEUED.value)
    .order_by(Order.seq)
    .limit(1),
    "claim: expired leases": select(Order.seq)
    .where(Order.status == OrderStatus.PROCESSING.value, Order.lease_expires_at <= NOW)
    .order_by(Order.seq)
    .limit(1),
    "by id": select(Order).where(Order.id == uuid.UUID(int=0)),
}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_query_uses_an_index(name: str, tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    try:
        await upgrade_to_head(db.writer)
        compiled = QUERIES[name].compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
        )
        async with db.writer.connect() as connection:
            rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            plan = " | ".join(str(row[-1]) for row in rows)
    finally:
        await db.dispose()
    assert "TEMP B-TREE" not in plan, plan  # never sorts the matching rows
    if name != "newest first":  # that one walks the primary key backwards and stops at 51
        assert "SCAN orders" not in plan, plan
