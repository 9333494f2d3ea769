"""One fresh `Store` per test, for each implementation: memory, SQLite (a file), PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retail.store.base import Store
from retail.store.memory import MemoryStore
from retail.store.sql.store import SqlStore
from tests.conftest import postgres_database

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty, migrated store with no products."""
    if backend == "memory":
        yield MemoryStore()
        return
    if backend == "sqlite":
        async with _sql(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as store:
            yield store
        return
    async with postgres_database() as url, _sql(url) as store:
        yield store


@asynccontextmanager
async def _sql(url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(url, pool_size=4)
    try:
        await store.prepare(migrate=True, seed_catalogue=False, now=NOW)
        yield store
    finally:
        await store.close()
