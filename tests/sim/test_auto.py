"""`auto` mode and the Retry-After error in `retail simulate`: the same policy objects as
`retail serve`, on a virtual clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from retail.cli import app
from retail.sim.report import retry_after_error

WIDE = {"COLUMNS": "200"}


def simulate(*options: str) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--capacity=2",
            "--fulfilment-delay=fixed:1",
            "--rate=8",
            "--duration=60",
            "--arrivals=poisson",
            "--seed=7",
            "--queue-limit=1000",
            "--json=-",
            *options,
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    text, _, data = result.output.partition("{\n")
    summary: dict[str, Any] = json.loads("{\n" + data)
    return summary, text


def test_auto_keeps_waits_near_its_target_where_queue_lets_them_grow() -> None:
    queue, _ = simulate("--overload-mode=queue")
    auto, text = simulate("--overload-mode=auto", "--target-wait=4")
    assert auto["settings"]["overload_mode"] == "auto"
    assert auto["settings"]["target_wait_s"] == 4
    # Twice the capacity rate: queue mode's wait grows with the run; auto degrades, then
    # refuses, and its waits stay within reach of the target.
    assert queue["wait_s"]["p99"] > 20
    assert auto["degraded"] > 0
    assert auto["refused"] > 0
    assert auto["wait_s"]["p99"] < 2 * 4
    assert auto["throughput_per_s"] > queue["throughput_per_s"]
    error = auto["retry_after_error"]
    assert error["count"] > 0
    assert error["median"] < 1
    assert "Retry-After" in text and "median error" in text


def test_retry_after_error_compares_each_refusal_with_the_next_admission() -> None:
    admitted = [0.0, 2.0, 6.0]
    # Refused at 0 (told 2 s: exact), at 1 (told 2 s, admitted again after 1 s: 100 %
    # off), at 4 (told 1 s, 2 s: 50 % off, early) and at 7 (nothing admitted after).
    error = retry_after_error([(0.0, 2), (1.0, 2), (4.0, 1), (7.0, 1)], admitted)
    assert error["count"] == 3
    assert error["unresolved"] == 1
    assert error["median"] == pytest.approx(0.5)
    assert error["p90"] == pytest.approx(1.0)
    assert error["within_target"] == pytest.approx(1 / 3)
    assert error["early"] == pytest.approx(1 / 3)
    assert error["median_first_admitted_s"] == pytest.approx(2.0)
    assert retry_after_error([], admitted) == {"count": 0, "unresolved": 0}
