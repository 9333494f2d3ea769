"""Priorities and deadlines over HTTP, on a real database, in virtual time."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from retail.runtime.clock import ManualClock
from tests.conftest import Running, StartApp, drive, quiescent

DELAY_S = 10


async def order(
    client: httpx.AsyncClient, customer: str = "alice", quantity: int = 1, **fields: Any
) -> httpx.Response:
    return await client.post(
        "/orders",
        json={"customer_id": customer, "items": [{"sku": "MUG-1", "quantity": quantity}], **fields},
    )


async def busy(start_app: StartApp, **settings: Any) -> Running:
    """Capacity 1, orders of `DELAY_S` s, virtual time; the one slot taken by a first order."""
    values: dict[str, Any] = {"capacity": 1, "fulfilment_delay": str(DELAY_S)}
    values.update(settings)
    running = await start_app(clock=ManualClock(), **values)
    assert (await order(running.client, "first")).status_code == 202
    await quiescent(running)
    assert running.services.pool.in_flight == 1
    return running


async def stock(client: httpx.AsyncClient) -> int:
    value: int = (await client.get("/products/MUG-1")).json()["stock"]
    return value


# --- priorities --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "settings"),
    [
        ("reject", {"capacity": 2}),  # one of two slots held for critical orders
        ("queue", {"queue_limit": 2}),  # one of two queue places held for critical orders
        ("degrade", {"queue_limit": 2}),
    ],
)
async def test_with_capacity_full_a_critical_order_is_admitted_where_a_standard_one_is_not(
    start_app: StartApp, mode: str, settings: dict[str, Any]
) -> None:
    running = await busy(start_app, overload_mode=mode, critical_reserve=1, **settings)
    client = running.client
    if mode != "reject":  # the first free queue place goes to anyone
        assert (await order(client, "bob")).status_code == 202
    refused = await order(client, "carol")
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert "held for critical orders" in refused.json()["detail"]
    critical = await order(client, "dave", priority="critical")
    assert critical.status_code == 202, critical.text
    body = critical.json()
    assert (body["priority"], body["service_level"]) == ("critical", "full")
    capacity = (await client.get("/capacity")).json()
    assert capacity["critical_reserve"] == 1
    by_priority = capacity["by_priority"]
    assert by_priority["standard"]["counters"]["rejected"] == 1
    assert by_priority["critical"]["counters"]["accepted"] == 1
    assert by_priority["critical"]["counters"]["rejected"] == 0
    assert capacity["counters"]["rejected"] == 1


async def test_waiting_orders_start_by_priority_then_first_come(start_app: StartApp) -> None:
    running = await busy(start_app, fulfilment_delay="1", sheddable_max_wait_s=100)
    client = running.client
    placed = {}
    for name, priority in (
        ("s1", "sheddable"),
        ("t1", "standard"),
        ("c1", "critical"),
        ("t2", "standard"),
        ("c2", "critical"),
    ):
        response = await order(client, name, priority=priority)
        assert response.status_code == 202, response.text
        placed[name] = response.json()
    # Each is placed among the orders that start before it.
    assert [placed[n]["queue_position"] for n in ("s1", "t1", "c1", "t2", "c2")] == [1, 1, 1, 3, 2]
    start_order = ["c1", "c2", "t1", "t2", "s1"]
    positions = [
        (await client.get(f"/orders/{placed[name]['id']}")).json()["queue_position"]
        for name in start_order
    ]
    assert positions == [1, 2, 3, 4, 5]
    critical = (await client.get("/orders?priority=critical")).json()["items"]
    assert [o["customer_id"] for o in critical] == ["c2", "c1"]
    assert (await client.get("/orders?priority=urgent")).status_code == 422

    async def all_done() -> bool:
        page = (await client.get("/orders?limit=10")).json()["items"]
        return all(o["status"] == "fulfilled" for o in page)

    await drive(running, all_done, step_s=0.25)
    started = {
        name: (await client.get(f"/orders/{placed[name]['id']}")).json()["started_at"]
        for name in start_order
    }
    assert sorted(start_order, key=lambda name: started[name]) == start_order
    created = (await client.get(f"/orders/{placed['c1']['id']}/events")).json()[0]
    assert created["detail"]["priority"] == "critical"


@pytest.mark.parametrize("mode", ["queue", "degrade"])
async def test_a_sheddable_order_is_refused_when_it_would_wait(
    start_app: StartApp, mode: str
) -> None:
    running = await busy(start_app, overload_mode=mode)
    client = running.client
    before = await stock(client)
    refused = await order(client, "bob", priority="sheddable")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(DELAY_S)  # when it could start at once
    problem = refused.json()
    assert (problem["priority"], problem["cause"]) == ("sheddable", "sheddable")
    assert "sheddable order is taken only if it can start within 0 s" in problem["detail"]
    assert await stock(client) == before  # nothing written
    # A standard order still waits its turn.
    assert (await order(client, "carol")).status_code == 202


async def test_a_sheddable_order_is_taken_when_a_slot_is_free(start_app: StartApp) -> None:
    running = await start_app(clock=ManualClock(), capacity=1, fulfilment_delay=str(DELAY_S))
    taken = await order(running.client, priority="sheddable")
    assert taken.status_code == 202
    assert taken.json()["priority"] == "sheddable"


async def test_critical_orders_are_never_degraded(start_app: StartApp) -> None:
    running = await busy(start_app, overload_mode="degrade", sheddable_max_wait_s=100)
    client = running.client
    levels = {}
    for priority in ("standard", "sheddable", "critical"):
        response = await order(client, priority, priority=priority)
        assert response.status_code == 202
        levels[priority] = (response.json()["service_level"], response.json()["skipped_steps"])
    assert levels["standard"][0] == levels["sheddable"][0] == "degraded"
    assert levels["critical"] == ("full", [])
    capacity = (await client.get("/capacity")).json()["by_priority"]
    assert capacity["critical"]["counters"]["degraded"] == 0
    assert capacity["critical"]["counters"]["queued"] == 1
    assert capacity["sheddable"]["counters"]["degraded"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"priority": "urgent"},
        {"priority": 1},
        {"priority": None},
        {"start_within_s": 0},
        {"start_within_s": -1},
        {"start_within_s": "5"},
    ],
)
async def test_a_bad_priority_or_deadline_is_a_422(start_app: StartApp, body: Any) -> None:
    running = await start_app()
    response = await order(running.client, **body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_decisions_are_counted_per_priority_in_metrics(start_app: StartApp) -> None:
    running = await busy(start_app)
    await order(running.client, priority="critical")
    await order(running.client, priority="sheddable")
    text = (await running.client.get("/metrics")).text
    for outcome, priority in (
        ("admit", "standard"),
        ("queue", "critical"),
        ("reject", "sheddable"),
    ):
        series = (
            f'retail_admission_decisions_total{{mode="queue",outcome="{outcome}",'
            f'priority="{priority}"}} 1.0'
        )
        assert series in text


# --- deadlines ---------------------------------------------------------------------------


async def test_an_order_whose_deadline_cannot_be_met_is_refused(start_app: StartApp) -> None:
    running = await busy(start_app)
    client = running.client
    before = await stock(client)
    refused = await order(client, "bob", start_within_s=4)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "6"  # the estimated start (10 s) less 4 s
    problem = refused.json()
    assert problem["cause"] == "deadline"
    assert "cannot start within 4 s" in problem["detail"]
    assert "estimated start is in 10.0 s" in problem["detail"]
    assert await stock(client) == before
    accepted = await order(client, "carol", start_within_s=10)
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["start_deadline"] is not None
    assert body["estimated_start_at"] <= body["start_deadline"]


async def test_a_queued_order_whose_time_runs_out_expires_without_a_worker(
    start_app: StartApp,
) -> None:
    running = await busy(start_app)
    client = running.client
    before = await stock(client)
    waiting = await order(client, "bob", quantity=3, start_within_s=15)
    assert waiting.status_code == 202
    assert await stock(client) == before - 3
    # A critical order arrives and starts before it: bob would start at 20 s, too late.
    assert (await order(client, "carol", priority="critical")).status_code == 202
    bob = waiting.json()["id"]

    async def expired() -> bool:
        return bool((await client.get(f"/orders/{bob}")).json()["status"] == "expired")

    await drive(running, expired, step_s=0.5)
    clock = running.clock
    assert isinstance(clock, ManualClock)
    view = (await client.get(f"/orders/{bob}")).json()
    assert view["started_at"] is None  # no worker ever took it
    assert "retry-after" not in (await client.get(f"/orders/{bob}")).headers
    events = (await client.get(f"/orders/{bob}/events")).json()
    assert [e["kind"] for e in events] == ["created", "expired"]
    assert events[-1]["status"] == "expired"
    assert events[-1]["detail"]["stock_released"] is True
    assert await stock(client) == before - 1  # bob's 3 back; carol's 1 taken
    assert (await client.post(f"/orders/{bob}/cancel")).status_code == 409
    assert await stock(client) == before - 1  # back exactly once
    assert running.services.admission.queued <= 1  # carol, if she has not started yet
    assert [
        o["customer_id"] for o in (await client.get("/orders?status=expired")).json()["items"]
    ] == ["bob"]


async def test_in_degrade_mode_a_critical_deadline_counts_the_critical_orders_ahead_in_full(
    start_app: StartApp,
) -> None:
    """Critical orders are never degraded, so the one waiting ahead takes its full 10 s:
    a second critical order that must start within 15 s cannot (it would start at 20 s),
    and is refused up front instead of expiring in the queue."""
    running = await busy(start_app, overload_mode="degrade", queue_limit=10)
    client = running.client
    ahead = await order(client, "bob", priority="critical", start_within_s=15)
    assert ahead.status_code == 202
    assert ahead.json()["service_level"] == "full"
    refused = await order(client, "carol", priority="critical", start_within_s=15)
    assert refused.status_code == 503, refused.text
    assert refused.json()["cause"] == "deadline"
    assert "estimated start is in 20.0 s" in refused.json()["detail"]
    # A standard order goes on the reduced path (4 s) behind it; a critical order that
    # comes after it starts before it, at 20 s: just in time.
    degraded = await order(client, "dave")
    assert degraded.json()["service_level"] == "degraded"
    kept = await order(client, "erin", priority="critical", start_within_s=20)
    assert kept.status_code == 202, kept.text
    # Bob 10-20 s, erin 20-30 s, dave 30-34 s: the next standard order starts at 34 s.
    late = await order(client, "frank", start_within_s=33)
    assert late.status_code == 503
    assert "estimated start is in 34.0 s" in late.json()["detail"]
    ids = [answer.json()["id"] for answer in (ahead, degraded, kept)]

    async def all_ended() -> bool:
        views = [(await client.get(f"/orders/{i}")).json()["status"] for i in ids]
        return all(status in ("fulfilled", "failed", "expired") for status in views)

    await drive(running, all_ended, step_s=0.5)
    assert [(await client.get(f"/orders/{i}")).json()["status"] for i in ids] == ["fulfilled"] * 3
