"""The benchmark code still runs: its formulas, its parsing, and each benchmark at tiny scale.

No timed assertions: the tiny runs check that the code paths work and that what they
count is consistent (every 202 stored, nothing lost), not how fast anything is.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench import erlang, ingest, overload, priorities, report, wrk
from bench.baseline import create_app
from bench.priorities import Outcome
from bench.servers import ROOT
from retail.loadgen.schedule import Arrivals, Schedule, due_times

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@pytest.mark.parametrize(
    ("servers", "erlangs", "blocking"),
    [(0, 3.0, 1.0), (1, 1.0, 0.5), (2, 1.0, 0.2), (10, 5.0, 0.018385), (8, 16.0, 0.545201)],
)
def test_erlang_b_known_values(servers: int, erlangs: float, blocking: float) -> None:
    assert erlang.erlang_b(servers, erlangs) == pytest.approx(blocking, abs=1e-6)


def test_limits_of_queue_and_reject() -> None:
    assert erlang.queue_limit_rate(8, 1.0) == 8.0
    # Far below capacity nothing is lost; far above, the carried load nears C / D.
    assert erlang.carried_load(0.01, 8, 1.0) == pytest.approx(0.01, rel=1e-9)
    assert erlang.carried_load(1000.0, 8, 1.0) == pytest.approx(8.0, rel=0.01)
    assert erlang.carried_load(16.0, 8, 1.0) < erlang.carried_load(32.0, 8, 1.0) < 8.0


def test_loss_system_admits_only_with_a_free_slot() -> None:
    finishes = erlang.loss_system_finishes([0.0, 0.1, 0.2, 1.05, 1.06], servers=2, service_s=1.0)
    # 0.2 finds both slots busy; 1.05 takes the slot freed at 1.0; 1.06 finds both busy.
    assert finishes == [1.0, 1.1, 2.05]


def test_poisson_arrivals_through_a_loss_system_follow_erlang_b() -> None:
    rate, servers, service_s = 16.0, 8, 1.0
    arrivals = due_times(Schedule.constant(rate, 1500.0), Arrivals.POISSON, seed=7)
    assert len(arrivals) == pytest.approx(rate * 1500, rel=0.03)
    admitted = len(erlang.loss_system_finishes(arrivals, servers, service_s)) / len(arrivals)
    assert admitted == pytest.approx(1 - erlang.erlang_b(servers, rate * service_s), abs=0.02)


def test_percentiles_by_nearest_rank() -> None:
    assert overload.percentiles_ms([]) is None
    p50, p99 = overload.percentiles_ms([i / 1000 for i in range(1, 101)]) or (0, 0)
    assert (p50, p99) == (pytest.approx(50.0), pytest.approx(99.0))


def test_wrk_output_is_parsed() -> None:
    line = (
        'BENCH-JSON {"requests":120,"duration_us":2000000,"errors":{"connect":0,"read":1,'
        '"write":0,"status":20,"timeout":0},"p50_us":1500,"p90_us":2500,"p99_us":9000,'
        '"max_us":12000,"statuses":{"202":100,"503":20}}'
    )
    result = wrk.parse("Running 2s test\n" + line + "\n")
    assert result.statuses == {202: 100, 503: 20}
    assert result.errors == 1
    assert result.rate == 60.0
    assert result.rate_of(503) == 10.0
    assert (result.p50_ms, result.p99_ms) == (1.5, 9.0)
    with pytest.raises(ValueError, match="BENCH-JSON"):
        wrk.parse("no summary")
    assert wrk.SCRIPT.exists()


def test_only_loopback_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        wrk.run("http://example.com", duration_s=1)


async def test_baseline_validates_like_the_service() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.post(
            "/orders", json={"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 2}]}
        )
        twice = await client.post(
            "/orders",
            json={
                "customer_id": "a",
                "items": [{"sku": "MUG-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}],
            },
        )
        extra = await client.post(
            "/orders",
            json={"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1}], "price": 1},
        )
    assert ok.status_code == 202
    assert twice.status_code == 422
    assert twice.headers["content-type"] == "application/problem+json"
    assert extra.status_code == 422


@pytest.mark.slow
@needs_wrk
def test_ingest_at_tiny_scale(tmp_path: Path) -> None:
    result = ingest.run(duration_s=1, connections=4, warmup_s=1, workdir=tmp_path)
    assert result.baseline.wrk.statuses.keys() == {202}
    assert result.retail.wrk.statuses.keys() == {202}
    durability = result.durability
    assert durability.accepted > 0
    assert durability.missing == 0
    assert durability.stock_taken == durability.stored >= durability.accepted
    assert durability.ok
    assert "| SQLite |" in report.ingest_table([result], 4, 1)


@pytest.mark.slow
@needs_wrk
def test_ingest_with_the_defaults_at_tiny_scale(tmp_path: Path) -> None:
    result = ingest.run(duration_s=1, connections=4, warmup_s=1, workdir=tmp_path, defaults=True)
    assert result.retail.wrk.statuses.keys() == {202}
    assert result.durability.ok
    assert result.ratio > 0
    assert "| SQLite, defaults (workers on, logs info) |" in report.ingest_table([result], 4, 1)


@pytest.mark.slow
def test_the_cpu_probes_run_at_tiny_scale() -> None:
    def probe(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    refusals = probe("bench.refusal_cpu", "--requests", "50", "--rounds", "2")
    assert re.fullmatch(r"cpu_us_per_refusal=[\d.]+ [\d.]+ min=[\d.]+ median=[\d.]+\n", refusals)
    orders = probe("bench.ingest_cpu", "--orders", "128", "--set", "RETAIL_FAIR_SHARE=false")
    assert re.fullmatch(
        r"orders=128 cpu_us_per_order=[\d.]+ event_loop_cpu_us_per_order=[\d.]+\n", orders
    )
    fulfilled = probe(
        "bench.fulfilment_cpu", "--seconds", "0.5", "--capacity", "4", "--delay", "0.1"
    )
    first, *threads = fulfilled.splitlines()
    assert re.fullmatch(
        r"orders=\d+ per_s=[\d.]+ cpu_ms_per_order=[\d.]+ event_loop_cpu_ms_per_order=[\d.]+ "
        r"cpu_share_of_a_core=[\d.]+",
        first,
    )
    assert int(first.split()[0].removeprefix("orders=")) > 0
    assert any(line.startswith("  MainThread (user): ") for line in threads)


@pytest.mark.slow
@needs_wrk
def test_refusing_at_saturation_with_the_defaults_at_tiny_scale(tmp_path: Path) -> None:
    result = overload.saturation(
        duration_s=1, connections=8, warmup_s=1, workdir=tmp_path, defaults=True
    )
    assert 503 in result.refusals.wrk.statuses
    assert result.refusals.wrk.statuses.keys() <= {202, 429, 503}
    assert result.refusal_rate > 0 and result.ratio > 0
    # At info, the flood of refusals left a line now and then, not one per refusal.
    refusals = (tmp_path / "serve-saturation.log").read_text().count("POST /orders 503")
    assert 1 <= refusals < result.refusals.wrk.statuses[503]


@pytest.mark.slow
@needs_wrk
def test_refusing_at_saturation_at_tiny_scale(tmp_path: Path) -> None:
    result = overload.saturation(
        duration_s=1, connections=4, capacity=1, warmup_s=1, workdir=tmp_path
    )
    assert result.refusals.wrk.statuses.keys() == {503}
    assert result.baseline.wrk.statuses.keys() == {202}
    assert result.ratio > 0


@pytest.mark.slow
def test_overload_at_tiny_scale(tmp_path: Path) -> None:
    config = overload.OverloadConfig(
        capacity=2, delay_s=0.2, duration_s=1.5, multiples=(3.0,), modes=("reject",), seed=3
    )
    [result] = overload.run(config, workdir=tmp_path)
    assert result.mode == "reject"
    assert result.sent == result.accepted + result.refused + result.errors
    assert result.accepted > 0
    assert result.errors == 0
    assert result.fulfilled_in_window <= result.accepted
    assert result.window_s == pytest.approx(1.5 - overload.WARMUP_SERVICE_TIMES * 0.2)
    assert result.limit_rate == pytest.approx(erlang.carried_load(30.0, 2, 0.2))
    assert result.rss_kib[2] >= result.rss_kib[1] > 0
    assert not math.isnan(result.fulfilled_rate)
    # Each 503 carried a Retry-After, compared with the next acceptance after it.
    error = result.retry_after_error
    assert error["count"] + error["unresolved"] == result.refused
    assert error["median"] >= 0
    assert result.wait_ms is not None


@pytest.mark.slow
def test_priorities_at_tiny_scale(tmp_path: Path) -> None:
    config = priorities.PriorityConfig(
        capacity=2, delay_s=0.2, duration_s=1.5, recovery_s=1.0, multiples=(4.0,), modes=("queue",)
    )
    [result] = priorities.run(config, workdir=tmp_path)
    assert result.sent > 0 and result.errors == 0
    live, sim = result.live, result.sim
    assert 0 < live.critical_accepted <= 1 and 0 < sim.critical_accepted <= 1
    assert live.fulfilled_rate > 0 and sim.fulfilled_rate > 0
    assert set(live.goodput_by_priority) == {"critical", "standard", "sheddable"}
    assert sum(live.goodput_by_priority.values()) == pytest.approx(live.fulfilled_rate)
    errors = live.retry_after_error
    assert set(errors) == {"all", "critical", "standard", "sheddable"}
    assert errors["all"]["count"] >= errors["standard"].get("count", 0)
    assert "all" in sim.retry_after_error
    assert result.decided_alike is not None
    assert set(result.decided_alike) == {"critical", "standard", "sheddable"}
    assert all(0 <= share <= 1 for share in result.decided_alike.values())
    table = priorities.tables([result], config)
    assert "critical >= 99.5 %" in table and "retail simulate" in table
    assert "decided alike" in table


def test_decided_alike_compares_the_orders_one_by_one() -> None:
    orders = [
        ("critical", 0.1, True),
        ("critical", 0.2, True),
        ("standard", 0.3, False),
        ("standard", 0.4, True),
    ]
    alike = priorities.decided_alike(orders, sim_accepted={0.1, 0.2, 0.3})
    assert alike["critical"] == 1.0
    assert alike["standard"] == 0.0  # 0.3 refused live, accepted by the simulator; 0.4 too
    assert math.isnan(alike["sheddable"])


def test_recovery_compares_each_order_with_a_run_that_never_saw_the_overload() -> None:
    def recovery(outcomes: list[Outcome], control: list[Outcome]) -> priorities.Recovery | None:
        return priorities._recovery(outcomes, control, overload_s=10.0, delay_s=1.0)

    # Orders wait until 12 s; nothing waits from 12 s (drained) to 12.5 s.
    overload = [Outcome(1.0, 2.0), Outcome(9.0, 3.0), Outcome(11.0, 0.5)]
    after = [12.5 + 0.25 * i for i in range(200)]  # 50 s at 4/s
    unperturbed = [Outcome(at, 0.0) for at in after]
    # An order at 13 s waits 0.5 s where it would have started at once; another, at 14 s,
    # is refused where it would have been taken: back to normal after 14 s.
    late = {13.0: Outcome(13.0, 0.5), 14.0: Outcome(14.0, None)}
    found = recovery(overload + [late.get(o.due_s, o) for o in unperturbed], unperturbed)
    assert found is not None
    assert found.drained_s == pytest.approx(12.0)
    assert found.recovery_s == pytest.approx(2.0)
    assert (found.late_after, found.after) == (0, len([at for at in after if at > 14.0]))
    # An order that waits as long in the control run waits normally, and a late order
    # after 2 D of normal ones is an isolated one (counted), not a slow recovery.
    normal_wait = {20.0: Outcome(20.0, 0.4), 40.0: Outcome(40.0, 0.3)}
    control = [normal_wait.get(o.due_s, o) for o in unperturbed]
    outcomes = [normal_wait.get(o.due_s, o) for o in unperturbed]
    outcomes[outcomes.index(Outcome(50.0, 0.0))] = Outcome(50.0, 0.3)
    found = recovery(overload + outcomes, control)
    assert found is not None and found.recovery_s == 0.0
    assert (found.late_after, found.normal_waits) == (1, 2)
    # The reduced path where the order would have started at once in full is not normal.
    outcomes = [Outcome(o.due_s, 0.0, degraded=o.due_s < 16.0) for o in unperturbed]
    found = recovery(overload + outcomes, unperturbed)
    assert found is not None and found.recovery_s == pytest.approx(3.75)
    # Never drained while orders came: no figure.
    assert recovery([Outcome(9.0, 5.0), Outcome(12.0, 3.0)], unperturbed) is None
