"""What the CLI says when the database or a file is not as the command needs it.

Every failure a person can fix becomes one line naming the problem and what to do,
instead of a traceback: `explain()` turns the usual exceptions (an unreachable or
missing PostgreSQL database, an unknown Alembic revision, an SQLite file that cannot be
opened) into that line; `check_database()` tries a connection before a command starts.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from sqlalchemy.engine import make_url


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def explain(error: BaseException, database_url: str) -> str | None:
    """One line saying what went wrong and what to do, or None for an unexpected error."""
    parsed = make_url(database_url)
    sqlite = parsed.drivername.startswith("sqlite")
    for item in _chain(error):
        name = type(item).__name__
        text = str(item).strip().splitlines()[0] if str(item).strip() else name
        if name == "CommandError" and "revision" in text.lower():
            return (
                f"{text.rstrip('.')}: give a revision that exists "
                "(`uv run alembic history` lists them; `head` and `base` always work)"
            )
        if name == "InvalidCatalogNameError":
            database = parsed.database or "retail"
            return (
                f'PostgreSQL database "{database}" does not exist on {_where(database_url)}: '
                f"create it with `createdb -h {parsed.host or 'localhost'} "
                f"-U {parsed.username or 'postgres'} {database}` "
                f"(or `psql -c 'CREATE DATABASE {database}'`)"
            )
        if name in ("InvalidAuthorizationSpecificationError", "InvalidPasswordError"):
            return (
                f"PostgreSQL at {_where(database_url)} refused the login ({text}): "
                "check the user and password in RETAIL_DATABASE_URL"
            )
        if isinstance(item, socket.gaierror):
            return (
                f"cannot find the database host {parsed.host!r} ({item.strerror}): "
                "check RETAIL_DATABASE_URL"
            )
        if isinstance(item, (ConnectionError, TimeoutError)) or (
            isinstance(item, OSError) and not sqlite and item.errno is not None
        ):
            reason = (
                "connection refused"
                if isinstance(item, ConnectionRefusedError)
                else getattr(item, "strerror", None) or name
            )
            return (
                f"cannot reach PostgreSQL at {_where(database_url)} ({reason}): is it running? "
                "Check RETAIL_DATABASE_URL (or --database-url)"
            )
        if sqlite and name == "OperationalError" and "unable to open" in text:
            return (
                f"cannot open the SQLite database {parsed.database!r} (unable to open the "
                "file): check that its directory exists and can be written"
            )
    return None


def sqlite_file_problem(database_url: str) -> str | None:
    """An SQLite file whose directory is missing, found without opening it."""
    from pathlib import Path

    parsed = make_url(database_url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    directory = Path(parsed.database).parent
    if not directory.is_dir():
        return (
            f"cannot open the SQLite database {parsed.database!r}: the directory "
            f"{str(directory)!r} does not exist; create it or change RETAIL_DATABASE_URL"
        )
    return None


async def check_database(database_url: str) -> str | None:
    """Connect once and run `SELECT 1`; the problem in one line, or None when it works."""
    from sqlalchemy import text

    from retail.store.sql.engine import Database

    problem = sqlite_file_problem(database_url)
    if problem is not None:
        return problem
    database = Database(database_url)
    try:
        async with database.writer.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        message = explain(error, database_url)
        if message is None:
            raise
        return message
    finally:
        await database.dispose()
    return None
