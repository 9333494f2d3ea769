"""Load runs against the real app (over ASGI) and against fake servers with known answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from retail.loadgen.pacer import Timer
from retail.loadgen.report import summarize
from retail.loadgen.runner import LoadConfig, LoadRun, run_load
from retail.loadgen.schedule import Schedule
from tests.conftest import StartApp

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


async def fake_run(
    handler: Handler, schedule: Schedule, timer: Timer | None = None, **options: Any
) -> LoadRun:
    """A run of `schedule` (nothing followed or sampled) against a fake server: `handler`."""
    config = LoadConfig(schedule=schedule, follow=False, sample_interval_s=None, **options)
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        return await run_load(config, client=client, timer=timer)


async def test_a_run_counts_what_the_service_stored_and_fulfilled(start_app: StartApp) -> None:
    running = await start_app(capacity=3, fulfilment_delay="0.05")
    config = LoadConfig(
        schedule=Schedule.constant(24, 0.5),
        follow_timeout_s=15,
        sample_interval_s=0.05,
        skus=("MUG-1", "TEE-M"),
    )
    run = await run_load(config, client=running.client)
    summary = summarize(run)

    stored = (
        await running.client.get("/orders", params={"customer_id": run.customer, "limit": 200})
    ).json()["items"]
    assert summary.orders == 12
    assert summary.accepted == len(stored) == 12
    assert summary.refused == summary.errors == 0
    assert {o.order_id for o in run.orders} == {order["id"] for order in stored}
    assert summary.fulfilled == sum(order["status"] == "fulfilled" for order in stored) == 12
    assert summary.unfinished == 0
    assert sorted(o.sku for o in run.orders) == ["MUG-1"] * 6 + ["TEE-M"] * 6
    # latency is counted once per order, fulfilment once per fulfilled order
    assert summary.latency_accepted.count == 12
    assert summary.fulfilment.count == 12
    assert summary.fulfilment.p50_s is not None and summary.fulfilment.p50_s >= 0.05
    assert summary.goodput_per_s is not None and summary.goodput_per_s > 0
    for order in run.orders:
        kinds = [kind for kind, _ in order.events]
        assert kinds[0] == "created" and kinds[-1] == "fulfilled"
        assert order.latency_s is not None and order.latency_s >= 0
        assert order.sent_s is not None or order.started_s is not None
    # GET /capacity was sampled while the run went on
    assert run.samples and all(s.capacity == 3 for s in run.samples)
    assert max(s.in_flight for s in run.samples) <= 3


async def test_in_reject_mode_503s_are_counted_as_refused(start_app: StartApp) -> None:
    running = await start_app(capacity=1, overload_mode="reject", fulfilment_delay="5")
    config = LoadConfig(schedule=Schedule.constant(50, 0.2), follow=False, sample_interval_s=None)
    run = await run_load(config, client=running.client)
    summary = summarize(run)

    counters = (await running.client.get("/capacity")).json()["counters"]
    stored = (await running.client.get("/orders", params={"customer_id": run.customer})).json()
    assert summary.orders == 10
    assert summary.accepted == len(stored["items"]) == counters["accepted"] == 1
    assert summary.refused_by_status == {503: 9} and counters["rejected"] == 9
    assert summary.latency_refused.count == 9
    assert all(
        o.retry_after_s is not None and o.retry_after_s >= 1 for o in run.orders if o.status == 503
    )
    assert {o.problem_type for o in run.orders if o.status == 503} != {None}
    assert summary.goodput_per_s is None  # not followed


async def test_sends_do_not_wait_for_answers() -> None:
    """The fake server answers nothing until every order has arrived: a closed-loop
    generator would stall; this one sends all 20 on time and counts the wait."""
    arrived: list[float] = []
    everyone = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(loop.time())
        if len(arrived) == 20:
            everyone.set()
        await everyone.wait()
        return httpx.Response(503, json={"type": "about:blank", "title": "busy", "status": 503})

    run = await asyncio.wait_for(fake_run(handler, Schedule.constant(100, 0.2)), timeout=5)

    assert len(arrived) == 20
    spread = arrived[-1] - arrived[0]
    assert 0.15 <= spread < 0.5  # paced over the schedule's 0.19 s, not bunched, not stalled
    first = run.orders[0]
    # measured from its due time: the first order waited for the last one to arrive
    assert first.latency_s is not None and first.latency_s >= 0.15
    assert summarize(run).refused_by_status == {503: 20}


class Ticker:
    """Virtual time for one order at a time: a sleep just moves the clock."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def accepted() -> httpx.Response:
    body = {
        "id": str(uuid.uuid4()),
        "status": "queued",
        "service_level": "full",
        "created_at": "2030-01-01T00:00:00Z",
    }
    return httpx.Response(202, json=body, headers={"Retry-After": "1"})


