"""SQLite: the writes that wait together share one transaction (one commit, one fsync),
each in a savepoint of its own, so one that fails is rolled back alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from retail.core.types import OrderStatus
from retail.store.base import Placing, Transition
from retail.store.sql.store import SqlStore
from tests.store.conftest import NOW
from tests.store.test_conformance import order, placed, product


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", pool_size=2)
    await store.prepare(migrate=True, seed_catalogue=False, now=NOW)
    try:
        yield store
    finally:
        await store.close()


async def test_waiting_writes_share_one_commit_and_a_failing_one_is_rolled_back_alone(
    store: SqlStore,
) -> None:
    await product(store, "MUG-1", stock=10)
    await product(store, "CAP-1", stock=10)
    (first,) = await placed(store, order(("MUG-1", 1)))
    claims = await store.claim_many(owner="w", now=NOW, lease_s=5, limit=1)
    before = store.db.bulk_transactions

    def fails(connection: Connection) -> None:
        connection.execute(text("UPDATE products SET stock = 0 WHERE sku = 'CAP-1'"))
        raise RuntimeError("this write fails after changing a row")

    placing, failing, stepping = await asyncio.gather(
        store.place_orders([Placing(order(("MUG-1", 2)))], now=NOW, keys_expire_at=NOW),
        store.db.run_write(fails),
        store.transition([Transition(claims[0], starting=("reserve", 1.0))], now=NOW, lease_s=5),
        return_exceptions=True,
    )
    assert store.db.bulk_transactions - before < 3  # shared (the first may go on its own)
    assert isinstance(failing, RuntimeError)
    assert not isinstance(placing, BaseException) and len(placing) == 1
    assert not isinstance(stepping, BaseException)
    assert [e.kind for result in stepping if isinstance(result, list) for e in result] == [
        "step_started"
    ]
    assert (await store.get_product("MUG-1")).stock == 7
    assert (await store.get_product("CAP-1")).stock == 10  # the failed write left nothing
    assert (await store.get_order(first.order.id)).status is OrderStatus.PROCESSING


async def test_a_transaction_that_fails_whole_leaves_the_writer_able_to_write(
    store: SqlStore,
) -> None:
    # Alone, a failing write fails its whole transaction (no savepoint): rolled back, and
    # the writer's next transactions (on the connection it keeps between them) commit.
    await product(store, "MUG-1", stock=10)

    def fails(connection: Connection) -> None:
        connection.execute(text("UPDATE products SET stock = 0 WHERE sku = 'MUG-1'"))
        raise RuntimeError("the whole transaction fails")

    with pytest.raises(RuntimeError):
        await store.db.run_write(fails)
    assert (await store.get_product("MUG-1")).stock == 10
    for expected in (9, 8):
        await store.db.run_write(
            lambda connection: connection.execute(
                text("UPDATE products SET stock = stock - 1 WHERE sku = 'MUG-1'")
            )
        )
        assert (await store.get_product("MUG-1")).stock == expected
