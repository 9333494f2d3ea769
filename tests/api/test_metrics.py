"""`GET /metrics`: the Prometheus exposition moves as orders flow, wait and get refused."""

from __future__ import annotations

import math
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from retail.runtime.clock import ManualClock
from tests.conftest import (
    Running,
    StartApp,
    all_terminal,
    drive,
    one_slot_taken,
    place,
    quiescent,
)
from tests.serving import PYTHON, environment, free_port, serving, uvicorn_command

STEPS = ("reserve", "fraud_check", "payment", "pick", "pack", "ship")
SHARES = {"reserve": 0.10, "fraud_check": 0.20, "payment": 0.15, "pick": 0.20, "pack": 0.15}


@dataclass
class Scrape:
    """One scrape, parsed: `scrape("retail_orders_queued")`, with labels as keywords: the
    sum of the series that carry those labels (others, such as `priority`, summed over)."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    text: str

    def __call__(self, name: str, **labels: str) -> float:
        wanted = frozenset(labels.items())
        return sum(
            value
            for (sample, key), value in self.samples.items()
            if sample == name and wanted <= key
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for sample, key in self.samples if sample == name}


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return Scrape(samples, response.text)


async def test_metrics_follow_orders_from_admission_to_the_end(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="2", queue_limit=5)
    client = running.client
    before = await scrape(client)
    assert before("retail_admission_decisions_total", mode="queue", outcome="admit") == 0
    assert before("retail_orders_in_flight") == 0

    first = (await place(client)).json()["id"]
    await quiescent(running)
    second = (await place(client, customer="bob")).json()["id"]
    third = (await place(client, customer="carol")).json()["id"]
    clock.advance(0.1)  # Alice is still in her first step (0.2 s of 2)
    await quiescent(running)

    during = await scrape(client)
    assert during("retail_admission_decisions_total", mode="queue", outcome="admit") == 1
    assert during("retail_admission_decisions_total", mode="queue", outcome="queue") == 2
    assert during("retail_orders_in_flight") == 1
    assert during("retail_orders_queued") == 2
    # Bob's order, the oldest waiting, was placed 0.1 virtual seconds ago.
    assert during("retail_queue_oldest_age_seconds") == pytest.approx(0.1)
    assert during("retail_order_queue_wait_seconds_count") == 1

    await drive(running, lambda: all_terminal(client, [first, second, third]))
    after = await scrape(client)
    assert after("retail_orders_in_flight") == 0
    assert after("retail_orders_queued") == 0
    assert after("retail_queue_oldest_age_seconds") == 0
    assert after("retail_orders_finished_total", status="fulfilled") == 3
    # Alice waited 0 s, Bob 2 s, Carol 4 s; each took 2 s once started.
    assert after("retail_order_queue_wait_seconds_count") == 3
    assert after("retail_order_queue_wait_seconds_sum") == pytest.approx(6, abs=1)
    assert after("retail_order_queue_wait_seconds_bucket", le="0.01") == 1
    assert after("retail_order_queue_wait_seconds_bucket", le="1.0") == 1
    assert after("retail_order_queue_wait_seconds_bucket", le="5.0") == 3
    assert after("retail_order_fulfilment_duration_seconds_count") == 3
    assert after("retail_order_fulfilment_duration_seconds_sum") == pytest.approx(6, abs=1)
    for step in STEPS:
        assert after("retail_fulfilment_step_duration_seconds_count", step=step) == 3
    for step, share in SHARES.items():
        took = after("retail_fulfilment_step_duration_seconds_sum", step=step)
        assert took == pytest.approx(3 * 2 * share, abs=0.35), step
    # One order at a time: each of its step boundaries and its end is a write of its own.
    writes = 3 * (len(STEPS) + 1)
    assert after("retail_fulfilment_writes_total") == writes
    assert after("retail_fulfilment_transitions_written_total") == writes


async def test_refusals_are_counted_by_mode_and_outcome(start_app: StartApp) -> None:
    running = await one_slot_taken(start_app, ManualClock(), overload_mode="reject")
    client = running.client
    for _ in range(3):
        assert (await place(client)).status_code == 503
    metrics = await scrape(client)
    assert metrics("retail_admission_decisions_total", mode="reject", outcome="admit") == 1
    assert metrics("retail_admission_decisions_total", mode="reject", outcome="reject") == 3
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="503") == 3
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="202") == 1
    # A refusal writes nothing, so nothing waits.
    assert metrics("retail_orders_queued") == 0


async def test_degrade_mode_counts_degraded_orders(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(
        clock=clock, capacity=1, fulfilment_delay="10", overload_mode="degrade", queue_limit=1
    )
    client = running.client
    statuses = []
    for _ in range(3):
        statuses.append((await place(client)).status_code)
        await quiescent(running)
    assert statuses == [202, 202, 503]
    metrics = await scrape(client)
    assert metrics("retail_admission_decisions_total", mode="degrade", outcome="admit") == 1
    assert metrics("retail_admission_decisions_total", mode="degrade", outcome="degrade") == 1
    assert metrics("retail_admission_decisions_total", mode="degrade", outcome="reject") == 1


async def test_failures_and_cancellations_are_counted(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(
        clock=clock, capacity=1, fulfilment_delay="10", payment_decline_probability=1.0
    )
    client = running.client
    declined = (await place(client)).json()["id"]
    await quiescent(running)
    cancelled = (await place(client, customer="bob")).json()["id"]
    assert (await client.post(f"/orders/{cancelled}/cancel")).status_code == 200
    await drive(running, lambda: all_terminal(client, [declined, cancelled]))
    metrics = await scrape(client)
    assert metrics("retail_orders_finished_total", status="failed") == 1
    assert metrics("retail_orders_finished_total", status="cancelled") == 1
    assert metrics("retail_orders_finished_total", status="fulfilled") == 0
    assert metrics("retail_order_failures_total", reason="payment_declined") == 1
    # The declined order ran reserve, fraud_check and payment: 45 % of 10 s.
    assert metrics("retail_order_fulfilment_duration_seconds_sum") == pytest.approx(4.5, abs=0.3)
    assert metrics("retail_fulfilment_step_duration_seconds_count", step="payment") == 1
    assert metrics("retail_fulfilment_step_duration_seconds_count", step="pick") == 0
    # The cancelled order never started: it waited in no histogram.
    assert metrics("retail_order_queue_wait_seconds_count") == 1


async def test_http_metrics_use_route_templates(start_app: StartApp) -> None:
    running = await start_app()
    client = running.client
    order_id = (await place(client)).json()["id"]
    for _ in range(2):
        assert (await client.get(f"/orders/{order_id}")).status_code == 200
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await client.get(f"/orders/{missing}")).status_code == 404
    assert (await client.get("/no/such/page")).status_code == 404
    assert (await client.request("BREW", "/orders")).status_code == 405
    metrics = await scrape(client)
    route = "/orders/{order_id}"
    assert metrics("retail_http_requests_total", method="GET", route=route, status="200") == 2
    assert metrics("retail_http_requests_total", method="GET", route=route, status="404") == 1
    assert metrics("retail_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert metrics("retail_http_request_duration_seconds_count", method="GET", route=route) == 3
    # Methods outside HTTP's usual set share one label value.
    assert metrics("retail_http_requests_total", method="other", route="/orders", status="405") == 1
    routes = metrics.label_values("retail_http_requests_total", "route")
    assert order_id not in metrics.text and missing not in metrics.text
    assert all(r.startswith("/") or r == "unmatched" for r in routes)
    assert "/no/such/page" not in routes


async def test_openmetrics_when_asked(start_app: StartApp) -> None:
    running = await start_app()
    await place(running.client)
    response = await running.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(response.text)}
    decisions = families["retail_admission_decisions"]
    assert decisions.type == "counter"
    assert any(s.value == 1 for s in decisions.samples if s.name.endswith("_total"))


async def test_each_app_has_its_own_registry(start_app: StartApp) -> None:
    one = await start_app()
    other = await start_app()
    for _ in range(3):
        assert (await place(one.client)).status_code == 202
    assert (await scrape(one.client))(
        "retail_admission_decisions_total", mode="queue", outcome="admit"
    ) == 3
    assert (await scrape(other.client))(
        "retail_admission_decisions_total", mode="queue", outcome="admit"
    ) == 0


async def test_every_metric_is_documented_and_named_by_convention(start_app: StartApp) -> None:
    running = await start_app()
    await place(running.client)
    response = await running.client.get("/metrics")
    families = list(text_string_to_metric_families(response.text))
    names = {family.name for family in families}
    assert {
        "retail_admission_decisions",
        "retail_orders_in_flight",
        "retail_orders_queued",
        "retail_queue_oldest_age_seconds",
        "retail_order_queue_wait_seconds",
        "retail_order_fulfilment_duration_seconds",
        "retail_fulfilment_step_duration_seconds",
        "retail_orders_finished",
        "retail_order_failures",
        "retail_http_requests",
        "retail_http_request_duration_seconds",
    } <= names
    for family in families:
        assert family.name.startswith("retail_"), family.name
        assert family.documentation, family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert not math.isnan(sample.value), sample


@pytest.mark.slow
def test_several_worker_processes_report_as_one(tmp_path: Path) -> None:
    """`uvicorn --workers 2` with PROMETHEUS_MULTIPROC_DIR: any worker's /metrics counts all."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {
        **environment(
            f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}",
            fulfilment_delay=0,
            migrate_on_start="false",
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    migrated = subprocess.run(
        [PYTHON, "-m", "retail", "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    command = [*uvicorn_command(port), "--workers", "2", "--no-access-log"]
    log = tmp_path / "server.log"
    with serving(command, port=port, env=env, cwd=tmp_path, log=log) as server:
        placed = 12
        for index in range(placed):
            response = httpx.post(
                f"{server.url}/orders",
                json={"customer_id": f"c{index}", "items": [{"sku": "MUG-1", "quantity": 1}]},
                timeout=10,
            )
            assert response.status_code == 202, response.text
        # Each scrape goes over a new connection, to whichever worker takes it, and
        # counts every scrape before it, whichever worker answered those.
        for seen in range(10):
            body = httpx.get(f"{server.url}/metrics", timeout=10).text
            samples = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(body)
                for s in family.samples
            }
            scrapes = samples.get(
                (
                    "retail_http_requests_total",
                    frozenset({"method": "GET", "route": "/metrics", "status": "200"}.items()),
                ),
                0.0,
            )
            assert scrapes == seen, body
            decided = sum(
                value
                for (name, _), value in samples.items()
                if name == "retail_admission_decisions_total"
            )
            assert decided == placed
        pids = {path.stem.rsplit("_", 1)[1] for path in shared.glob("*.db")}
        assert len(pids) >= 2, sorted(shared.iterdir())
        code, _ = server.terminate()
    assert code in {0, -signal.SIGTERM}, server.output()
    # Stopped workers take their live gauges with them; counters stay for the next start.
    assert not list(shared.glob("gauge_live*.db")), sorted(shared.iterdir())


async def test_every_answer_to_post_orders_is_recorded_and_carries_its_headers(
    start_app: StartApp,
) -> None:
    """Refused before its body is read, refused for its media type, handed on to the
    route (a body that does not validate; a key defers the refusal until its lookup):
    one count each, the request id echoed, and the security headers on every one."""
    running = await one_slot_taken(start_app, ManualClock(), overload_mode="reject")
    client = running.client
    answers = [
        await place(client, headers={"X-Request-ID": "full-1"}),
        await client.post(
            "/orders",
            content=b"sku=MUG-1",
            headers={"Content-Type": "text/plain", "Idempotency-Key": "k-1"},
        ),
        await client.post(
            "/orders", json={"customer_id": "bob"}, headers={"Idempotency-Key": "k-2"}
        ),
        await client.post(
            "/orders",
            json={"customer_id": "bob"},
            headers={"X-Request-ID": "r-2", "Idempotency-Key": "k-3"},
        ),
    ]
    assert [a.status_code for a in answers] == [503, 415, 422, 422]
    assert answers[0].headers["x-request-id"] == "full-1"
    assert answers[3].headers["x-request-id"] == "r-2"
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-request-id"]
    metrics = await scrape(client)
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="503") == 1
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="415") == 1
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="422") == 2
    assert metrics("retail_http_requests_total", method="POST", route="/orders", status="202") == 1


async def test_a_placed_order_carries_its_request_id_and_the_security_headers(
    running: Running,
) -> None:
    answer = await place(running.client, headers={"X-Request-ID": "placed-1"})
    assert answer.status_code == 202, answer.text
    assert answer.headers["x-request-id"] == "placed-1"
    assert answer.headers["location"].startswith("/orders/")
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    generated = (await place(running.client)).headers["x-request-id"]
    assert len(generated) == 32
