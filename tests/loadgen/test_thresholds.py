"""`retail load --threshold`, `--summary-export` and `--html`: a run that can fail a
build, and output paths checked before the first order is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retail.loadgen import report
from retail.loadgen.plots import timeline_rows
from retail.loadgen.runner import OrderResult
from retail.loadgen.thresholds import parse_threshold
from tests.commands import retail
from tests.loadgen.conftest import Serve
from tests.loadgen.runs import T0, load_run, order
from tests.serving import free_port


def accepted(index: int, **fields: object) -> OrderResult:
    answer = {"answered_s": index * 0.1 + 0.01, "attempts": 1, "status": 202}
    placed = {"order_id": f"id-{index}", "service_level": "full"}
    return order(index, spacing_s=0.1, **{**answer, **placed, **fields})


def sample_summary() -> report.Summary:
    return report.summarize(
        load_run(
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
    result = parse_threshold("p99_refused<1s").check(report.summarize(load_run([accepted(0)])))
    assert not result.passed and "nothing measured" in result.describe()


@pytest.mark.parametrize("text", ["p99<2s", "p99_start<2", "refused<1ms", "speed>1", "p99_start"])
def test_a_bad_threshold_says_what_is_accepted(text: str) -> None:
    if text == "p99_start<2":  # a plain number is seconds
        assert parse_threshold(text).limit == 2
        return
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


def test_the_timeline_includes_accepted_orders_that_never_started() -> None:
    run = load_run(
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
        result = retail(
            f"load --url {url} --rate 10 --duration 0.3",
            "--threshold 'refused<1%' --threshold 'p99_start<1ms' --threshold 'p99_http<30s'",
            *("--summary-export", tmp_path / "summary.json", "--html", tmp_path / "report.html"),
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
        result = retail(
            f"load --url {url} --rate 10 --duration 0.2",
            "--threshold 'refused<1%' --threshold 'errors<1'",
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
    result = retail(f"load --url {url} {option}", target)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {option} {target}: cannot write")
    assert "cannot reach" not in result.output


def test_a_bad_threshold_is_reported_before_the_run() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = retail(f"load --url {url} --threshold 'p99<2s'")
    assert result.exit_code == 2
    assert "unknown metric 'p99'" in result.stderr


def test_demo_checks_its_output_paths_before_starting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = retail("demo --plot", blocker / "docs")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: --plot {blocker / 'docs'}: cannot write")
    assert "Starting a private service" not in result.stdout
