"""`retail load --mix / --start-within / --retry`: what is sent, what the service stored,
and the figures per priority (against the real app and database, and against fake
servers where only the client's behaviour is in question)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from retail.cli import app
from retail.loadgen.mix import PRIORITIES, Mix, RetryBudget
from retail.loadgen.plots import plot_run
from retail.loadgen.report import summarize
from retail.loadgen.runner import LoadConfig, run_load
from retail.loadgen.schedule import Schedule
from tests.conftest import StartApp
from tests.loadgen.test_runner import Ticker

MIX = Mix.parse("critical=0.2,standard=0.5,sheddable=0.3")


async def test_every_order_is_sent_with_its_priority_and_deadline(start_app: StartApp) -> None:
    running = await start_app(capacity=40, fulfilment_delay="0.01")
    config = LoadConfig(
        schedule=Schedule.constant(200, 0.2),
        seed=7,
        mix=MIX,
        start_within_s=30,
        follow_timeout_s=30,
        sample_interval_s=None,
        fetch_events=False,
    )
    run = await run_load(config, client=running.client)
    summary = summarize(run)

    stored = (
        await running.client.get("/orders", params={"customer_id": run.customer, "limit": 200})
    ).json()["items"]
    by_id = {order["id"]: order for order in stored}
    assert summary.orders == len(run.orders) == 40
    assert len(by_id) == summary.accepted > 0
    # the priorities drawn for this seed, the same list `retail simulate` draws
    assert [o.priority for o in run.orders] == MIX.assign(len(run.orders), 7)
    for order in run.orders:
        if order.order_id is None:
            continue
        mine = by_id[order.order_id]
        assert mine["priority"] == order.priority
        created = datetime.fromisoformat(mine["created_at"])
        deadline = datetime.fromisoformat(mine["start_deadline"])
        assert (deadline - created).total_seconds() == pytest.approx(
            30, abs=0.5
        )  # from its acceptance
    rows = summary.by_priority or {}
    assert set(rows) <= set(PRIORITIES)
    for name, row in rows.items():
        filtered = (
            await running.client.get(
                "/orders",
                params={"customer_id": run.customer, "priority": name, "limit": 200},
            )
        ).json()["items"]
        assert row.orders == row.accepted + row.refused
        assert row.accepted == len(filtered)
        assert row.fulfilled == sum(order["status"] == "fulfilled" for order in filtered)
    assert sum(row.orders for row in rows.values()) == summary.orders
    assert sum(row.fulfilled for row in rows.values()) == summary.fulfilled


async def test_refusals_and_waits_are_counted_per_priority(
    start_app: StartApp, tmp_path: Path
) -> None:
    """One slot held by a long order: sheddable orders are refused (they would wait),
    critical and standard ones queue; the service's own counters agree."""
    running = await start_app(capacity=1, fulfilment_delay="0.1", queue_limit=100)
    config = LoadConfig(
        schedule=Schedule.constant(40, 0.5),
        seed=3,
        mix=MIX,
        follow_timeout_s=30,
        sample_interval_s=None,
        fetch_events=False,
    )
    run = await run_load(config, client=running.client)
    summary = summarize(run)
    rows = summary.by_priority or {}
    capacity = (await running.client.get("/capacity")).json()["by_priority"]

    first = run.orders[0]
    for name, row in rows.items():
        counters = capacity[name]["counters"]
        assert row.accepted == counters["accepted"]
        assert row.refused == counters["rejected"]
        assert row.orders == row.accepted + row.refused
    sheddable = rows["sheddable"]
    assert sheddable.refused == sheddable.orders - (first.priority == "sheddable")
    assert sheddable.latency_refused.count == sheddable.refused
    assert rows["critical"].refused == rows["standard"].refused == 0
    # critical orders overtake the waiting standard ones
    critical_wait, standard_wait = rows["critical"].queue_wait, rows["standard"].queue_wait
    assert critical_wait.p50_s is not None and standard_wait.p50_s is not None
    assert critical_wait.p50_s < standard_wait.p50_s
    report = summary.to_json()["by_priority"]
    assert report["sheddable"]["refused"] == sheddable.refused
    assert report["critical"]["queue_wait"]["count"] == rows["critical"].fulfilled
    charts = plot_run(run, tmp_path)
    assert [chart.name for chart in charts][-1] == "priorities.png"
    assert charts[-1].stat().st_size > 10_000


