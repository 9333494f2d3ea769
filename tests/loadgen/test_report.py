"""The summary's figures, the JSON report's shape and the table a person reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from retail.loadgen import report
from retail.loadgen.runner import LoadConfig, LoadRun, OrderResult, ServiceInfo
from retail.loadgen.schedule import Schedule
from tests.loadgen.runs import T0, load_run, order


def fulfilled(
    index: int, *, latency: float, wait: float, work: float, level: str = "full"
) -> OrderResult:
    created = T0 + index * 0.5
    return order(
        index,
        answered_s=index * 0.5 + latency,
        attempts=1,
        status=202,
        order_id=f"id-{index}",
        service_level=level,
        order_status="fulfilled",
        created_at=created,
        started_at=created + wait,
        finished_at=created + wait + work,
        events=[
            ("created", created),
            ("started", created + wait),
            ("fulfilled", created + wait + work),
        ],
    )


def sample_run() -> LoadRun:
    orders = [
        fulfilled(0, latency=0.010, wait=0.0, work=2.0),
        fulfilled(1, latency=0.020, wait=1.0, work=2.0),
        fulfilled(2, latency=0.030, wait=0.0, work=1.0, level="degraded"),
        order(
            3,
            answered_s=1.5 + 0.004,
            attempts=2,
            status=503,
            retry_after_s=1.0,
            problem_type="/problems/capacity-exceeded",
        ),
        order(
            4, answered_s=2.0 + 0.002, attempts=1, status=422, problem_type="/problems/unknown-sku"
        ),
        order(5, answered_s=2.5 + 30.0, attempts=1, error="ReadTimeout"),
        order(
            6,
            answered_s=3.0 + 0.05,
            attempts=1,
            status=202,
            order_id="id-6",
            service_level="full",
            order_status="queued",
            created_at=T0 + 3.0,
        ),
    ]
    config = LoadConfig(schedule=Schedule.constant(2, 3.5), follow=True)
    return load_run(orders, config=config, run_id="abc", elapsed_s=12.0)


def test_summary_counts_each_outcome_once() -> None:
    summary = report.summarize(sample_run())
    assert summary.orders == 7
    assert summary.offered_rate == pytest.approx(2.0)
    assert (summary.accepted_full, summary.accepted_degraded) == (3, 1)
    assert summary.refused_by_status == {503: 1, 422: 1}
    assert summary.refused_by_problem == {"503 capacity-exceeded": 1, "422 unknown-sku": 1}
    assert summary.errors_by_kind == {"ReadTimeout": 1}
    assert summary.retries == 1
    assert (summary.fulfilled, summary.unfinished) == (3, 1)
    assert summary.latency_accepted.count == 4
    assert summary.latency_refused.count == 2
    assert summary.latency_refused.max_s == pytest.approx(0.004, rel=0.001)
    # order → fulfilled: the answer's latency plus stored → finished
    assert summary.fulfilment.count == 3
    assert summary.fulfilment.max_s == pytest.approx(3.020, rel=0.001)
    assert summary.queue_wait.max_s == pytest.approx(1.0, rel=0.001)
    # order → started: the answer's latency plus the queue wait
    assert summary.start.count == 3
    assert summary.start.max_s == pytest.approx(1.020, rel=0.001)
    # fulfilments at T0+2, T0+3.5, T0+2: all within the 3.5 s schedule from T0
    assert summary.goodput_per_s == pytest.approx(3 / 3.5)


def test_goodput_is_measured_from_the_start_of_the_run() -> None:
    # the window runs from the run's start to the end of the schedule or the last
    # fulfilment, whichever is later
    assert report.goodput([0.0, 10.0, 20.0], 5.0, 0.0) == pytest.approx(3 / 20)
    assert report.goodput([11.0, 11.0], 4.0, 10.0) == pytest.approx(0.5)
    assert report.goodput([15.0, 20.0], 4.0, 10.0) == pytest.approx(2 / 10)
    assert report.goodput([], 4.0, 0.0) == 0


def saturated_run(capacity: int, service_s: float, accepted: int) -> LoadRun:
    """`accepted` orders stored at once at T0 and fulfilled `capacity` at a time, each
    taking `service_s`: the fastest any service with these limits can go."""
    orders = []
    for index in range(accepted):
        start = T0 + (index // capacity) * service_s
        orders.append(
            order(
                index,
                due_s=0.0,
                started_s=0.0,
                answered_s=0.01,
                attempts=1,
                status=202,
                order_id=f"id-{index}",
                service_level="full",
                order_status="fulfilled",
                created_at=T0,
                started_at=start,
                finished_at=start + service_s,
            )
        )
    return load_run(
        orders,
        config=LoadConfig(schedule=Schedule.constant(4 * capacity / service_s, 5.0)),
        run_id="sat",
        elapsed_s=20.0,
        service=ServiceInfo("queue", capacity, service_s, 20),
    )


@pytest.mark.parametrize("accepted", [1, 4, 5, 23, 24, 44, 45, 80])
def test_goodput_never_exceeds_the_physical_limit(accepted: int) -> None:
    # the case that read 4.45/s against a limit of 4/s when goodput was measured from
    # the first fulfilment to the last
    summary = report.summarize(saturated_run(capacity=4, service_s=1.0, accepted=accepted))
    assert summary.limit_per_s == pytest.approx(4.0)
    assert summary.goodput_per_s is not None
    assert summary.goodput_per_s <= summary.limit_per_s
    assert summary.goodput_note is None


def test_goodput_above_the_limit_says_why() -> None:
    note = report.goodput_note(7.5, 4.0, degraded=30)
    assert note is not None and "30 orders were degraded" in note
    assert report.goodput_note(3.9, 4.0, degraded=0) is None


def test_json_report_has_the_documented_shape(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    report.write_json(sample_run(), path)
    data = json.loads(path.read_text())
    assert data["schema"] == report.SCHEMA
    documented = report.__doc__ or ""
    for key in (
        "url",
        "run_id",
        "customer",
        "started_at",
        "elapsed_s",
        "config",
        "summary",
        "histograms",
        "orders",
        "capacity_samples",
    ):
        assert key in data and f'"{key}"' in documented
    assert set(data["summary"]) == {
        "orders",
        "duration_s",
        "offered_rate",
        "accepted",
        "refused",
        "errors",
        "retries",
        "late_sends",
        "late_for_connection",
        "max_send_lag_s",
        "followed",
        "fulfilled",
        "failed",
        "cancelled",
        "expired",
        "unfinished",
        "goodput_per_s",
        "limit_per_s",
        "goodput_note",
        "latency_accepted",
        "latency_refused",
        "start",
        "fulfilment",
        "queue_wait",
        "retries_denied",
        "by_priority",
    }
    assert data["summary"]["by_priority"] == {}  # sent without a mix
    for key in data["summary"]:
        assert f'"{key}"' in documented, key
    assert data["summary"]["refused"] == {
        "total": 2,
        "by_status": {"422": 1, "503": 1},
        "by_problem": {"422 unknown-sku": 1, "503 capacity-exceeded": 1},
    }
    assert set(data["summary"]["latency_accepted"]) == {
        "count",
        "min_s",
        "mean_s",
        "p50_s",
        "p90_s",
        "p99_s",
        "p99_9_s",
        "max_s",
    }
    assert set(data["histograms"]) == {
        "latency_accepted",
        "latency_refused",
        "start",
        "fulfilment",
        "queue_wait",
    }
    first = data["orders"][0]
    for key in first:
        assert f'"{key}"' in documented, key
    assert first["events"][0] == {"kind": "created", "at": T0}
    assert data["config"]["schedule"] == "2@3.5"


def test_table_shows_the_figures() -> None:
    run = sample_run()
    console = Console(record=True, width=120, color_system=None)
    console.print(report.render_summary(run))
    text = console.export_text()
    assert "7 orders in 3.5 s = 2.00/s" in text
    assert "4 (full 3, degraded 1)" in text
    assert "2 (422 unknown-sku: 1, 503 capacity-exceeded: 1)" in text
    assert "1 (ReadTimeout: 1)" in text
    assert "3 (failed 0, cancelled 0, unfinished 1)" in text
    assert "0.86/s fulfilled" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert re.search(r"│\s+4\s+│", rows["accepted"])
    assert re.search(r"│\s+2\s+│", rows["refused"])
    assert "3,020" in rows["order → fulfilled"]  # ms, max


def test_without_follow_there_is_no_goodput() -> None:
    run = sample_run()
    run.config = LoadConfig(schedule=run.config.schedule, follow=False)
    summary = report.summarize(run)
    assert summary.goodput_per_s is None and summary.fulfilled == 0
    console = Console(record=True, width=120, color_system=None)
    console.print(report.render_summary(run, summary))
    assert "goodput" not in console.export_text()
