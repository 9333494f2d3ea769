"""Engines and sessions.

SQLite allows one writer at a time. Rather than let connections fight over the
file lock (and fail with "database is locked"), this process writes through one
connection (`writer`), whose transactions start with `BEGIN IMMEDIATE`, and reads
through a small pool of its own (`reader`); WAL mode lets readers run beside the
writer. On PostgreSQL both are the same pooled engine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN and SAVEPOINT behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """The process's engines and session factories; built and disposed by the lifespan."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
            self.reader = _sqlite_engine(url, begin="BEGIN", pool_size=4)
        else:
            self.writer = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.reader = self.writer
        database = make_url(url).database if self.is_sqlite else None
        self.path = database if database and database != ":memory:" else None
        self._file_id: tuple[int, int] | None = None
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed on success, rolled back on error."""
        async with self._write_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session, session.begin():
            yield session

    def pin_file(self) -> None:
        """SQLite: remember which file this process opened, to notice if it is replaced."""
        if self.path is not None:
            stat = os.stat(self.path)
            self._file_id = (stat.st_dev, stat.st_ino)

    def file_problem(self) -> str | None:
        """SQLite: why the file at the database path is not the one this process writes.

        Open connections keep working on a deleted or replaced file, so queries alone do
        not notice; what they write would be lost. None when all is well (and on PostgreSQL).
        """
        if self.path is None or self._file_id is None:
            return None
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return f"the database file {self.path} is gone (deleted, or its directory removed)"
        except OSError as error:
            return f"the database file {self.path} cannot be reached: {error}"
        if (stat.st_dev, stat.st_ino) != self._file_id:
            return f"the database file {self.path} was replaced by another file"
        return None

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
