"""Fair shares over HTTP: a flooding customer does not starve a small one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from retail.runtime.clock import ManualClock
from tests.conftest import Running, StartApp, drive, place

FLOOD = 10
PLACES = 4  # reject mode: the slots; queue mode: the queue (a burst fills it first)


async def idle(running: Running) -> bool:
    services = running.services
    return services.pool.in_flight == 0 and services.admission.queued == 0


async def flood_and_small(
    running: Running, rounds: int, free: Callable[[list[str]], Awaitable[None]]
) -> tuple[list[list[int]], list[httpx.Response], int]:
    """Each round the flooder fills the service first, then the small customer asks once;
    then `free` frees the places of the orders accepted. Flood statuses per round, the
    flooder's 429s, and how many of the small customer's orders were accepted."""
    client = running.client
    flood_statuses: list[list[int]] = []
    over_share: list[httpx.Response] = []
    small_accepted = 0
    for _ in range(rounds):
        flood = await asyncio.gather(*(place(client, customer="flood") for _ in range(FLOOD)))
        flood_statuses.append(sorted(r.status_code for r in flood))
        over_share += [r for r in flood if r.status_code == 429]
        small = await place(client, customer="small")
        assert small.status_code in (202, 503), small.text
        small_accepted += small.status_code == 202
        await free([r.json()["id"] for r in (*flood, small) if r.status_code == 202])
    return flood_statuses, over_share, small_accepted


@pytest.mark.parametrize(
    "limits",
    [
        {"overload_mode": "reject", "capacity": PLACES},
        {"overload_mode": "queue", "capacity": 2, "queue_limit": PLACES},
    ],
    ids=["reject", "queue"],
)
async def test_a_flooding_customer_does_not_starve_a_small_one(
    start_app: StartApp, limits: dict[str, object]
) -> None:
    # Orders wait (no workers here) until cancelled: each round frees every place.
    running = await start_app(clock=ManualClock(), workers_enabled=False, **limits)
    client = running.client

    async def cancel(order_ids: list[str]) -> None:
        for order_id in order_ids:
            assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 200

    rounds = 20
    flood_statuses, over_share, small_accepted = await flood_and_small(running, rounds, cancel)
    # Alone at first, the flooder had the whole service and the usual 503 past it.
    assert flood_statuses[0] == [202] * PLACES + [503] * (FLOOD - PLACES)
    # Once the small customer competes, the flooder stops one place short: 429.
    short = [202] * (PLACES - 1) + [429] * (FLOOD - PLACES + 1)
    assert all(statuses == short for statuses in flood_statuses[1:])
    assert small_accepted >= 0.9 * rounds
    assert len(over_share) == (rounds - 1) * (FLOOD - PLACES + 1)
    refused = over_share[0]
    assert refused.headers["retry-after"].isdigit()
    assert int(refused.headers["retry-after-ms"]) >= 1
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/over-fair-share")
    assert problem["status"] == 429
    assert problem["fair_share"] == PLACES - 1
    assert problem["competing_customers"] == 2
    assert "fair share" in problem["detail"]

    metrics = (await client.get("/metrics")).text
    assert f'retail_fair_share_checks_total{{outcome="over_share"}} {float(len(over_share))}' in (
        metrics
    )
    assert 'retail_fair_share_top_refused{rank="1"}' in metrics
    assert 'retail_fair_share_top_refused{rank="2"} 0.0' in metrics
    assert "retail_fair_share_customers 2.0" in metrics


async def test_fulfilled_orders_free_the_small_customers_place(start_app: StartApp) -> None:
    running = await start_app(
        clock=ManualClock(), fulfilment_delay="0.1", overload_mode="reject", capacity=PLACES
    )

    async def fulfil(_: list[str]) -> None:
        await drive(running, lambda: idle(running))

    rounds = 10
    _, over_share, small_accepted = await flood_and_small(running, rounds, fulfil)
    assert small_accepted >= 0.9 * rounds
    assert len(over_share) == (rounds - 1) * (FLOOD - PLACES + 1)


async def test_without_fair_shares_the_flooder_takes_everything(start_app: StartApp) -> None:
    running = await start_app(
        clock=ManualClock(), fulfilment_delay="0.1", overload_mode="reject", fair_share=False
    )
    client = running.client
    for _ in range(3):
        flood = await asyncio.gather(*(place(client, customer="flood") for _ in range(8)))
        assert sorted(r.status_code for r in flood) == [202] * 4 + [503] * 4
        assert (await place(client, customer="small")).status_code == 503
        await drive(running, lambda: idle(running))


async def test_places_per_customer_are_rebuilt_from_the_store_at_start(
    start_app: StartApp,
) -> None:
    first = await start_app(clock=ManualClock(), fulfilment_delay="10", capacity=1, queue_limit=10)
    for customer in ("a", "a", "b", "a"):
        assert (await place(first.client, customer=customer)).status_code == 202
    # A second process on the same database (no workers): it counts what the store holds.
    second = await start_app(clock=ManualClock(), workers_enabled=False)
    fairness = second.services.admission.fairness
    assert fairness is not None
    assert fairness.held == {"a": 3, "b": 1}
