"""The fleet in PostgreSQL: the `workers` table, heartbeats, and the `retail_fleet` channel.

One connection per process (asyncpg, outside SQLAlchemy's pool) listens on the
channel and does the fleet's few other statements in turn: announcing this process's
workers, their heartbeats, reading the fleet whole, and clearing out dead workers.

Notices are sent by the triggers of migration 0003 when a transaction that changed
orders commits (JSON: `k` kind, `x` transaction id, `t` send time; see
`retail.core.fleet.FleetView.notice`). Workers announce and leave with a notice of
kind `w`. Heartbeats and their ages use the database's clock, so the machines of a
fleet need not agree on the time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import ColumnElement, literal_column, make_url

from retail.core.fleet import FleetState, FleetWorker, Processing, Snapshot
from retail.core.types import Priority, ServiceLevel

CHANNEL = "retail_fleet"
UTC_NOW = "timezone('utc', now())"
# This transaction's id, as the notices it sends carry it (PostgreSQL).
XACT_ID = "pg_current_xact_id()::text"

Notice = dict[str, Any]


def xact_id_column(postgres: bool) -> list[ColumnElement[Any]]:
    """A `RETURNING`/select column with the transaction's id (`xid`), on PostgreSQL."""
    return [literal_column(XACT_ID).label("xid")] if postgres else []


def updated(
    xid: int | str | None,
    *,
    started: list[list[Any]] | None = None,
    moved: list[list[Any]] | None = None,
    ended: list[list[Any]] | None = None,
    left: list[list[Any]] | None = None,
) -> Notice | None:
    """What the notices of a transaction that updated orders say, whole, as the trigger
    `retail_fleet_updated` writes it: orders that started (`[seq, priority, level, step,
    owner]`), moved to another worker (the same), ended (`[seq, customer]`) or left the
    queue unstarted (`[seq, priority, customer]`). None when there is nothing to say
    (or no transaction id: SQLite)."""
    if xid is None:
        return None
    parts = {"s": started, "m": moved, "e": ended, "l": left}
    notice: Notice = {"k": "u", "x": int(xid)}
    notice.update({part: entries for part, entries in parts.items() if entries})
    return notice if len(notice) > 2 else None


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+asyncpg://…`) as asyncpg's DSN."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FleetChannel:
    """The fleet's connection: call `connect` first, `close` at the end."""

    def __init__(self, database_url: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._connection: Any = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def connect(self, on_notice: Callable[[str, int], None], timeout_s: float = 10.0) -> None:
        """Open the connection and listen; `on_notice(payload, pid)` for every notice, with
        the server process of the session that sent it."""
        await self.close()
        connection = await asyncpg.connect(self._dsn, timeout=timeout_s)

        def received(_connection: Any, pid: int, _channel: str, payload: str) -> None:
            on_notice(payload, pid)

        await connection.add_listener(CHANNEL, received)
        self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=2)
            except Exception:
                connection.terminate()

    # --- workers ---------------------------------------------------------------------------

    async def announce(self, worker_id: str, slots: int) -> None:
        """This process is in the fleet and fulfils `slots` orders at once (0: API only);
        again after a stall."""
        async with self._connection.transaction():
            await self._connection.execute(
                f"INSERT INTO workers (id, slots, started_at, heartbeat_at) "
                f"VALUES ($1, $2, {UTC_NOW}, {UTC_NOW}) "
                f"ON CONFLICT (id) DO UPDATE SET slots = $2, heartbeat_at = {UTC_NOW}",
                worker_id,
                slots,
            )
            await self._connection.execute(f'NOTIFY {CHANNEL}, \'{{"k": "w"}}\'')

    async def heartbeat(self, worker_id: str, slots: int) -> bool:
        """Still alive; False if the fleet had given this worker up (announce again)."""
        status = await self._connection.execute(
            f"UPDATE workers SET heartbeat_at = {UTC_NOW}, slots = $2 WHERE id = $1",
            worker_id,
            slots,
        )
        return bool(status != "UPDATE 0")

    async def leave(self, worker_id: str) -> None:
        async with self._connection.transaction():
            await self._connection.execute("DELETE FROM workers WHERE id = $1", worker_id)
            await self._connection.execute(f'NOTIFY {CHANNEL}, \'{{"k": "w"}}\'')

    async def clear_dead(self, dead_after_s: float, now: datetime) -> list[str]:
        """Remove workers silent for `dead_after_s`; their orders' leases end `now`, so any
        live worker resumes them at its next claim. The ids removed."""
        async with self._connection.transaction():
            dead = await self._connection.fetch(
                f"DELETE FROM workers WHERE heartbeat_at < {UTC_NOW} - make_interval(secs => $1) "
                "RETURNING id",
                dead_after_s,
            )
            ids = [row["id"] for row in dead]
            if ids:
                await self._connection.execute(
                    "UPDATE orders SET lease_expires_at = $2 "
                    "WHERE status = 'processing' AND lease_owner = ANY($1::text[])",
                    ids,
                    now.astimezone(UTC).replace(tzinfo=None),
                )
                await self._connection.execute(f'NOTIFY {CHANNEL}, \'{{"k": "w"}}\'')
        return ids

    # --- the whole fleet -------------------------------------------------------------------

    async def read(self, dead_after_s: float, *, per_customer: bool) -> FleetState:
        """Live workers, orders in fulfilment, queued orders per priority, and the
        snapshot all of it was read under (one repeatable-read transaction)."""
        connection = self._connection
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            head = await connection.fetchrow(
                f"SELECT pg_current_snapshot()::text AS snapshot, {UTC_NOW} AS read_at"
            )
            workers = await connection.fetch(
                "SELECT id, slots, started_at, heartbeat_at FROM workers WHERE slots > 0 "
                f"AND heartbeat_at >= {UTC_NOW} - make_interval(secs => $1) ORDER BY id",
                dead_after_s,
            )
            processing = await connection.fetch(
                "SELECT seq, priority, service_level, step_index, lease_owner FROM orders "
                "WHERE status = 'processing'"
            )
            queued = await connection.fetch(
                "SELECT priority, count(*) AS n FROM orders WHERE status = 'queued' "
                "GROUP BY priority"
            )
            active: list[Any] = []
            if per_customer:
                active = await connection.fetch(
                    "SELECT customer_id, count(*) AS n FROM orders "
                    "WHERE status IN ('queued', 'processing') GROUP BY customer_id"
                )
        return FleetState(
            snapshot=Snapshot.parse(head["snapshot"]),
            read_at=_utc(head["read_at"]),
            workers=[
                FleetWorker(
                    id=row["id"],
                    slots=row["slots"],
                    started_at=_utc(row["started_at"]),
                    heartbeat_at=_utc(row["heartbeat_at"]),
                )
                for row in workers
            ],
            processing=[
                Processing(
                    seq=row["seq"],
                    priority=Priority.of_rank(row["priority"]),
                    service_level=ServiceLevel(row["service_level"]),
                    step_index=row["step_index"],
                    owner=row["lease_owner"],
                )
                for row in processing
            ],
            queued={Priority.of_rank(row["priority"]): row["n"] for row in queued},
            active_by_customer={row["customer_id"]: row["n"] for row in active},
        )
