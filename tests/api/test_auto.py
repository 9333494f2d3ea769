"""`auto` overload mode and the Retry-After spread, over HTTP on a real database, in
virtual time."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from retail.runtime.clock import ManualClock
from tests.conftest import ADMIN_TOKEN, Running, StartApp, drive, quiescent

DELAY_S = 10  # full service; the reduced path takes 4 s (fraud check skipped, the rest halved)
TARGET_S = 40  # refusing stops below a quarter of it: 10 s


async def order(client: httpx.AsyncClient, customer: str, **fields: Any) -> httpx.Response:
    return await client.post(
        "/orders",
        json={"customer_id": customer, "items": [{"sku": "MUG-1", "quantity": 1}], **fields},
    )


async def level(client: httpx.AsyncClient) -> str:
    value: str = (await client.get("/capacity")).json()["level"]
    return value


async def auto_service(start_app: StartApp) -> tuple[ManualClock, Running, httpx.Response]:
    """Two slots of DELAY_S in virtual time, switched to auto mode (target TARGET_S)."""
    clock = ManualClock()
    running = await start_app(
        clock=clock, capacity=2, fulfilment_delay=str(DELAY_S), fair_share=False
    )
    switched = await running.client.put(
        "/admin/capacity",
        json={"mode": "auto", "target_wait_s": TARGET_S},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert switched.status_code == 200, switched.text
    return clock, running, switched


async def test_auto_moves_between_levels_and_back_as_the_load_rises_and_falls(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retail.capacity")
    clock, running, switched = await auto_service(start_app)
    client = running.client
    assert (switched.json()["mode"], switched.json()["level"]) == ("auto", "queue")

    # The load rises: two orders a second, where two slots fulfil 0.2 (in full) or 0.5
    # (on the reduced path) a second. Each answer, with the level it was given at.
    answers: list[tuple[str, str]] = []  # (level before, outcome)
    for n in range(200):
        before = await level(client)
        for _ in range(2):
            answer = await order(client, f"rising-{n}")
            if answer.status_code == 503:
                assert answer.json()["cause"] == "wait_target"
                assert answer.headers["content-type"] == "application/problem+json"
                outcome = "refused"
            else:
                assert answer.status_code == 202, answer.text
                outcome = answer.json()["service_level"]
            answers.append((before, outcome))
        spells = [level for level, _ in answers]
        if before == "refuse" and "degrade" in spells:
            break
        await quiescent(running)
        clock.advance(1)
    else:
        raise AssertionError(f"auto never refused twice: {answers}")
    # Queueing in full while the predicted wait is within the target; past it, refusing
    # until it is under a quarter of it; then the reduced path, until the wait is over
    # the target again. Never an order that would wait longer.
    levels = [
        before for n, (before, _) in enumerate(answers) if n == 0 or answers[n - 1][0] != before
    ]
    assert levels == ["queue", "refuse", "degrade", "refuse"]
    outcomes = {level: {o for b, o in answers if b == level} for level in levels}
    assert outcomes == {"queue": {"full"}, "refuse": {"refused"}, "degrade": {"degraded"}}
    refused = await order(client, "refused")
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "over the target 40 s" in refused.json()["detail"]
    # A critical order waits only behind critical ones: queued, in full, while refusing.
    critical = await order(client, "critical", priority="critical")
    assert critical.status_code == 202, critical.text
    assert (critical.json()["service_level"], await level(client)) == ("full", "refuse")
    # (Cancelled again: jumping ahead, it would delay the others past the target.)
    cancelled = await client.post(f"/orders/{critical.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    metrics = (await client.get("/metrics")).text
    assert 'retail_overload_level{level="refuse"} 1.0' in metrics
    assert 'retail_overload_level{level="queue"} 0.0' in metrics

    # The load falls (no more orders): refuse -> degrade -> queue, once each.
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
        ("queue", "refuse"),
        ("refuse", "degrade"),
        ("degrade", "refuse"),
        ("refuse", "degrade"),
        ("degrade", "queue"),
    ]
    # Every order accepted started within the target: the prediction is exact here.
    waits, cursor = [], ""
    while cursor is not None:
        page = (await client.get(f"/orders?limit=100{cursor}")).json()
        for item in page["items"]:
            if item["customer_id"].startswith("rising"):
                started = datetime.fromisoformat(item["started_at"])
                waits.append((started - datetime.fromisoformat(item["created_at"])).total_seconds())
        cursor = page["next_cursor"] and f"&cursor={page['next_cursor']}"
    assert len(waits) == sum(outcome != "refused" for _, outcome in answers)
    assert max(waits) <= TARGET_S


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
    filled, before = 0, -1
    while filled != before:  # slots (and queue) full, once the workers took what they may
        before = filled
        while (await order(client, f"fill-{filled}")).status_code == 202:
            filled += 1
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
    # Retry-After-Ms: the same estimate in milliseconds, spread over the same quarter of
    # the wait (no whole seconds to round to), each refusal its own value.
    fine = [int(answer.headers["retry-after-ms"]) for answer in burst]
    assert all(0.875 * DELAY_S * 1000 <= ms <= 1.125 * DELAY_S * 1000 for ms in fine), fine
    assert len(set(fine)) == len(fine), fine
    assert sum(fine) / len(fine) == pytest.approx(DELAY_S * 1000, rel=0.02)
    assert all(abs(ms / 1000 - s) < 1.5 for ms, s in zip(fine, values, strict=True))

    # Later, with room close, the window is short again: one second at least.
    assert isinstance(running.clock, ManualClock)
    running.clock.advance(DELAY_S - 1)
    await quiescent(running)
    later = [await order(client, f"later-{n}") for n in range(4)]
    assert {answer.status_code for answer in later} == {503}
    assert {int(answer.headers["retry-after"]) for answer in later} <= {1, 2}
    # Room back in 0.3 s: whole seconds can only say 1; the milliseconds say 0.3 s.
    running.clock.advance(0.7)
    await quiescent(running)
    soon = [await order(client, f"soon-{n}") for n in range(4)]
    assert {answer.status_code for answer in soon} == {503}
    assert {answer.headers["retry-after"] for answer in soon} == {"1"}
    assert all(262 <= int(answer.headers["retry-after-ms"]) <= 338 for answer in soon), [
        answer.headers["retry-after-ms"] for answer in soon
    ]


async def test_once_the_queue_drains_the_next_order_a_slot_can_take_is_served_as_usual(
    start_app: StartApp,
) -> None:
    clock, running, _ = await auto_service(start_app)
    client = running.client
    # Overload: two orders a second on two slots of 10 s, until auto refuses.
    for n in range(200):
        for _ in range(2):
            answer = await order(client, f"burst-{n}")
            assert answer.status_code in (202, 503), answer.text
        if await level(client) == "refuse":
            break
        await quiescent(running)
        clock.advance(1)
    else:
        raise AssertionError("auto never refused")

    async def capacity() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get("/capacity")).json()
        return body

    # The overload stops; the queue drains, then a slot frees.
    async def drained() -> bool:
        return (await capacity())["queued"] == 0

    await drive(running, drained, step_s=0.5)

    async def slot_free() -> bool:
        return (await capacity())["in_flight"] < 2

    await drive(running, slot_free, step_s=0.5)
    # From then on an order fares as if the overload had never been: taken, in full,
    # started at once, and auto back at its first level.
    answer = await order(client, "after")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["service_level"], body["queue_position"]) == ("full", 1)
    assert await level(client) == "queue"
    await quiescent(running)
    placed = (await client.get(f"/orders/{body['id']}")).json()
    assert placed["status"] == "processing"
    assert placed["started_at"] == placed["created_at"]
