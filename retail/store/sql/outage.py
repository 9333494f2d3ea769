"""Which database errors mean the database itself is down or too slow.

Such an error is no fault of one request or one order: the store raises it as it is
(a batch is not retried order by order), and the web layer answers `503` with
`Retry-After` (`retail.web.problems`).
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

# Connection exceptions, insufficient resources, operator intervention, no such
# database, and a database not accepting connections.
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "3D000", "55000")


def _chain(error: BaseException) -> list[BaseException]:
    """The error, what the driver raised under it, and their causes (each once)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen) or len(seen) > 8:
            continue
        seen.append(item)
        todo += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return seen


def database_outage(error: BaseException) -> str | None:
    """Why `error` means the database is down or too slow (a short cause), or None when
    it is some other failure."""
    for item in _chain(error):
        if isinstance(item, sa_exc.TimeoutError):
            return "connection pool timeout"
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return "connection lost"
        if isinstance(item, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            return "connection lost"
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATE_PREFIXES):
            return f"database unavailable (SQLSTATE {sqlstate})"
        if isinstance(item, ConnectionError):
            return "connection refused or reset"
        if isinstance(item, OSError):
            return "network or file error"
        if isinstance(item, TimeoutError):
            return "timed out"
        if isinstance(item, sa_exc.OperationalError | sa_exc.InterfaceError):
            return "database unavailable"
    return None
