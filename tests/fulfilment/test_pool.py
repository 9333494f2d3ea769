"""Fulfilment through the worker pool, in virtual time, over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any

import httpx

from retail.runtime.clock import ManualClock
from tests.conftest import (
    ADMIN,
    Running,
    StartApp,
    all_terminal,
    drive,
    eventually,
    one_slot_taken,
    place,
    quiescent,
)


async def events_of(client: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/orders/{order_id}/events")
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()
    return events


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


async def timeline(client: httpx.AsyncClient, order_id: str) -> tuple[datetime, datetime, datetime]:
    """(created, started, finished) of an order, from its events."""
    events = await events_of(client, order_id)
    by_kind = {e["kind"]: at(e) for e in events}
    return by_kind["created"], by_kind["started"], by_kind["fulfilled"]


async def three_fulfilled(
    start_app: StartApp, capacity: int
) -> list[tuple[datetime, datetime, datetime]]:
    """Alice, Bob and Charlie each place a 2 s order: the timelines of all three."""
    running = await start_app(clock=ManualClock(), capacity=capacity, fulfilment_delay="2")
    ids = []
    for customer in ("alice", "bob", "charlie"):
        response = await place(running.client, customer=customer)
        assert response.status_code == 202
        ids.append(response.json()["id"])
    await drive(running, lambda: all_terminal(running.client, ids))
    return [await timeline(running.client, i) for i in ids]


async def test_capacity_one_fulfils_one_order_at_a_time(start_app: StartApp) -> None:
    spans = await three_fulfilled(start_app, capacity=1)
    # Alice, then Bob, then Charlie: each starts only after the previous one finished.
    for (_, _, finished), (_, started, _) in itertools.pairwise(spans):
        assert started >= finished
    waits = [(started - created).total_seconds() for created, started, _ in spans]
    assert waits[0] < 0.5 and 1.9 < waits[1] < 2.5 and 3.9 < waits[2] < 4.5


async def test_capacity_three_fulfils_them_at_once(start_app: StartApp) -> None:
    spans = await three_fulfilled(start_app, capacity=3)
    latest_start = max(started for _, started, _ in spans)
    earliest_finish = min(finished for _, _, finished in spans)
    assert latest_start < earliest_finish  # all three overlap
    for created, started, finished in spans:
        assert (started - created).total_seconds() < 0.5
        assert 1.9 < (finished - started).total_seconds() < 2.5


async def test_queue_position_and_estimated_start(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="10", queue_limit=5)
    client = running.client
    first = (await place(client)).json()
    await quiescent(running)
    second = await place(client)
    third = await place(client)
    assert second.json()["queue_position"] == 1
    assert third.json()["queue_position"] == 2
    now = clock.now()
    estimate2 = datetime.fromisoformat(second.json()["estimated_start_at"])
    estimate3 = datetime.fromisoformat(third.json()["estimated_start_at"])
    assert abs((estimate2 - now).total_seconds() - 10) < 0.01
    assert abs((estimate3 - now).total_seconds() - 20) < 0.01
    assert second.headers["retry-after"] == "10"
    polled = (await client.get(third.headers["location"])).json()
    assert polled["queue_position"] == 2
    assert first["queue_position"] == 1


async def test_reject_mode_refuses_with_retry_after_and_writes_nothing(
    start_app: StartApp,
) -> None:
    clock = ManualClock()
    running = await one_slot_taken(start_app, clock, overload_mode="reject")
    client = running.client
    refused = await place(client, sku="LAMP-1")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert problem["mode"] == "reject"
    assert problem["capacity"] == 1 and problem["in_flight"] == 1
    assert (await client.get("/products/LAMP-1")).json()["stock"] == 50
    assert len((await client.get("/orders")).json()["items"]) == 1
    clock.advance(4)
    await quiescent(running)
    assert (await place(client)).headers["retry-after"] == "6"
    capacity = (await client.get("/capacity")).json()
    assert capacity["counters"]["rejected"] == 2
    assert capacity["counters"]["accepted"] == 1


async def test_queue_mode_sheds_past_the_queue_limit(start_app: StartApp) -> None:
    running = await one_slot_taken(start_app, ManualClock(), queue_limit=2)
    statuses = []
    for _ in range(3):
        statuses.append((await place(running.client)).status_code)
        await quiescent(running)
    assert statuses == [202, 202, 503]  # two wait behind the first; no room for a fourth


async def test_degrade_mode_serves_overflow_on_the_cheaper_path(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(
        clock=clock, capacity=1, fulfilment_delay="10", overload_mode="degrade", queue_limit=1
    )
    client = running.client
    full = (await place(client)).json()
    await quiescent(running)
    degraded = (await place(client)).json()
    assert full["service_level"] == "full" and full["skipped_steps"] == []
    assert degraded["service_level"] == "degraded"
    assert degraded["skipped_steps"] == ["fraud_check"]
    ceiling = await place(client)
    assert ceiling.status_code == 503
    await drive(running, lambda: all_terminal(client, [full["id"], degraded["id"]]), step_s=0.5)
    _, started, finished = await timeline(client, degraded["id"])
    # 10 s without fraud_check (20%) at half the delay: 4 s.
    assert abs((finished - started).total_seconds() - 4.0) < 0.6
    steps = [
        e["step"] for e in await events_of(client, degraded["id"]) if e["kind"] == "step_completed"
    ]
    assert "fraud_check" not in steps


async def test_mode_switch_at_run_time_loses_and_reorders_nothing(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="1", queue_limit=3)
    client = running.client
    accepted = []
    for _ in range(4):
        response = await place(client)
        assert response.status_code == 202
        accepted.append(response.json()["id"])
        await quiescent(running)
    assert (await place(client)).status_code == 503  # queue full

    switched = await client.put("/admin/capacity", json={"mode": "reject"}, headers=ADMIN)
    assert switched.status_code == 200 and switched.json()["mode"] == "reject"
    assert (await place(client)).status_code == 503
    bad = await client.put("/admin/capacity", json={"mode": "panic"}, headers=ADMIN)
    assert bad.status_code == 422
    bad = await client.put("/admin/capacity", json={"capacity": 0}, headers=ADMIN)
    assert bad.status_code == 422
    assert (await client.get("/capacity")).json()["mode"] == "reject"

    switched = await client.put(
        "/admin/capacity", json={"mode": "degrade", "queue_limit": 10}, headers=ADMIN
    )
    assert switched.json()["queue_limit"] == 10
    response = await place(client)
    assert response.json()["service_level"] == "degraded"
    accepted.append(response.json()["id"])

    await drive(running, lambda: all_terminal(client, accepted))
    starts = [(await timeline(client, i))[1] for i in accepted]
    assert starts == sorted(starts)  # FIFO preserved across the switches
    for order_id in accepted:
        assert (await client.get(f"/orders/{order_id}")).json()["status"] == "fulfilled"


async def test_raising_capacity_at_run_time_starts_queued_orders(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="5")
    client = running.client
    for _ in range(3):
        await place(client)
    await quiescent(running)
    assert (await client.get("/capacity")).json()["in_flight"] == 1
    await client.put("/admin/capacity", json={"capacity": 3}, headers=ADMIN)
    await eventually(lambda: running.services.pool.in_flight == 3)
    snapshot = (await client.get("/capacity")).json()
    assert snapshot["in_flight"] == 3 and snapshot["queued"] == 0


async def test_payment_decline_fails_the_order_and_releases_stock_once(
    start_app: StartApp,
) -> None:
    running = await start_app(payment_decline_probability=1.0)
    client = running.client
    order = (await place(client, sku="LAMP-1", quantity=4)).json()
    await eventually(lambda: all_terminal(client, [order["id"]]))
    final = (await client.get(f"/orders/{order['id']}")).json()
    assert final["status"] == "failed"
    assert final["failure_reason"] == "payment declined"
    assert (await client.get("/products/LAMP-1")).json()["stock"] == 50
    events = await events_of(client, order["id"])
    assert events[-1]["kind"] == "failed"
    assert events[-1]["detail"]["stock_released"] is True
    completed = [e["step"] for e in events if e["kind"] == "step_completed"]
    assert completed == ["reserve", "fraud_check"]
    cancel = await client.post(f"/orders/{order['id']}/cancel")
    assert cancel.status_code == 409
    assert (await client.get("/products/LAMP-1")).json()["stock"] == 50


async def test_cancel_racing_the_claim_leaves_stock_right(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=8, fulfilment_delay="1", queue_limit=100)
    client = running.client
    ids = [(await place(client, sku="LAMP-1")).json()["id"] for _ in range(20)]
    results = await asyncio.gather(*(client.post(f"/orders/{i}/cancel") for i in ids))
    assert {r.status_code for r in results} <= {200, 409}
    await drive(running, lambda: all_terminal(client, ids))
    statuses = [(await client.get(f"/orders/{i}")).json()["status"] for i in ids]
    for status, result in zip(statuses, results, strict=True):
        assert status == ("cancelled" if result.status_code == 200 else "fulfilled")
    fulfilled = statuses.count("fulfilled")
    assert (await client.get("/products/LAMP-1")).json()["stock"] == 50 - fulfilled


async def test_prefer_wait_returns_the_final_order(running: Running) -> None:
    response = await place(running.client, headers={"Prefer": "wait=5"})
    assert response.status_code == 201
    assert response.json()["status"] == "fulfilled"
    assert response.headers["preference-applied"] == "wait=5"
    assert response.headers["location"] == f"/orders/{response.json()['id']}"


async def test_prefer_wait_times_out_into_202(start_app: StartApp) -> None:
    running = await start_app(clock=ManualClock(), fulfilment_delay="60")
    response = await place(running.client, headers={"Prefer": "respond-async, wait=0.2"})
    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    assert response.json()["status"] == "queued"


async def test_client_hanging_up_while_waiting_keeps_the_order(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, fulfilment_delay="1")
    client = running.client
    waiting = asyncio.create_task(place(client, headers={"Prefer": "wait=30"}))

    async def stored() -> bool:
        return len((await client.get("/orders")).json()["items"]) == 1

    await eventually(stored)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    order_id = (await client.get("/orders")).json()["items"][0]["id"]
    await drive(running, lambda: all_terminal(client, [order_id]))
    assert (await client.get(f"/orders/{order_id}")).json()["status"] == "fulfilled"
    assert (await client.get("/capacity")).json()["queued"] == 0


async def test_graceful_stop_leaves_unfinished_orders_for_the_next_start(
    start_app: StartApp, database_url: str
) -> None:
    from retail.web.app import create_app
    from tests.conftest import make_settings

    clock = ManualClock()
    settings = make_settings(database_url, capacity=2, fulfilment_delay="6", shutdown_timeout_s=0.1)
    first = create_app(settings, clock=clock)
    async with first.router.lifespan_context(first):
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ids = [(await place(client)).json()["id"] for _ in range(4)]
            services = first.state.services
            await eventually(lambda: clock.sleepers == 2)
            clock.advance(1.5)  # the first step (reserve, 0.6 s) of two orders completes
            await eventually(lambda: clock.sleepers == 2 and services.pool.in_flight == 2)
    # stopped: the two in flight were cut off and their leases released
    second = await start_app(clock=clock, capacity=2, fulfilment_delay="6")
    await drive(second, lambda: all_terminal(second.client, ids), step_s=0.5)
    for order_id in ids:
        events = await events_of(second.client, order_id)
        assert [e["kind"] for e in events].count("fulfilled") == 1
        completed = [e["step"] for e in events if e["kind"] == "step_completed"]
        assert completed == ["reserve", "fraud_check", "payment", "pick", "pack", "ship"]
    resumed = [[e["kind"] for e in await events_of(second.client, i)] for i in ids[:2]]
    for kinds in resumed:
        assert "lease_released" in kinds and "resumed" in kinds


async def test_a_late_step_does_not_delay_the_order(start_app: StartApp) -> None:
    # Steps of a 2 s order: reserve 0.2, fraud_check 0.4, payment 0.3, pick 0.4, pack 0.3,
    # ship 0.4. They keep to a timetable from the start: a step that ends late (a slow
    # write, a busy event loop) shortens the next, so the order still takes 2 s.
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="2")
    response = await place(running.client, customer="alice")
    order_id = response.json()["id"]
    await quiescent(running)  # reserve sleeps
    clock.advance(0.5)  # reserve ends 0.3 s late
    await quiescent(running)  # fraud_check sleeps, due 0.6 s after the start
    clock.advance(0.1)
    await quiescent(running)
    kinds = [(e["kind"], e["step"]) for e in await events_of(running.client, order_id)]
    assert ("step_completed", "fraud_check") in kinds
    await drive(running, lambda: all_terminal(running.client, [order_id]), step_s=0.05)
    events = await events_of(running.client, order_id)
    by_kind = {e["kind"]: at(e) for e in events}
    assert (by_kind["fulfilled"] - by_kind["started"]).total_seconds() < 2.05
    took = {e["step"]: e["detail"]["took_s"] for e in events if e["kind"] == "step_completed"}
    assert took["reserve"] == 0.5 and took["fraud_check"] == 0.1
