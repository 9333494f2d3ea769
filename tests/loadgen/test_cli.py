"""`retail load`, `retail load --sweep` and `retail demo` as a person runs them: against a
real uvicorn server on 127.0.0.1, with tiny fulfilment delays."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import Result

from tests.commands import retail
from tests.conftest import ADMIN_TOKEN
from tests.loadgen.conftest import Serve
from tests.serving import free_port

PNG = b"\x89PNG\r\n\x1a\n"


def load(url: str, report: Path, *words: str | Path) -> tuple[Result, dict[str, Any]]:
    """`retail load --url URL WORDS --json REPORT`, which must succeed; the report."""
    result = retail(f"load --url {url}", *words, "--json", report)
    assert result.exit_code == 0, result.output
    return result, json.loads(report.read_text())


def test_load_prints_the_summary_and_writes_report_and_charts(serve: Serve, tmp_path: Path) -> None:
    with serve(capacity=4, fulfilment_delay="0.05") as url:
        result, data = load(
            url,
            tmp_path / "run.json",
            "--rate 20 --duration 0.5 --sku MUG-1 --sku TEE-M --plot",
            tmp_path / "charts",
            "--follow-timeout 60",  # only as long as the orders take; a busy machine is slow
        )
        stored = httpx.get(f"{url}/orders", params={"customer_id": data["customer"]}).json()[
            "items"
        ]

    assert data["summary"]["orders"] == 10
    assert data["summary"]["accepted"]["total"] == len(stored) == 10
    assert data["summary"]["fulfilled"] == 10
    assert data["capacity_samples"], "GET /capacity was sampled"
    output = result.output
    assert "10 orders in 0.5 s = 20.00/s" in output
    assert "10 (full 10, degraded 0)" in output
    assert "order → fulfilled" in output
    for name in ("latency.png", "load.png", "timeline.png"):
        assert (tmp_path / "charts" / name).read_bytes().startswith(PNG)


def test_a_schedule_and_poisson_arrivals_from_the_command_line(
    serve: Serve, tmp_path: Path
) -> None:
    with serve(capacity=4, fulfilment_delay="0") as url:
        _, data = load(
            url,
            tmp_path / "run.json",
            "--schedule step:10@0.3,30@0.2 --arrivals poisson --seed 4",
            "--no-follow --no-progress --max-orders 8",
        )
    assert data["config"]["schedule"] == "10@0.3,30@0.2"
    assert data["config"]["arrivals"] == "poisson"
    assert 1 <= data["summary"]["orders"] <= 8
    assert data["summary"]["goodput_per_s"] is None


def test_sweep_runs_every_mode_and_puts_the_mode_back(serve: Serve, tmp_path: Path) -> None:
    with serve(capacity=1, fulfilment_delay="0.2", overload_mode="queue") as url:
        result = retail(
            f"load --url {url} --sweep --sweep-modes queue,reject --sweep-factors 2",
            "--duration 0.4 --no-progress",
            *("--json", tmp_path / "sweep.json", "--plot", tmp_path / "charts"),
            env={"RETAIL_ADMIN_TOKEN": ADMIN_TOKEN},
        )
        assert result.exit_code == 0, result.output
        capacity = httpx.get(f"{url}/capacity").json()

    assert capacity["mode"] == "queue"
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["capacity_rate"] == pytest.approx(5.0)
    points = {(p["mode"], p["factor"]): p["summary"] for p in data["points"]}
    assert set(points) == {("queue", 2.0), ("reject", 2.0)}
    overloaded_queue, overloaded_reject = points["queue", 2.0], points["reject", 2.0]
    assert overloaded_queue["refused"]["total"] == 0
    assert overloaded_queue["fulfilled"] == overloaded_queue["orders"]
    assert overloaded_reject["refused"]["by_status"].get("503", 0) > 0
    # queueing makes the slowest order wait longer than shedding does
    assert overloaded_queue["fulfilment"]["p99_s"] > overloaded_reject["fulfilment"]["p99_s"]
    assert "queue" in result.output and "reject" in result.output
    assert (tmp_path / "charts" / "sweep.png").read_bytes().startswith(PNG)


def test_sweep_without_an_admin_token_says_what_to_do(serve: Serve) -> None:
    with serve() as url:
        result = retail(f"load --url {url} --sweep")
    assert result.exit_code == 2
    assert "--admin-token" in result.output


def test_an_unreachable_service_is_reported_plainly(tmp_path: Path) -> None:
    result = retail(f"load --url http://127.0.0.1:{free_port()} --duration 1")
    assert result.exit_code == 2
    assert "cannot reach" in result.output and "retail serve" in result.output


def test_a_bad_schedule_is_reported_plainly() -> None:
    result = retail("load --schedule fast@5")
    assert result.exit_code == 2
    assert "RATE@SECONDS" in result.output


def test_demo_shows_one_order_at_a_time_against_three_at_once(tmp_path: Path) -> None:
    result = retail(
        "demo --fulfilment-delay 0.2", *("--plot", tmp_path, "--json", tmp_path / "demo.json")
    )
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "demo.json").read_text())["rounds"]
    assert [r["capacity"] for r in rounds] == [1, 3]
    for round_ in rounds:
        assert sorted(c["name"] for c in round_["customers"]) == ["Alice", "Bob", "Charlie"]
        assert all(c["status"] == "fulfilled" for c in round_["customers"])

    one_at_a_time = sorted(rounds[0]["customers"], key=lambda c: c["started_at"])
    for before, after in itertools.pairwise(one_at_a_time):
        assert after["started_at"] >= before["finished_at"]  # never two at once
    assert one_at_a_time[2]["waited_s"] >= 0.3  # the third waited for two others

    all_at_once = rounds[1]["customers"]
    assert max(c["started_at"] for c in all_at_once) < min(c["finished_at"] for c in all_at_once)

    assert "capacity 1: one order at a time (synchronous)" in result.output
    assert "capacity 3: up to 3 at once (asynchronous)" in result.output
    assert f"{one_at_a_time[2]['name']} waited" in result.output
    assert (tmp_path / "demo.png").read_bytes().startswith(PNG)


def test_a_too_small_connection_limit_shows_as_late_sends(serve: Serve, tmp_path: Path) -> None:
    with serve(capacity=100, fulfilment_delay="0") as url:
        one_connection = "--rate 100 --duration 0.2 --connections 1 --no-follow --no-progress"
        result, data = load(url, tmp_path / "run.json", one_connection)
    summary = data["summary"]
    assert summary["accepted"]["total"] == 20
    assert summary["late_for_connection"] > 0
    assert summary["late_sends"] >= summary["late_for_connection"]
    # the time spent waiting for the connection is part of each order's latency
    waits = [o["sent_s"] - o["due_s"] for o in data["orders"] if o["sent_s"] is not None]
    assert all(
        o["latency_s"] >= o["sent_s"] - o["due_s"]
        for o in data["orders"]
        if o["sent_s"] is not None
    )
    assert max(waits) > 0.01
    assert "waited for a connection: raise --connections" in result.output
