"""Idempotency-Key on POST /orders: retries never create a second order."""

from __future__ import annotations

import asyncio

from retail.runtime.clock import ManualClock
from tests.conftest import Running, StartApp, quiescent

BODY = {"customer_id": "alice", "items": [{"sku": "MUG-1", "quantity": 1}]}


async def test_retry_with_same_key_replays_the_first_response(start_app: StartApp) -> None:
    # On a clock of the test's own, the order stays in flight while the test looks.
    running = await start_app(clock=ManualClock(), fulfilment_delay="10")
    client = running.client
    first = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    # Same body, other formatting and key order: still the same request.
    retry = await client.post(
        "/orders",
        content=b'{ "items": [{"quantity": 1, "sku": "MUG-1"}], "customer_id": "alice" }',
        headers={"Idempotency-Key": "k-1", "content-type": "application/json"},
    )
    assert retry.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert len((await client.get("/orders")).json()["items"]) == 1
    assert (await client.get("/products/MUG-1")).json()["stock"] == 999
    await quiescent(running)
    capacity = (await client.get("/capacity")).json()
    assert capacity["counters"]["accepted"] == 1  # a replay is not a new order
    assert (capacity["queued"], capacity["in_flight"]) == (0, 1)


async def test_same_key_with_another_body_is_422(running: Running) -> None:
    client = running.client
    await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k-2"})
    other = {"customer_id": "alice", "items": [{"sku": "MUG-1", "quantity": 2}]}
    response = await client.post("/orders", json=other, headers={"Idempotency-Key": "k-2"})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-mismatch"
    assert len((await client.get("/orders")).json()["items"]) == 1
    assert (await client.get("/capacity")).json()["queued"] <= 1  # its place was given back


async def test_fifty_concurrent_posts_with_one_key_make_one_order(start_app: StartApp) -> None:
    client = (await start_app(queue_limit=1000)).client
    responses = await asyncio.gather(
        *(client.post("/orders", json=BODY, headers={"Idempotency-Key": "same"}) for _ in range(50))
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409}
    assert statuses.count(202) >= 1
    ids = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["type"] == "/problems/idempotency-key-in-use"
    orders = (await client.get("/orders")).json()["items"]
    assert [o["id"] for o in orders] == list(ids)
    assert (await client.get("/products/MUG-1")).json()["stock"] == 999
    # once the first is stored, a retry replays it
    replay = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "same"})
    assert replay.status_code == 202 and replay.json()["id"] in ids


async def test_refused_orders_are_not_remembered(running: Running) -> None:
    client = running.client
    too_many = {"customer_id": "a", "items": [{"sku": "LAMP-1", "quantity": 51}]}
    first = await client.post("/orders", json=too_many, headers={"Idempotency-Key": "k-3"})
    assert first.status_code == 409
    second = await client.post("/orders", json=too_many, headers={"Idempotency-Key": "k-3"})
    assert second.status_code == 409
    assert "idempotent-replayed" not in second.headers


async def test_keys_expire(start_app: StartApp, manual_clock: object) -> None:
    from retail.runtime.clock import ManualClock

    clock = ManualClock()
    running = await start_app(clock=clock, idempotency_ttl_s=60, workers_enabled=False)
    client = running.client
    first = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k-4"})
    clock.advance(59)
    same = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k-4"})
    assert same.json()["id"] == first.json()["id"]
    clock.advance(2)
    fresh = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k-4"})
    assert fresh.status_code == 202
    assert fresh.json()["id"] != first.json()["id"]


async def test_malformed_key_is_400(running: Running) -> None:
    response = await running.client.post(
        "/orders", json=BODY, headers={"Idempotency-Key": "x" * 300}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-header"
