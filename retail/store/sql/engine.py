"""Engines and sessions.

SQLite allows one writer at a time. Rather than let connections fight over the
file lock (and fail with "database is locked"), this process writes through one
connection (`writer`), whose transactions start with `BEGIN IMMEDIATE`, and reads
through a small pool of its own (`reader`); WAL mode lets readers run beside the
writer. On PostgreSQL both are the same pooled engine.

Bulk writes (`run_write`: a synchronous function given one transaction's
connection) are the exception on a SQLite file. Through aiosqlite every statement
is three or four hops to the driver's thread and back; a batch of orders is half a
dozen statements. So they run whole in a thread of their own, on a synchronous
connection to the same file, one hop per transaction. A lock shared with `write()`
keeps the two writer connections from ever waiting on each other's file lock.
Elsewhere `run_write` runs the function on the async writer (`run_sync`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60)
    _configure_sqlite(engine.sync_engine, begin=begin)
    return engine


def _configure_sqlite(engine: Engine, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN and SAVEPOINT behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def _track_server_pids(engine: Engine, pids: set[int]) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        pid = dbapi_connection.driver_connection.get_server_pid()
        record.info["server_pid"] = pid
        pids.add(pid)

    @event.listens_for(engine, "close")
    def _on_close(_dbapi_connection: Any, record: Any) -> None:
        pids.discard(record.info.pop("server_pid", None))


@dataclass(eq=False, slots=True)
class _Waiting:
    """A write waiting for the SQLite writer thread, then its outcome."""

    write: Callable[[Connection], Any]
    done: bool = False
    result: Any = None
    error: Exception | None = None


class Database:
    """The process's engines and session factories; built and disposed by the lifespan."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        # PostgreSQL: the server processes of this process's connections (the sender of
        # a notice names one when this process's own transaction sent it).
        self.server_pids: set[int] = set()
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
            self.reader = _sqlite_engine(url, begin="BEGIN", pool_size=4)
        else:
            self.writer = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.reader = self.writer
            _track_server_pids(self.writer.sync_engine, self.server_pids)
        database = make_url(url).database if self.is_sqlite else None
        self.path = database if database and database != ":memory:" else None
        self._file_id: tuple[int, int] | None = None
        self._write_lock = asyncio.Lock()
        self._bulk_writer: Engine | None = None
        self._bulk_thread: ThreadPoolExecutor | None = None
        self._waiting: list[_Waiting] = []
        self.bulk_transactions = 0  # transactions of the writer thread (`run_write`)
        if self.path is not None:
            sync_url = make_url(url).set(drivername="sqlite+pysqlite")
            # One connection, used by one thread at a time (the bulk thread). Multi-row
            # inserts make a statement per row count: keep them all prepared.
            self._bulk_writer = create_engine(
                sync_url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False, "cached_statements": 1024},
            )
            _configure_sqlite(self._bulk_writer, begin="BEGIN IMMEDIATE")
            self._bulk_thread = ThreadPoolExecutor(1, thread_name_prefix="retail-sqlite-writer")
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed on success, rolled back on error."""
        async with self._writing(), self._write_sessions() as session, session.begin():
            yield session

    def _writing(self) -> AbstractAsyncContextManager[Any]:
        # SQLite: one writer at a time (see the module docstring); PostgreSQL: no limit.
        return self._write_lock if self.is_sqlite else nullcontext()

    async def run_write(self, write: Callable[[Connection], T]) -> T:
        """`write(connection)` inside one transaction, committed if it returns.

        On a SQLite file, the writes waiting together (the ingest batch, the workers'
        transitions, a claim) share one transaction, each in a savepoint of its own:
        one commit, so one fsync, for all of them; one that raises is rolled back alone
        and raises to its caller.
        """
        if self._bulk_writer is None or self._bulk_thread is None:
            async with self._writing(), self.writer.begin() as connection:
                return await connection.run_sync(write)
        waiting = _Waiting(write)
        self._waiting.append(waiting)
        while not waiting.done:
            async with self._write_lock:
                if waiting.done:  # written by the holder before
                    break
                batch, self._waiting = self._waiting, []
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self._bulk_thread, self._commit_together, batch
                    )
                except RuntimeError:
                    # The process is exiting (a server without a lifespan stops the
                    # services in an exit handler): no thread takes work any more, so
                    # the last writes are made here.
                    self._commit_together(batch)
        if waiting.error is not None:
            raise waiting.error
        return cast("T", waiting.result)

    def _commit_together(self, batch: list[_Waiting]) -> None:
        """In the writer thread: the batch's writes in one transaction."""
        assert self._bulk_writer is not None
        self.bulk_transactions += 1
        try:
            with self._bulk_writer.begin() as connection:
                if len(batch) == 1:
                    batch[0].result = batch[0].write(connection)
                else:
                    for waiting in batch:
                        try:
                            with connection.begin_nested():
                                waiting.result = waiting.write(connection)
                        except Exception as error:
                            waiting.error = error
        except Exception as error:  # not committed: every write of the batch failed
            for waiting in batch:
                waiting.error = waiting.error or error
        finally:
            for waiting in batch:
                waiting.done = True

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
        if self._bulk_thread is not None and self._bulk_writer is not None:
            self._bulk_thread.shutdown(wait=True)
            self._bulk_writer.dispose()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
