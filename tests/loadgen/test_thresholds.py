"""`retail load --threshold`, `--summary-export` and `--html`: a run that can fail a
build, and output paths checked before the first order is sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retail.cli import app
from retail.loadgen import report
from retail.loadgen.plots import timeline_rows
from retail.loadgen.runner import LoadConfig, LoadRun, OrderResult
from retail.loadgen.schedule import Schedule
from retail.loadgen.thresholds import parse_threshold
from retail.web.app import create_app
from tests.conftest import make_settings
from tests.serving import free_port, serve_in_thread

WIDE = {"COLUMNS": "160"}
T0 = 1_900_000_000.0

Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    def start(**settings: object) -> AbstractContextManager[str]:
        url = f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"
        return serve_in_thread(create_app(make_settings(url, **settings)))

    return start


def accepted(index: int, **fields: object) -> OrderResult:
    result = OrderResult(
        index=index,
        due_s=index * 0.1,
        sku="MUG-1",
        started_s=index * 0.1,
        answered_s=index * 0.1 + 0.01,
        attempts=1,
        status=202,
        order_id=f"id-{index}",
        service_level="full",
    )
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def run_of(orders: list[OrderResult]) -> LoadRun:
    return LoadRun(
        url="http://127.0.0.1:8000/",
        config=LoadConfig(schedule=Schedule.constant(10, 1.0)),
        run_id="t",
        customer="load-t",
        started_epoch=T0,
        elapsed_s=5.0,
        orders=orders,
        samples=[],
    )


def sample_summary() -> report.Summary:
    return report.summarize(
        run_of(
            [
                accepted(
                    0,
                    order_status="fulfilled",
                    created_at=T0,
                    started_at=T0 + 1.5,
                    finished_at=T0 + 2.5,
                ),
                accepted(1, status=503, problem_type="/problems/capacity-exceeded"),
                accepted(2, status=503, problem_type="/problems/capacity-exceeded"),
                accepted(3, order_status="queued", created_at=T0 + 0.3),
            ]
        )
    )


@pytest.mark.parametrize(
    ("text", "passed", "observed"),
    [
        ("p99_start<2s", True, 1.51),
        ("p99_start<1500ms", False, 1.51),
        ("p99_fulfil<=3s", True, 2.51),
        ("p50_http<20ms", True, 0.01),
        ("refused<1%", False, 0.5),
        ("refused<=2", True, 2),
        ("unfinished<1", False, 1),
        # one fulfilled order, the last at 2.5 s from the run's start
        ("goodput>=0.5", False, 1 / 2.5),
        ("goodput>0.3", True, 1 / 2.5),
        ("p99_wait<1s", False, 1.5),
    ],
)
def test_a_threshold_compares_the_summary(text: str, passed: bool, observed: float) -> None:
    result = parse_threshold(text).check(sample_summary())
    assert result.passed is passed, result.describe()
    assert result.observed == pytest.approx(observed, rel=0.01)
    assert result.describe().startswith(f"{text}: {'ok' if passed else 'FAILED'}")


def test_a_threshold_with_nothing_measured_fails() -> None:
    result = parse_threshold("p99_refused<1s").check(report.summarize(run_of([accepted(0)])))
    assert not result.passed and "nothing measured" in result.describe()


@pytest.mark.parametrize("text", ["p99<2s", "p99_start<2", "refused<1ms", "speed>1", "p99_start"])
def test_a_bad_threshold_says_what_is_accepted(text: str) -> None:
    if text == "p99_start<2":  # a plain number is seconds
        assert parse_threshold(text).limit == 2
        return
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


def test_the_timeline_includes_accepted_orders_that_never_started() -> None:
    run = run_of(
        [
            accepted(0, order_status="fulfilled", created_at=T0, started_at=T0, finished_at=T0 + 1),
            accepted(1, order_status="queued", created_at=T0 + 0.1),  # never started
            accepted(2),  # accepted, not followed: no server times at all
            accepted(3, status=503),  # refused: not an order
        ]
    )
    rows = timeline_rows(run)
    assert [index for index, _, _ in rows] == ["0", "1", "2"]
    assert rows[1][1].started is None and rows[1][1].created == T0 + 0.1
    assert rows[2][1].started is None and rows[2][1].created == pytest.approx(T0 + 0.21)


def test_thresholds_exit_99_naming_the_one_missed(serve: Serve, tmp_path: Path) -> None:
    with serve(capacity=1, fulfilment_delay="0.2", overload_mode="queue") as url:
        result = CliRunner().invoke(
            app,
            [
                "load",
                "--url",
                url,
                "--rate",
                "10",
                "--duration",
                "0.3",
                "--threshold",
                "refused<1%",
                "--threshold",
                "p99_start<1ms",
                "--threshold",
                "p99_http<30s",
                "--summary-export",
                str(tmp_path / "summary.json"),
                "--html",
                str(tmp_path / "report.html"),
            ],
            env=WIDE,
        )
    assert result.exit_code == 99, result.output
    error = result.stderr.strip().splitlines()
    assert len(error) == 1
    assert "1 of 3 thresholds missed: p99_start<1ms: FAILED" in error[0]
    assert "refused<1%: ok" in result.stdout and "p99_http<30s: ok" in result.stdout
    assert "sending" not in result.stdout  # no progress bar when stdout is no terminal

    exported = json.loads((tmp_path / "summary.json").read_text())
    assert exported["schema"] == "retail.loadgen.summary/1"
    assert exported["service"]["mode"] == "queue" and exported["service"]["capacity"] == 1
    assert [t["ok"] for t in exported["thresholds"]] == [True, False, True]
    assert exported["summary"]["orders"] == 3

    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "p99_start&lt;1ms: FAILED" in page
    assert "queue mode, capacity 1" in page


def test_thresholds_that_hold_exit_0(serve: Serve) -> None:
    with serve(capacity=4, fulfilment_delay="0") as url:
        result = CliRunner().invoke(
            app,
            [
                *("load", "--url", url, "--rate", "10", "--duration", "0.2"),
                *("--threshold", "refused<1%", "--threshold", "errors<1"),
            ],
            env=WIDE,
        )
    assert result.exit_code == 0, result.output
    assert "refused<1%: ok" in result.stdout


@pytest.mark.parametrize("option", ["--plot", "--json", "--summary-export", "--html"])
def test_output_paths_are_checked_before_the_run(option: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker / ("charts" if option == "--plot" else "out.json")
    # no service on this port: the path problem must be found before any request
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["load", "--url", url, option, str(target)], env=WIDE)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {option} {target}: cannot write")
    assert "cannot reach" not in result.output


def test_a_bad_threshold_is_reported_before_the_run() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["load", "--url", url, "--threshold", "p99<2s"], env=WIDE)
    assert result.exit_code == 2
    assert "unknown metric 'p99'" in result.stderr


def test_demo_checks_its_output_paths_before_starting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["demo", "--plot", str(blocker / "docs")], env=WIDE)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: --plot {blocker / 'docs'}: cannot write")
    assert "Starting a private service" not in result.stdout
