"""`auto` overload mode and the Retry-After spread, over HTTP on a real database, in
virtual time."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import httpx
import pytest

from retail.runtime.clock import ManualClock
from tests.conftest import ADMIN_TOKEN, Running, StartApp, drive, quiescent

DELAY_S = 10  # full service; the reduced path takes 4 s (fraud check skipped, the rest halved)
TARGET_S = 25


async def order(client: httpx.AsyncClient, customer: str, **fields: Any) -> httpx.Response:
    return await client.post(
        "/orders",
        json={"customer_id": customer, "items": [{"sku": "MUG-1", "quantity": 1}], **fields},
    )


async def level(client: httpx.AsyncClient) -> str:
    value: str = (await client.get("/capacity")).json()["level"]
    return value


async def test_auto_moves_between_levels_and_back_as_the_load_rises_and_falls(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retail.capacity")
    running = await start_app(
        clock=ManualClock(), capacity=1, fulfilment_delay=str(DELAY_S), fair_share=False
    )
    client = running.client
    switched = await client.put(
        "/admin/capacity",
        json={"mode": "auto", "target_wait_s": TARGET_S},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert switched.status_code == 200, switched.text
    assert (switched.json()["mode"], switched.json()["level"]) == ("auto", "queue")

    assert (await order(client, "first")).status_code == 202  # starts at once
    await quiescent(running)
    # The level is what the next order that cannot start at once would get: its
    # predicted wait is 10 s, then 20 s: within the target, they queue in full.
    for name in ("q1", "q2"):
        assert await level(client) == "queue"
        queued = await order(client, name)
        assert queued.status_code == 202, queued.text
        assert queued.json()["service_level"] == "full"

    # 30 s in full is over the target; the reduced path (10 + 2·4 s, 10 + 3·4 s) meets it.
    for name in ("d1", "d2"):
        assert await level(client) == "degrade"
        degraded = await order(client, name)
        assert degraded.status_code == 202, degraded.text
        assert degraded.json()["service_level"] == "degraded"

    # 10 + 4·4 = 26 s even on the reduced path: refused, and said why.
    assert await level(client) == "refuse"
    refused = await order(client, "r1")
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["cause"] == "wait_target"
    assert "over the target 25 s" in refused.json()["detail"]
    # A critical order waits only behind critical ones: queued, in full, while refusing.
    critical = await order(client, "c1", priority="critical")
    assert critical.status_code == 202, critical.text
    assert (critical.json()["service_level"], await level(client)) == ("full", "refuse")

    metrics = (await client.get("/metrics")).text
    assert 'retail_overload_level{level="refuse"} 1.0' in metrics
    assert 'retail_overload_level{level="queue"} 0.0' in metrics

    # The load falls as orders finish: refuse -> degrade -> queue, once each (hysteresis:
    # each level is left only below half the target, so it does not flap).
    seen = ["refuse"]

    async def back_to_queue() -> bool:
        now = await level(client)
        if now != seen[-1]:
            seen.append(now)
        return now == "queue"

    await drive(running, back_to_queue, step_s=0.5)
    assert seen == ["refuse", "degrade", "queue"]
    assert 'retail_overload_level{level="queue"} 1.0' in (await client.get("/metrics")).text
    again = await order(client, "later")
    assert again.status_code == 202, again.text
    assert again.json()["service_level"] == "full"

    switches = [
        (record.fields["from_level"], record.fields["to_level"])  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "retail.capacity"
    ]
    assert switches == [
        ("queue", "degrade"),
        ("degrade", "refuse"),
        ("refuse", "degrade"),
        ("degrade", "queue"),
    ]
    counters = (await client.get("/capacity")).json()["counters"]
    assert (counters["queued"], counters["degraded"], counters["rejected"]) == (4, 2, 1)


@pytest.mark.parametrize(
    ("mode", "settings"),
    [("reject", {"capacity": 2}), ("queue", {"capacity": 2, "queue_limit": 2})],
)
async def test_retry_after_is_spread_across_a_burst(
    start_app: StartApp, mode: str, settings: dict[str, Any]
) -> None:
    running: Running = await start_app(
        clock=ManualClock(),
        overload_mode=mode,
        fulfilment_delay=str(DELAY_S),
        fair_share=False,
        **settings,
    )
    client = running.client
    while (await order(client, "fill")).status_code == 202:
        pass  # slots (and queue) full; the one refused here starts the burst
    await quiescent(running)

    burst = [await order(client, f"burst-{n}") for n in range(16)]
    assert {answer.status_code for answer in burst} == {503}
    values = [int(answer.headers["retry-after"]) for answer in burst]
    assert [answer.json()["retry_after_s"] for answer in burst] == values
    # Room is back in 10 s: the burst is told to come back over a window of a quarter
    # of that wait (2.5 s) around it, on average at 10 s, not all at once.
    assert min(values) >= DELAY_S - 1
    assert max(values) <= DELAY_S + 2
    counts = Counter(values)
    assert len(counts) >= 3, values
    assert max(counts.values()) <= len(values) // 2, values
    assert sum(values) / len(values) == pytest.approx(DELAY_S, abs=0.5)

    # Later, with room close, the window is short again: one second at least.
    assert isinstance(running.clock, ManualClock)
    running.clock.advance(DELAY_S - 1)
    await quiescent(running)
    later = [await order(client, f"later-{n}") for n in range(4)]
    assert {answer.status_code for answer in later} == {503}
    assert {int(answer.headers["retry-after"]) for answer in later} <= {1, 2}
