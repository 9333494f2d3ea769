"""PostgreSQL: a batch of orders in one statement (`retail.store.sql.pgbatch`).

The batch is decided on stock read without a lock; the statement takes the stock only
if it is still there at the price the decision used, else the batch goes the general
way. These tests make the read stale on purpose and run several stores (as several
API processes would be) against one SKU at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from retail.core.errors import InsufficientStock
from retail.core.orders import Line, NewOrder, Placed, Stock
from retail.store.base import Placing
from retail.store.sql import pgbatch
from retail.store.sql.fleet import FleetChannel
from retail.store.sql.store import SqlStore
from tests.conftest import postgres_database
from tests.store.conftest import NOW, _sql
from tests.store.test_conformance import HOUR, keyed, order, place, product, stock


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        async with _sql(url):  # migrated
            pass
        yield url


@pytest.fixture
def one_statement(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per batch: True if the one statement stored it, False if it went the general way."""
    taken: list[bool] = []
    real = pgbatch.place

    def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            outcomes = real(*args, **kwargs)
        except Exception:
            taken.append(False)
            raise
        taken.append(outcomes is not None)
        return outcomes

    monkeypatch.setattr(pgbatch, "place", spy)
    return taken


def stale_read(monkeypatch: pytest.MonkeyPatch, **seen: Stock) -> None:
    """The decision sees `seen` for these SKUs instead of what the read gave."""
    real = pgbatch.allocate

    def allocate(orders: Sequence[NewOrder], stock: Mapping[str, Stock]) -> Any:
        return real(orders, {**stock, **seen})

    monkeypatch.setattr(pgbatch, "allocate", allocate)


@asynccontextmanager
async def stale_mugs(
    url: str, monkeypatch: pytest.MonkeyPatch, *, stock: int, price: int
) -> AsyncIterator[SqlStore]:
    """A store whose MUG-1 has `stock` at `price`, while the batch's read sees 10 at 250."""
    async with _sql(url) as store:
        await product(store, "MUG-1", stock=stock, price=price)
        stale_read(monkeypatch, **{"MUG-1": Stock(10, 250, "EUR")})
        yield store


async def test_a_batch_is_one_statement_and_reads_back_whole(
    url: str, one_statement: list[bool]
) -> None:
    async with _sql(url) as store:
        await product(store, "MUG-1", stock=10, price=250)
        await product(store, "TEE-M", stock=10, price=1999)
        first, second = order(("MUG-1", 2), ("TEE-M", 1)), order(("TEE-M", 3), customer="bob")
        outcomes = await place(store, Placing(first, keyed("key-1")), second)
        assert one_statement == [True]
        a, b = outcomes
        assert isinstance(a, Placed) and isinstance(b, Placed)
        assert a.order.seq < b.order.seq and a.event.id < b.event.id
        assert await store.get_order(first.id) == a.order
        assert await store.list_events(second.id) == [b.event]
        assert (await stock(store, "MUG-1"), await stock(store, "TEE-M")) == (8, 6)
        found = await store.find_response("key-1", now=NOW)
        assert found is not None and found.order_id == first.id
        assert found.body["total"] == 2 * 250 + 1999


