"""The `Store` protocol: one suite, run against every implementation through the protocol only."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from retail.core.errors import (
    InsufficientStock,
    InvalidOrder,
    InvalidTransition,
    MixedCurrencies,
    OrderNotFound,
    ProductNotFound,
    RetailError,
    UnknownSku,
)
from retail.core.orders import Line, NewOrder, Placed, accepted_document
from retail.core.types import OrderStatus, Priority, ServiceLevel
from retail.store.base import (
    DEMO_CATALOGUE,
    Claim,
    Ending,
    Keyed,
    LeaseLost,
    OrderQuery,
    Outcome,
    Placing,
    Store,
    StoredResponse,
    Transition,
)
from tests.store.conftest import NOW

HOUR = timedelta(hours=1)
QUEUED, PROCESSING = OrderStatus.QUEUED, OrderStatus.PROCESSING


def order(*items: tuple[str, int], customer: str = "alice", **fields: Any) -> NewOrder:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "customer_id": customer,
        "items": tuple(items),
        "service_level": ServiceLevel.FULL,
        "skipped_steps": (),
        "queue_position": 1,
    }
    values.update(fields)
    return NewOrder(**values)


def keyed(key: str, request_hash: str = "hash-1") -> Keyed:
    return Keyed(key, request_hash)


async def product(
    store: Store, sku: str, *, stock: int = 10, price: int = 100, currency: str = "EUR"
) -> None:
    await store.upsert_product(
        sku=sku, name=sku.title(), unit_price=price, stock=stock, currency=currency, now=NOW
    )


async def place(store: Store, *items: NewOrder | Placing, now: Any = NOW) -> list[Outcome]:
    batch = [item if isinstance(item, Placing) else Placing(item) for item in items]
    return await store.place_orders(batch, now=now, keys_expire_at=now + HOUR)


async def placed(store: Store, *items: NewOrder | Placing, now: Any = NOW) -> list[Placed]:
    outcomes = await place(store, *items, now=now)
    assert all(isinstance(o, Placed) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, Placed)]


async def stock(store: Store, sku: str) -> int:
    return (await store.get_product(sku)).stock


async def claim(store: Store, owner: str = "w1", now: Any = NOW, lease_s: float = 5) -> Claim:
    got = await store.claim_next(owner=owner, now=now, lease_s=lease_s)
    assert got is not None
    return got


# --- placing ------------------------------------------------------------------------------


async def test_a_batch_is_stored_with_lines_prices_totals_and_created_events(store: Store) -> None:
    await product(store, "MUG-1", stock=10, price=1250)
    await product(store, "TEE-M", stock=10, price=1999)
    first = order(("MUG-1", 2), ("TEE-M", 1), customer="alice")
    second = order(
        ("TEE-M", 3),
        customer="bob",
        service_level=ServiceLevel.DEGRADED,
        skipped_steps=("fraud_check",),
        queue_position=4,
        priority=Priority.SHEDDABLE,
        start_deadline=NOW + HOUR,
    )
    a, b = await placed(store, first, second)

    assert a.order.id == first.id and b.order.id == second.id
    assert a.order.seq < b.order.seq  # seq grows in the batch's order
    assert a.order.lines == (Line("MUG-1", 2, 1250), Line("TEE-M", 1, 1999))
    assert a.order.total == 2 * 1250 + 1999 and a.order.currency == "EUR"
    assert (a.order.status, a.order.created_at, a.order.updated_at) == (QUEUED, NOW, NOW)
    assert b.order.service_level is ServiceLevel.DEGRADED
    assert b.order.skipped_steps == ("fraud_check",)
    assert (a.order.priority, a.order.start_deadline) == (Priority.STANDARD, None)
    assert (b.order.priority, b.order.start_deadline) == (Priority.SHEDDABLE, NOW + HOUR)
    assert await store.get_order(b.order.id) == b.order
    assert (a.event.kind, a.event.status, a.event.order_id, a.event.at) == (
        "created",
        QUEUED,
        first.id,
        NOW,
    )
    assert b.event.detail == {
        "priority": "sheddable",
        "start_deadline": "2030-01-01T13:00:00Z",
        "service_level": "degraded",
        "skipped_steps": ["fraud_check"],
        "queue_position": 4,
        "total": 3 * 1999,
    }
    assert a.event.id < b.event.id
    # What was stored reads back the same.
    assert await store.get_order(first.id) == a.order
    assert await store.list_events(second.id) == [b.event]
    assert (await stock(store, "MUG-1"), await stock(store, "TEE-M")) == (8, 6)


async def test_a_batch_that_over_asks_is_served_in_order_and_stock_never_goes_negative(
    store: Store,
) -> None:
    await product(store, "LAMP-1", stock=5)
    orders = [order(("LAMP-1", 2)) for _ in range(4)]
    outcomes = await place(store, *orders)
    assert [type(o) for o in outcomes] == [Placed, Placed, InsufficientStock, InsufficientStock]
    short = outcomes[2]
    assert isinstance(short, InsufficientStock)
    assert short.extra["short"] == [{"sku": "LAMP-1", "requested": 2, "available": 1}]
    assert await stock(store, "LAMP-1") == 1
    # Refused orders were not stored.
    with pytest.raises(OrderNotFound):
        await store.get_order(orders[2].id)
    assert [type(o) for o in await place(store, order(("LAMP-1", 1)), order(("LAMP-1", 1)))] == [
        Placed,
        InsufficientStock,
    ]
    assert await stock(store, "LAMP-1") == 0


async def test_unknown_skus_and_mixed_currencies_refuse_only_their_own_order(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    await product(store, "MUG-US", stock=10, currency="USD")
    outcomes = await place(
        store,
        order(("MUG-1", 1)),
        order(("NOPE-1", 1), ("MUG-1", 1)),
        order(("MUG-1", 1), ("MUG-US", 1)),
        order(("MUG-US", 2)),
    )
    assert isinstance(outcomes[0], Placed)
    assert isinstance(outcomes[1], UnknownSku) and outcomes[1].extra["skus"] == ["NOPE-1"]
    assert isinstance(outcomes[2], MixedCurrencies)
    assert isinstance(outcomes[3], Placed) and outcomes[3].order.currency == "USD"
    assert (await stock(store, "MUG-1"), await stock(store, "MUG-US")) == (9, 8)
    assert await store.count_by_status() == {QUEUED: 2, PROCESSING: 0}


async def test_a_large_batch_stores_every_order_with_its_own_created_event(store: Store) -> None:
    await product(store, "BATCH-1", stock=600, price=300)
    orders = [order(("BATCH-1", 1)) for _ in range(602)]  # past one multi-row statement
    orders.insert(5, order(("NOPE-1", 1)))
    outcomes = await place(store, *orders)

    assert isinstance(outcomes[5], UnknownSku)
    assert all(isinstance(o, InsufficientStock) for o in outcomes[-2:])
    stored = [o for o in outcomes if isinstance(o, Placed)]
    assert [p.order.id for p in stored] == [o.id for o in orders[:5] + orders[6:-2]]
    assert all(p.order.total == 300 for p in stored)
    assert len({p.event.id for p in stored}) == len({p.order.seq for p in stored}) == 600
    assert await stock(store, "BATCH-1") == 0
    last = stored[-1]
    assert await store.list_events(last.order.id) == [last.event]


async def test_an_order_the_database_refuses_fails_alone(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    duplicate = order(("MUG-1", 1))
    outcomes = await place(store, order(("MUG-1", 1)), duplicate, duplicate, order(("MUG-1", 1)))
    assert [type(o) for o in outcomes[:2]] == [Placed, Placed]
    assert type(outcomes[2]) is RetailError  # the same order id twice: the second fails
    assert isinstance(outcomes[3], Placed)
    assert await stock(store, "MUG-1") == 7


async def test_a_value_postgresql_refuses_fails_only_its_own_order(
    store: Store, backend: str
) -> None:
    await product(store, "MUG-1", stock=10)
    nul = order(("MUG-1", 1), customer="nul\x00char")
    outcomes = await place(store, order(("MUG-1", 1)), nul, order(("MUG-1", 1)))
    assert isinstance(outcomes[0], Placed) and isinstance(outcomes[2], Placed)
    if backend == "postgres":  # text cannot hold NUL there; SQLite and memory store it
        assert isinstance(outcomes[1], InvalidOrder)
        assert await stock(store, "MUG-1") == 8
    else:
        assert isinstance(outcomes[1], Placed)
        assert (await store.get_order(nul.id)).customer_id == "nul\x00char"


# --- idempotency keys ---------------------------------------------------------------------


async def test_a_key_is_stored_with_its_answer_and_replayed(store: Store) -> None:
    await product(store, "MUG-1", stock=10, price=250)
    first = order(("MUG-1", 2))
    (stored,) = await placed(store, Placing(first, keyed("key-1")))
    # The answer kept is the order's 202, as the store wrote it.
    expected = StoredResponse("hash-1", first.id, 202, accepted_document(stored.order, first))
    assert expected.body["total"] == 500 and expected.body["status"] == "queued"
    assert await store.find_response("key-1", now=NOW) == expected
    assert await store.find_response("key-2", now=NOW) is None

    # The same key again, in a later batch and twice in one batch: the stored answer,
    # nothing written.
    again, twice = order(("MUG-1", 1)), order(("MUG-1", 1))
    outcomes = await place(
        store, Placing(again, keyed("key-1", "other")), Placing(twice, keyed("key-1"))
    )
    assert outcomes == [expected, expected]
    new, repeat = order(("MUG-1", 1)), order(("MUG-1", 1))
    outcomes = await place(store, Placing(new, keyed("key-3")), Placing(repeat, keyed("key-3")))
    assert isinstance(outcomes[0], Placed)
    assert isinstance(outcomes[1], StoredResponse) and outcomes[1].order_id == new.id
    for refused in (again, twice, repeat):
        with pytest.raises(OrderNotFound):
            await store.get_order(refused.id)
    assert await stock(store, "MUG-1") == 7


async def test_an_expired_key_is_replaced_and_purged(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    first = order(("MUG-1", 1))
    await placed(store, Placing(first, keyed("key-1")), Placing(order(("MUG-1", 1)), keyed("k2")))
    later = NOW + HOUR  # both keys expire now
    assert await store.find_response("key-1", now=later) is None

    second = order(("MUG-1", 1))
    await placed(store, Placing(second, keyed("key-1", "hash-2")), now=later)
    found = await store.find_response("key-1", now=later)
    assert found is not None and (found.order_id, found.request_hash) == (second.id, "hash-2")

    assert await store.purge_expired_responses(now=later) == 1  # k2; key-1 lives on
    assert await store.purge_expired_responses(now=later) == 0
    assert await store.find_response("key-1", now=later) == found
    assert await store.purge_expired_responses(now=later + HOUR) == 1
    assert await store.find_response("key-1", now=later) is None


async def test_a_refused_order_stores_no_key(store: Store) -> None:
    await product(store, "MUG-1", stock=1)
    outcomes = await place(store, Placing(order(("MUG-1", 2)), keyed("key-1")))
    assert isinstance(outcomes[0], InsufficientStock)
    assert await store.find_response("key-1", now=NOW) is None


# --- reading ------------------------------------------------------------------------------


async def test_orders_are_listed_newest_first_filtered_and_paged(store: Store) -> None:
    await product(store, "MUG-1", stock=100)
    customers = ["alice", "bob", "alice", "carol", "alice", "bob", "alice"]
    stored = await placed(store, *(order(("MUG-1", 1), customer=c) for c in customers))
    await store.cancel_order(stored[2].order.id, now=NOW)
    newest_first = [p.order.id for p in reversed(stored)]

    page, cursor = await store.list_orders(OrderQuery(limit=3))
    assert [o.id for o in page] == newest_first[:3] and cursor == page[-1].seq
    seen = [o.id for o in page]
    while cursor is not None:
        page, cursor = await store.list_orders(OrderQuery(limit=3, before_seq=cursor))
        seen += [o.id for o in page]
    assert seen == newest_first
    everything, last = await store.list_orders(OrderQuery(limit=7))
    assert len(everything) == 7 and last is None

    alice, _ = await store.list_orders(OrderQuery(customer_id="alice"))
    assert [o.id for o in alice] == [stored[i].order.id for i in (6, 4, 2, 0)]
    queued_alice, _ = await store.list_orders(OrderQuery(customer_id="alice", status=QUEUED))
    assert [o.id for o in queued_alice] == [stored[i].order.id for i in (6, 4, 0)]
    cancelled, _ = await store.list_orders(OrderQuery(status=OrderStatus.CANCELLED))
    assert [(o.id, o.status) for o in cancelled] == [(stored[2].order.id, OrderStatus.CANCELLED)]
    first_page, cursor = await store.list_orders(OrderQuery(customer_id="alice", limit=2))
    assert cursor is not None
    rest, end = await store.list_orders(OrderQuery(customer_id="alice", limit=2, before_seq=cursor))
    assert [o.id for o in first_page + rest] == [o.id for o in alice] and end is None
    assert await store.list_orders(OrderQuery(customer_id="nobody")) == ([], None)

    with pytest.raises(OrderNotFound):
        await store.get_order(uuid.uuid4())


async def test_queue_position_counts_and_oldest_queued(store: Store) -> None:
    await product(store, "MUG-1", stock=100)
    assert await store.count_by_status() == {QUEUED: 0, PROCESSING: 0}
    assert await store.oldest_queued_at() is None
    stored = []
    for minute in range(4):
        stored += await placed(store, order(("MUG-1", 1)), now=NOW + timedelta(minutes=minute))
    views = [p.order for p in stored]
    assert [await store.queue_position(v) for v in views] == [1, 2, 3, 4]
    assert await store.oldest_queued_at() == NOW

    await claim(store, now=NOW + HOUR)  # the first leaves the queue
    await store.cancel_order(views[2].id, now=NOW + HOUR)
    assert await store.queue_position(views[1]) == 1
    assert await store.queue_position(views[3]) == 2
    assert await store.count_by_status() == {QUEUED: 2, PROCESSING: 1}
    assert await store.oldest_queued_at() == NOW + timedelta(minutes=1)


async def test_active_orders_are_counted_per_customer(store: Store) -> None:
    await product(store, "MUG-1", stock=100)
    assert await store.count_active_by_customer() == {}
    await placed(
        store,
        order(("MUG-1", 1), customer="alice"),
        order(("MUG-1", 1), customer="bob"),
        order(("MUG-1", 1), customer="alice"),
        order(("MUG-1", 1), customer="carol"),
    )
    first = await claim(store, now=NOW + HOUR)  # alice's first: processing, still counted
    assert first.customer_id == "alice"
    assert await store.count_active_by_customer() == {"alice": 2, "bob": 1, "carol": 1}
    await store.finish(first, now=NOW + HOUR, status=OrderStatus.FULFILLED)
    bobs = await store.list_orders(OrderQuery(customer_id="bob"))
    await store.cancel_order(bobs[0][0].id, now=NOW + HOUR)
    assert await store.count_active_by_customer() == {"alice": 1, "carol": 1}


async def test_events_are_listed_oldest_first_and_after_an_id(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    (stored,) = await placed(store, order(("MUG-1", 1)))
    (other,) = await placed(store, order(("MUG-1", 1)))
    got = await claim(store)
    steps = await store.step_boundary(
        got, now=NOW, completed=None, starting=("reserve", 0.2), lease_s=5
    )
    events = await store.list_events(stored.order.id)
    assert [e.kind for e in events] == ["created", "started", "step_started"]
    assert events == [stored.event, got.event, *steps]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert await store.list_events(stored.order.id, after_id=got.event.id) == steps
    assert await store.list_events(stored.order.id, after_id=steps[-1].id) == []
    assert await store.list_events(other.order.id) == [other.event]
    with pytest.raises(OrderNotFound):
        await store.list_events(uuid.uuid4())


# --- cancelling ---------------------------------------------------------------------------


async def test_cancel_gives_stock_back_once(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    (stored,) = await placed(store, order(("MUG-1", 3)))
    assert await stock(store, "MUG-1") == 7
    later = NOW + timedelta(seconds=3)
    event = await store.cancel_order(stored.order.id, now=later)
    assert (event.kind, event.status, event.at, event.detail) == (
        "cancelled",
        OrderStatus.CANCELLED,
        later,
        {"stock_released": True},
    )
    view = await store.get_order(stored.order.id)
    assert (view.status, view.finished_at) == (OrderStatus.CANCELLED, later)
    assert await stock(store, "MUG-1") == 10

    with pytest.raises(InvalidTransition):
        await store.cancel_order(stored.order.id, now=later)
    assert await stock(store, "MUG-1") == 10
    with pytest.raises(OrderNotFound):
        await store.cancel_order(uuid.uuid4(), now=later)


async def test_an_order_in_fulfilment_cannot_be_cancelled(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    (stored,) = await placed(store, order(("MUG-1", 1)))
    await claim(store)
    with pytest.raises(InvalidTransition):
        await store.cancel_order(stored.order.id, now=NOW)
    assert await stock(store, "MUG-1") == 9


# --- the work queue -----------------------------------------------------------------------


async def test_claims_are_fifo_and_an_expired_lease_comes_first(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    first, second, third = await placed(store, *(order(("MUG-1", 1)) for _ in range(3)))

    a = await claim(store, "A", now=NOW, lease_s=5)
    assert (a.order_id, a.seq, a.token, a.resumed) == (first.order.id, first.order.seq, 1, False)
    assert (a.event.kind, a.event.status) == ("started", PROCESSING)
    assert a.event.detail == {"worker": "A", "attempt": 1, "from_step": 0}
    assert (a.created_at, a.started_at, a.line_count, a.step_index) == (NOW, NOW, 1, 0)
    await store.step_boundary(a, now=NOW, completed=("reserve", 1, 0.1), starting=None, lease_s=5)

    # A stalls; before its lease ends B gets the next queued order, after it A's order.
    b = await claim(store, "B", now=NOW + timedelta(seconds=4.9))
    assert b.order_id == second.order.id
    later = NOW + timedelta(seconds=6)
    taken = await claim(store, "B", now=later)
    assert (taken.order_id, taken.token, taken.resumed) == (first.order.id, 2, True)
    assert (taken.step_index, taken.started_at) == (1, NOW)  # it continues where A was
    assert taken.event.kind == "resumed"
    assert taken.event.detail == {"worker": "B", "attempt": 2, "from_step": 1}
    c = await claim(store, "B", now=later)
    assert c.order_id == third.order.id
    assert await store.claim_next(owner="B", now=later, lease_s=5) is None
    view = await store.get_order(first.order.id)
    assert (view.status, view.started_at, view.step_index) == (PROCESSING, NOW, 1)


async def test_an_order_claimed_on_a_clock_read_before_it_was_stored_starts_when_it_was_created(
    store: Store,
) -> None:
    # A worker reads the time, then claims: an order committed in between is claimed with
    # a `now` before its creation. It does not start before it existed.
    await product(store, "MUG-1", stock=10)
    (first,) = await placed(store, order(("MUG-1", 1)))
    got = await claim(store, now=NOW - timedelta(milliseconds=50))
    assert got.order_id == first.order.id
    assert (got.started_at, got.event.at) == (NOW, NOW)
    assert (await store.get_order(first.order.id)).started_at == NOW
    assert [(e.kind, e.at) for e in await store.list_events(first.order.id)] == [
        ("created", NOW),
        ("started", NOW),
    ]


async def test_claims_go_by_priority_then_first_come_first_served(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    sheddable, standard, critical, critical_2, standard_2 = await placed(
        store,
        order(("MUG-1", 1), priority=Priority.SHEDDABLE),
        order(("MUG-1", 1)),
        order(("MUG-1", 1), priority=Priority.CRITICAL),
        order(("MUG-1", 1), priority=Priority.CRITICAL),
        order(("MUG-1", 1)),
    )
    in_start_order = [critical, critical_2, standard, standard_2, sheddable]
    positions = [await store.queue_position(p.order) for p in in_start_order]
    assert positions == [1, 2, 3, 4, 5]
    assert await store.queued_by_priority() == {
        Priority.CRITICAL: 2,
        Priority.STANDARD: 2,
        Priority.SHEDDABLE: 1,
    }
    claims = [await claim(store) for _ in in_start_order]
    assert [c.order_id for c in claims] == [p.order.id for p in in_start_order]
    assert [c.priority for c in claims] == [p.order.priority for p in in_start_order]
    assert await store.queued_by_priority() == dict.fromkeys(Priority, 0)


async def test_orders_are_listed_by_priority(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    critical, _, critical_2 = await placed(
        store,
        order(("MUG-1", 1), priority=Priority.CRITICAL),
        order(("MUG-1", 1)),
        order(("MUG-1", 1), priority=Priority.CRITICAL),
    )
    page, cursor = await store.list_orders(OrderQuery(priority=Priority.CRITICAL, limit=1))
    assert ([o.id for o in page], cursor) == ([critical_2.order.id], critical_2.order.seq)
    page, cursor = await store.list_orders(
        OrderQuery(priority=Priority.CRITICAL, before_seq=cursor)
    )
    assert ([o.id for o in page], cursor) == ([critical.order.id], None)
    assert (await store.list_orders(OrderQuery(priority=Priority.SHEDDABLE)))[0] == []


async def test_an_order_past_its_start_deadline_is_never_claimed_and_expires_once(
    store: Store,
) -> None:
    await product(store, "MUG-1", stock=10)
    deadline = NOW + timedelta(seconds=5)
    late, later, patient = await placed(
        store,
        order(("MUG-1", 2), priority=Priority.CRITICAL, start_deadline=deadline),
        order(("MUG-1", 3), start_deadline=NOW + HOUR),
        order(("MUG-1", 1)),
    )
    assert await stock(store, "MUG-1") == 4
    assert await store.expire_due(now=deadline - timedelta(seconds=1)) == []

    # An order that starts at its deadline is in time (it starts within its time)...
    assert await store.expire_due(now=deadline) == []
    # ...but not a moment after: it is passed over, the next one in start order is claimed.
    past = deadline + timedelta(milliseconds=1)
    taken = await claim(store, now=past)
    assert taken.order_id == later.order.id
    expired = await store.expire_due(now=past)
    assert [(e.event.order_id, e.event.kind, e.priority) for e in expired] == [
        (late.order.id, "expired", Priority.CRITICAL)
    ]
    event = expired[0].event
    assert (event.status, event.at) == (OrderStatus.EXPIRED, past)
    assert event.detail == {"start_deadline": "2030-01-01T12:00:05Z", "stock_released": True}
    view = await store.get_order(late.order.id)
    assert (view.status, view.started_at, view.finished_at) == (OrderStatus.EXPIRED, None, past)
    assert await stock(store, "MUG-1") == 6  # its 2 back, once
    assert await store.expire_due(now=NOW + 2 * HOUR) == []  # `later` started: not expired
    with pytest.raises(InvalidTransition):
        await store.cancel_order(late.order.id, now=deadline)
    assert await stock(store, "MUG-1") == 6
    assert [e.kind for e in await store.list_events(late.order.id)] == ["created", "expired"]
    assert (await store.count_by_status())[QUEUED] == 1
    assert (await claim(store, now=deadline)).order_id == patient.order.id
    assert await store.claim_next(owner="w1", now=deadline, lease_s=5) is None


async def test_a_stale_claim_is_fenced_off(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    (stored,) = await placed(store, order(("MUG-1", 2)))
    stale = await claim(store, "A", lease_s=5)
    later = NOW + timedelta(seconds=6)
    current = await claim(store, "B", now=later, lease_s=5)

    with pytest.raises(LeaseLost):
        await store.step_boundary(
            stale, now=later, completed=("reserve", 1, 0.1), starting=("pay", 0.2), lease_s=5
        )
    with pytest.raises(LeaseLost):
        await store.finish(stale, now=later, status=OrderStatus.FAILED, reason="declined")
    assert (await store.get_order(stored.order.id)).status is PROCESSING
    assert await stock(store, "MUG-1") == 8

    events = await store.step_boundary(
        current, now=later, completed=("reserve", 1, 0.25), starting=("pay", 0.5), lease_s=5
    )
    assert [(e.kind, e.step, e.detail) for e in events] == [
        ("step_completed", "reserve", {"took_s": 0.25}),
        ("step_started", "pay", {"planned_s": 0.5}),
    ]
    done = await store.finish(current, now=later, status=OrderStatus.FULFILLED)
    assert (done.kind, done.status, done.detail) == ("fulfilled", OrderStatus.FULFILLED, {})
    view = await store.get_order(stored.order.id)
    assert (view.status, view.finished_at, view.step_index) == (OrderStatus.FULFILLED, later, 1)
    assert await stock(store, "MUG-1") == 8  # a fulfilled order keeps its stock
    with pytest.raises(LeaseLost):  # finished: no claim writes any more
        await store.finish(current, now=later, status=OrderStatus.FAILED)
    assert await store.claim_next(owner="C", now=later + HOUR, lease_s=5) is None


async def test_a_step_boundary_renews_the_lease_past_the_planned_step(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    await placed(store, order(("MUG-1", 1)))
    got = await claim(store, "A", lease_s=5)
    await store.step_boundary(got, now=NOW, completed=None, starting=("pack", 10.0), lease_s=5)
    assert await store.claim_next(owner="B", now=NOW + timedelta(seconds=14.9), lease_s=5) is None
    taken = await store.claim_next(owner="B", now=NOW + timedelta(seconds=15), lease_s=5)
    assert taken is not None and taken.resumed


async def test_a_failure_gives_stock_back_once(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    (stored,) = await placed(store, order(("MUG-1", 4)))
    got = await claim(store)
    event = await store.finish(
        got, now=NOW, status=OrderStatus.FAILED, reason="payment declined", detail={"step": "pay"}
    )
    assert (event.kind, event.status) == ("failed", OrderStatus.FAILED)
    assert event.detail == {"step": "pay", "reason": "payment declined"}
    view = await store.get_order(stored.order.id)
    assert (view.status, view.failure_reason) == (OrderStatus.FAILED, "payment declined")
    assert await stock(store, "MUG-1") == 10
    with pytest.raises(LeaseLost):
        await store.finish(got, now=NOW, status=OrderStatus.FAILED, reason="again")
    assert await stock(store, "MUG-1") == 10
    assert await store.count_by_status() == {QUEUED: 0, PROCESSING: 0}


async def test_released_leases_are_resumed_at_once(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    first, second, third = await placed(store, *(order(("MUG-1", 1)) for _ in range(3)))
    mine = [await claim(store, "A", lease_s=60), await claim(store, "A", lease_s=60)]
    other = await claim(store, "B", lease_s=60)
    assert await store.release_leases(owner="A", now=NOW) == 2
    assert await store.release_leases(owner="nobody", now=NOW) == 0
    events = await store.list_events(first.order.id)
    assert (events[-1].kind, events[-1].detail) == ("lease_released", {"worker": "A"})

    resumed = [await claim(store, "C", lease_s=60), await claim(store, "C", lease_s=60)]
    assert [c.order_id for c in resumed] == [c.order_id for c in mine]
    assert all(c.resumed and c.token == 2 for c in resumed)
    assert await store.claim_next(owner="C", now=NOW, lease_s=60) is None  # B's is live
    with pytest.raises(LeaseLost):
        await store.finish(mine[0], now=NOW, status=OrderStatus.FULFILLED)
    await store.finish(other, now=NOW, status=OrderStatus.FULFILLED)
    assert {o.id for o in (await store.list_orders(OrderQuery(status=PROCESSING)))[0]} == {
        first.order.id,
        second.order.id,
    }
    assert third.order.id == other.order_id


async def test_claim_many_takes_orders_in_start_order_in_one_go(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    stalled, standard, critical, sheddable = await placed(
        store,
        order(("MUG-1", 1)),
        order(("MUG-1", 1)),
        order(("MUG-1", 1), priority=Priority.CRITICAL),
        order(("MUG-1", 1), priority=Priority.SHEDDABLE),
    )
    (first,) = await store.claim_many(owner="A", now=NOW, lease_s=5, limit=1)
    assert first.order_id == critical.order.id
    await store.step_boundary(
        first, now=NOW, completed=("reserve", 1, 0.1), starting=None, lease_s=5
    )
    later = NOW + timedelta(seconds=6)  # A's lease has run out
    claims = await store.claim_many(owner="B", now=later, lease_s=5, limit=3)
    assert [c.order_id for c in claims] == [critical.order.id, stalled.order.id, standard.order.id]
    assert [(c.resumed, c.token, c.step_index) for c in claims] == [
        (True, 2, 1),
        (False, 1, 0),
        (False, 1, 0),
    ]
    assert [c.event.kind for c in claims] == ["resumed", "started", "started"]
    assert [c.event.detail for c in claims] == [
        {"worker": "B", "attempt": 2, "from_step": 1},
        {"worker": "B", "attempt": 1, "from_step": 0},
        {"worker": "B", "attempt": 1, "from_step": 0},
    ]
    for got in claims:
        assert (await store.list_events(got.order_id))[-1] == got.event
        assert (await store.get_order(got.order_id)).status is PROCESSING
    assert claims[0].started_at == NOW and claims[1].started_at == later
    assert await store.queued_by_priority() == {
        **dict.fromkeys(Priority, 0),
        sheddable.order.priority: 1,
    }
    rest = await store.claim_many(owner="C", now=later, lease_s=5, limit=10)
    assert [c.order_id for c in rest] == [sheddable.order.id]
    assert await store.claim_many(owner="C", now=later, lease_s=5, limit=10) == []


async def test_step_boundaries_in_one_batch_each_move_their_own_order(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    await placed(store, *(order(("MUG-1", 1)) for _ in range(3)))
    first, second, third = await store.claim_many(owner="A", now=NOW, lease_s=5, limit=3)
    results = await store.transition(
        [
            Transition(first, ("reserve", 1, 0.1), ("pay", 10.0)),
            Transition(second, starting=("reserve", 1.0)),
            Transition(third, ("pick", 4, 0.3)),
        ],
        now=NOW,
        lease_s=5,
    )
    assert [[e.kind for e in r] for r in results if not isinstance(r, LeaseLost)] == [
        ["step_completed", "step_started"],
        ["step_started"],
        ["step_completed"],
    ]
    steps = [(await store.get_order(c.order_id)).step_index for c in (first, second, third)]
    assert steps == [1, 0, 4]
    # Each lease runs past its own planned step: 5 s, 6 s and 15 s from the write.
    soon = await store.claim_many(owner="B", now=NOW + timedelta(seconds=5.5), lease_s=60, limit=3)
    assert [(c.order_id, c.step_index) for c in soon] == [(third.order_id, 4)]
    later = await store.claim_many(owner="B", now=NOW + timedelta(seconds=6), lease_s=60, limit=3)
    assert [(c.order_id, c.step_index) for c in later] == [(second.order_id, 0)]


async def test_a_batch_of_transitions_is_fenced_claim_by_claim(store: Store) -> None:
    await product(store, "MUG-1", stock=10)
    taken_over, stepping, fulfilling, failing = await placed(
        store, *(order(("MUG-1", 2)) for _ in range(4))
    )
    stale = await claim(store, "A", lease_s=5)
    later = NOW + timedelta(seconds=6)
    current = await claim(store, "B", now=later, lease_s=5)  # A's order, taken over
    b, c, d = await store.claim_many(owner="B", now=later, lease_s=5, limit=3)
    assert await stock(store, "MUG-1") == 2
    before = {p.order.id: await store.list_events(p.order.id) for p in (taken_over,)}

    results = await store.transition(
        [
            Transition(stale, ("reserve", 1, 0.1), ("pay", 0.2)),
            Transition(b, ("reserve", 1, 0.25), ("pay", 10.0)),
            Transition(c, ("ship", 6, 0.5), ending=Ending(OrderStatus.FULFILLED)),
            Transition(d, ending=Ending(OrderStatus.FAILED, "payment declined", {"step": "pay"})),
        ],
        now=later,
        lease_s=5,
    )
    lost, stepped, fulfilled, failed = results
    assert isinstance(lost, LeaseLost)
    assert await store.list_events(taken_over.order.id) == before[taken_over.order.id]
    assert (await store.get_order(taken_over.order.id)).step_index == 0
    assert current.order_id == taken_over.order.id

    assert not isinstance(stepped, LeaseLost)
    assert [(e.kind, e.step, e.detail, e.at) for e in stepped] == [
        ("step_completed", "reserve", {"took_s": 0.25}, later),
        ("step_started", "pay", {"planned_s": 10.0}, later),
    ]
    assert (await store.get_order(stepping.order.id)).step_index == 1
    assert not isinstance(fulfilled, LeaseLost)
    assert [(e.kind, e.status, e.step) for e in fulfilled] == [
        ("step_completed", PROCESSING, "ship"),
        ("fulfilled", OrderStatus.FULFILLED, None),
    ]
    view = await store.get_order(fulfilling.order.id)
    assert (view.status, view.step_index, view.finished_at) == (
        OrderStatus.FULFILLED,
        6,
        later,
    )
    assert not isinstance(failed, LeaseLost)
    assert [(e.kind, e.detail) for e in failed] == [
        ("failed", {"step": "pay", "reason": "payment declined"})
    ]
    view = await store.get_order(failing.order.id)
    assert (view.status, view.failure_reason) == (OrderStatus.FAILED, "payment declined")
    assert await stock(store, "MUG-1") == 4  # the failed order's 2 back, nobody else's

    # What was written is what is stored, each order's events in the order written.
    for got, events in ((b, stepped), (c, fulfilled), (d, failed)):
        stored = await store.list_events(got.order_id)
        assert stored[-len(events) :] == events
        assert [e.id for e in stored] == sorted(e.id for e in stored)

    # The step's lease runs past its planned 10 s; the ended orders take no more writes.
    soon = later + timedelta(seconds=14.9)
    lapsed = await store.claim_many(owner="C", now=soon, lease_s=5, limit=5)
    assert [got.order_id for got in lapsed] == [taken_over.order.id]  # B's 5 s lease on it
    again = await store.transition(
        [Transition(c, ending=Ending(OrderStatus.FAILED)), Transition(d, ("pay", 3, 0.1))],
        now=later,
        lease_s=5,
    )
    assert all(isinstance(result, LeaseLost) for result in again)
    assert await stock(store, "MUG-1") == 4
    assert (await store.get_order(fulfilling.order.id)).status is OrderStatus.FULFILLED


# --- the catalogue ------------------------------------------------------------------------


async def test_products_are_created_replaced_listed_and_read(store: Store) -> None:
    assert await store.list_products() == []
    lamp, created = await store.upsert_product(
        sku="LAMP-2", name="Floor lamp", unit_price=8900, stock=10, currency="EUR", now=NOW
    )
    assert created and (lamp.sku, lamp.name, lamp.unit_price, lamp.stock) == (
        "LAMP-2",
        "Floor lamp",
        8900,
        10,
    )
    assert (lamp.currency, lamp.updated_at) == ("EUR", NOW)
    later = NOW + HOUR
    changed, created = await store.upsert_product(
        sku="LAMP-2", name="Lamp", unit_price=9900, stock=3, currency="USD", now=later
    )
    assert not created
    assert (changed.name, changed.unit_price, changed.stock, changed.currency) == (
        "Lamp",
        9900,
        3,
        "USD",
    )
    assert await store.get_product("LAMP-2") == changed
    await product(store, "BAG-1")
    assert [p.sku for p in await store.list_products()] == ["BAG-1", "LAMP-2"]
    with pytest.raises(ProductNotFound):
        await store.get_product("NOPE-1")


async def test_prepare_seeds_the_demo_catalogue_into_an_empty_store_only(store: Store) -> None:
    assert await store.prepare(migrate=True, seed_catalogue=True, now=NOW) == len(DEMO_CATALOGUE)
    assert await store.prepare(migrate=True, seed_catalogue=True, now=NOW) == 0
    mug = await store.get_product("MUG-1")
    assert (mug.unit_price, mug.stock, mug.currency) == (1250, 1000, "EUR")
    assert [p.sku for p in await store.list_products()] == sorted(s for s, *_ in DEMO_CATALOGUE)
    assert await store.problems() == []