async def test_retries_wait_as_retry_after_says_and_reuse_the_idempotency_key() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "7"}, json={"type": "x", "status": 503}),
        httpx.Response(503, headers={"Retry-After": "3"}, json={"type": "x", "status": 503}),
    ]
    keys: list[str | None] = []
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        bodies.append(json.loads(request.content))
        return answers.pop(0) if answers else accepted()

    timer = Ticker()
    run = await fake_run(handler, Schedule.constant(1, 1), timer, retries=3, idempotency_keys=True)

    [order] = run.orders
    assert order.attempts == 3 and order.outcome == "accepted"
    assert timer.sleeps == [7, 3]
    assert order.latency_s == 10  # from due, retries included
    assert len(set(keys)) == 1 and keys[0] is not None
    assert bodies[0] == bodies[1] == bodies[2]
    assert summarize(run).retries == 2


async def test_retries_wait_as_retry_after_ms_says_where_it_is_given() -> None:
    # The milliseconds say what whole seconds cannot; one the client cannot read is
    # passed over for the Retry-After beside it.
    answers = [
        httpx.Response(
            503, headers={"Retry-After": "1", "Retry-After-Ms": "250"}, json={"status": 503}
        ),
        httpx.Response(
            503, headers={"Retry-After": "2", "Retry-After-Ms": "1.5e3"}, json={"status": 503}
        ),
        httpx.Response(
            503, headers={"Retry-After": "1", "Retry-After-Ms": b"\xb2"}, json={"status": 503}
        ),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else accepted()

    timer = Ticker()
    run = await fake_run(handler, Schedule.constant(1, 1), timer, retries=3)

    [order] = run.orders
    assert order.outcome == "accepted" and order.attempts == 4
    assert timer.sleeps == [0.25, 2, 1]
    assert order.retry_after_s == 1  # as reported: the Retry-After of the last answer


async def test_without_retries_a_refusal_is_final_and_keys_are_unique() -> None:
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        return httpx.Response(503, headers={"Retry-After": "2"}, json={"type": "x", "status": 503})

    run = await fake_run(handler, Schedule.constant(5, 1), Ticker(), idempotency_keys=True)
    assert len(keys) == len(set(keys)) == 5
    assert all(o.attempts == 1 and o.status == 503 for o in run.orders)


async def test_transport_errors_are_errors_not_refusals() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    run = await fake_run(handler, Schedule.constant(5, 1), Ticker())
    summary = summarize(run)
    assert summary.errors_by_kind == {"ConnectError": 5}
    assert summary.accepted == summary.refused == 0


async def test_only_a_key_still_in_flight_makes_a_409_worth_retrying() -> None:
    answers = {
        "in-use": httpx.Response(409, json={"type": "/problems/idempotency-key-in-use"}),
        "stock": httpx.Response(409, json={"type": "/problems/insufficient-stock"}),
    }
    attempts: dict[str, int] = {"in-use": 0, "stock": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        sku = json.loads(request.content)["items"][0]["sku"]
        kind = "in-use" if sku == "MUG-1" else "stock"
        attempts[kind] += 1
        return answers[kind] if attempts[kind] == 1 else accepted()

    run = await fake_run(
        handler,
        Schedule.constant(2, 1),
        Ticker(),
        skus=("MUG-1", "TEE-M"),
        retries=2,
        idempotency_keys=True,
    )
    assert attempts == {"in-use": 2, "stock": 1}
    assert [o.outcome for o in run.orders] == ["accepted", "refused"]
    assert summarize(run).refused_by_problem == {"409 insufficient-stock": 1}