async def test_stock_taken_since_the_read_sends_the_batch_the_general_way(
    url: str, one_statement: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stale_mugs(url, monkeypatch, stock=3, price=250) as store:
        outcomes = await place(store, order(("MUG-1", 2)), order(("MUG-1", 2)))
        assert one_statement == [False]  # the statement found 3 < 4 and undid itself
        assert isinstance(outcomes[0], Placed)
        assert isinstance(outcomes[1], InsufficientStock)
        assert await stock(store, "MUG-1") == 1


async def test_a_price_changed_since_the_read_is_charged_at_the_new_price(
    url: str, one_statement: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stale_mugs(url, monkeypatch, stock=10, price=300) as store:
        (outcome,) = await place(store, Placing(order(("MUG-1", 2)), keyed("key-1")))
        assert one_statement == [False]
        assert isinstance(outcome, Placed)
        assert outcome.order.lines == (Line("MUG-1", 2, 300),) and outcome.order.total == 600
        found = await store.find_response("key-1", now=NOW)
        assert found is not None and found.body["total"] == 600
        assert await stock(store, "MUG-1") == 8


async def test_an_expired_key_under_the_same_name_is_replaced(
    url: str, one_statement: list[bool]
) -> None:
    async with _sql(url) as store:
        await product(store, "MUG-1", stock=10)
        await place(store, Placing(order(("MUG-1", 1)), keyed("key-1")))
        later = NOW + HOUR
        second = order(("MUG-1", 1))
        (outcome,) = await place(store, Placing(second, keyed("key-1", "hash-2")), now=later)
        assert one_statement == [True, False]  # the old record's key is in the way
        assert isinstance(outcome, Placed)
        found = await store.find_response("key-1", now=later)
        assert found is not None and found.order_id == second.id


async def test_stores_racing_for_one_sku_never_oversell_nor_lose_an_order(url: str) -> None:
    """Three stores (three processes' batch writers) place 10 batches of 4 one-unit
    orders each at once against 50 units: exactly 50 are accepted, all of them stored."""
    stores = [SqlStore(url, pool_size=2) for _ in range(3)]
    try:
        await product(stores[0], "MUG-1", stock=50)

        async def writer(store: SqlStore) -> list[Any]:
            outcomes = []
            for _ in range(10):
                outcomes += await place(store, *(order(("MUG-1", 1)) for _ in range(4)))
            return outcomes

        outcomes = [o for got in await asyncio.gather(*map(writer, stores)) for o in got]
        accepted = [o for o in outcomes if isinstance(o, Placed)]
        assert len(accepted) == 50
        assert all(isinstance(o, Placed | InsufficientStock) for o in outcomes)
        assert await stock(stores[0], "MUG-1") == 0
        for placed in accepted:
            assert (await stores[1].get_order(placed.order.id)).lines == placed.order.lines
        assert len({p.order.seq for p in accepted}) == 50
    finally:
        for store in stores:
            await store.close()


async def test_a_batch_names_the_transaction_its_notice_to_the_fleet_names(
    url: str, one_statement: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet counts a process's own batch at once and skips its notice by this id;
    a notice that comes first is known for the process's own by its sender."""
    payloads: list[str] = []
    senders: set[int] = set()
    channel = FleetChannel(url)

    def received(payload: str, pid: int) -> None:
        payloads.append(payload)
        if json.loads(payload)["k"] == "i":
            senders.add(pid)

    await channel.connect(received)
    await channel.announce("api-1", 0)  # a fleet: the database notifies
    try:
        async with _sql(url) as store:
            await product(store, "MUG-1", stock=10, price=250)
            first, second = await place(store, order(("MUG-1", 1)), order(("MUG-1", 1)))
            stale_read(monkeypatch, **{"MUG-1": Stock(10, 200, "EUR")})
            (third,) = await place(store, order(("MUG-1", 1)))
            assert one_statement == [True, False]  # both ways
            assert isinstance(first, Placed) and isinstance(second, Placed)
            assert isinstance(third, Placed)
            assert first.xid is not None and first.xid == second.xid
            assert third.xid is not None and third.xid != first.xid

            def inserted() -> dict[int, int]:
                notices = [json.loads(payload) for payload in payloads]
                return {
                    int(n["x"]): sum(count for _, count in n["q"]) for n in notices if n["k"] == "i"
                }

            for _ in range(500):  # the notices come as the transactions commit
                if len(inserted()) == 2:
                    break
                await asyncio.sleep(0.01)
            assert inserted() == {first.xid: 2, third.xid: 1}
            assert senders and senders <= store.server_pids()
    finally:
        await channel.close()
