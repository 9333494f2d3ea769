"""Idempotency records: the first response to a keyed `POST /orders`, kept for replay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from retail.store.base import StoredResponse
from retail.store.sql.models import IdempotencyRecord, table

__all__ = ["StoredResponse", "find", "find_live", "purge_expired", "store"]

records_table = table(IdempotencyRecord)
_FIND_LIVE = select(
    records_table.c.key,
    records_table.c.request_hash,
    records_table.c.order_id,
    records_table.c.response_status,
    records_table.c.response_body,
).where(
    records_table.c.key.in_(bindparam("keys", expanding=True)),
    records_table.c.expires_at > bindparam("now"),
)


async def find(*, session: AsyncSession, key: str, now: datetime) -> StoredResponse | None:
    """The live record for `key`, or None (never seen, or expired)."""
    rows = await session.execute(_FIND_LIVE, {"keys": [key], "now": now})
    return next((_stored(row) for row in rows), None)


def find_live(
    *, connection: Connection, keys: list[str], now: datetime
) -> dict[str, StoredResponse]:
    """The live records among `keys`, by key (one query, for a batch)."""
    if not keys:
        return {}
    return {
        row.key: _stored(row) for row in connection.execute(_FIND_LIVE, {"keys": keys, "now": now})
    }


def _stored(row: Any) -> StoredResponse:  # a row of _FIND_LIVE
    return StoredResponse(row.request_hash, row.order_id, row.response_status, row.response_body)


_DELETE_EXPIRED = delete(records_table).where(
    records_table.c.key.in_(bindparam("keys", expanding=True)),
    records_table.c.expires_at <= bindparam("now"),
)
_INSERT = insert(records_table)


def store(
    *,
    connection: Connection,
    records: list[tuple[str, StoredResponse]],
    now: datetime,
    expires_at: datetime,
) -> None:
    """Insert records; an expired record under the same key is replaced."""
    if not records:
        return
    keys = [key for key, _ in records]
    connection.execute(_DELETE_EXPIRED, {"keys": keys, "now": now})
    connection.execute(
        _INSERT,
        [
            {
                "key": key,
                "request_hash": r.request_hash,
                "order_id": r.order_id,
                "response_status": r.status,
                "response_body": r.body,
                "created_at": now,
                "expires_at": expires_at,
            }
            for key, r in records
        ],
    )


async def purge_expired(*, session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