def _refusing(sent: list[dict[str, object]], *, retry_after: str = "2") -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(
            503, headers={"Retry-After": retry_after}, json={"type": "x", "status": 503}
        )

    return httpx.MockTransport(handler)


async def test_retry_stays_within_its_budget_and_spreads_the_retries() -> None:
    sent: list[dict[str, object]] = []
    timer = Ticker()
    config = LoadConfig(
        schedule=Schedule.constant(100, 1),
        retry=True,
        retries=3,
        retry_budget=0.1,
        follow=False,
        sample_interval_s=None,
        seed=5,
    )
    async with httpx.AsyncClient(transport=_refusing(sent), base_url="http://fake") as client:
        run = await run_load(config, client=client, timer=timer)
    summary = summarize(run)

    assert summary.orders == 100
    assert summary.retries == len(sent) - 100
    assert 0 < summary.retries <= 10  # at most 10 % more requests than orders
    # an order asks again after each refusal until its retries run out or the budget says no
    assert summary.retries_denied == sum(1 for order in run.orders if order.attempts < 4)
    retry_waits = [s for s in timer.sleeps if s >= 2]
    assert len(retry_waits) == summary.retries
    # after the Retry-After of 2 s, and not all at the same instant
    assert all(2 <= wait <= 3 for wait in retry_waits)
    assert len(set(retry_waits)) == len(retry_waits)
    assert summary.to_json()["retries_denied"] == summary.retries_denied


async def test_without_retry_a_refusal_is_final() -> None:
    sent: list[dict[str, object]] = []
    config = LoadConfig(schedule=Schedule.constant(20, 1), follow=False, sample_interval_s=None)
    async with httpx.AsyncClient(transport=_refusing(sent), base_url="http://fake") as client:
        run = await run_load(config, client=client, timer=Ticker())
    assert len(sent) == 20 and summarize(run).retries == 0
    assert all("priority" not in body and "start_within_s" not in body for body in sent)


def test_a_budget_allows_its_share_of_the_orders_sent_so_far() -> None:
    budget = RetryBudget(0.25)
    assert not budget.spend()  # nothing sent yet
    allowed = []
    for _ in range(8):
        budget.sent()
        allowed.append(budget.spend())
    assert allowed == [False, False, False, True, False, False, False, True]
    assert (budget.retries, budget.denied) == (2, 7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("critical=0.2,standard=0.5", "add up to 0.7, not 1"),
        ("urgent=1", "unknown priority 'urgent'"),
        ("critical=half,standard=0.5", "is not PRIORITY=SHARE"),
        ("critical=0.5,critical=0.5", "critical is given twice"),
        ("", "at least one"),
    ],
)
def test_a_wrong_mix_is_refused_with_a_clear_message(text: str, message: str) -> None:
    result = CliRunner().invoke(app, ["load", "--mix", text, "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert message in result.output


def test_percentages_and_left_out_priorities() -> None:
    mix = Mix.parse("critical=25%, standard=75%")
    assert mix.shares == (0.25, 0.75, 0.0)
    assert mix.describe() == "critical=0.25,standard=0.75"
    drawn = mix.assign(4000, 1)
    assert "sheddable" not in drawn
    assert drawn.count("critical") / 4000 == pytest.approx(0.25, abs=0.03)
    assert drawn == mix.assign(4000, 1) and drawn != mix.assign(4000, 2)


def test_start_within_must_be_positive() -> None:
    result = CliRunner().invoke(app, ["load", "--start-within", "0", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "--start-within" in result.output
