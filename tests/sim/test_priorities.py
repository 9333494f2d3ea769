"""`retail simulate --mix / --start-within / --retry`: the policy's priorities, deadlines
and budgeted retries in virtual time, and the figures per priority."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retail.cli import app
from retail.core.capacity import Limits
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority
from retail.loadgen.mix import Mix
from retail.loadgen.schedule import Arrivals, Schedule, due_times
from retail.sim.engine import SimConfig, simulate
from retail.sim.report import summarize

MIX = Mix.parse("critical=0.2,standard=0.5,sheddable=0.3")
WIDE = {"COLUMNS": "200"}


def _config(
    mode: str = "queue",
    *,
    capacity: int = 8,
    delay: str = "fixed:1",
    rate: float = 32.0,
    seconds: float = 60.0,
    reserve: int = 0,
    **extra: Any,
) -> SimConfig:
    return SimConfig(
        limits=Limits(
            mode=OverloadMode(mode), capacity=capacity, queue_limit=100, critical_reserve=reserve
        ),
        pipeline=Pipeline.build(fulfilment_delay=delay),
        schedule=Schedule.constant(rate, seconds),
        arrivals=Arrivals.POISSON,
        seed=11,
        **extra,
    )


def _figures(config: SimConfig) -> dict[str, Any]:
    summary = summarize(simulate(config), timeline=False)
    summary.pop("wall_seconds")
    return summary


def test_a_run_with_a_mix_deadlines_and_retries_repeats_exactly() -> None:
    config = _config(delay="exponential:1", mix=MIX, start_within_s=3, retries=3, retry_budget=0.1)
    first, again = _figures(config), _figures(config)
    assert first == again
    assert first["expired"] > 0 and first["refusals"] > first["refused"] > 0
    other = _figures(_config(delay="exponential:1", mix=MIX, start_within_s=3))
    assert other != first


def test_orders_get_the_priorities_the_load_generator_draws() -> None:
    run = simulate(_config(mix=MIX, rate=20, seconds=100))
    drawn = MIX.assign(run.orders, 11)
    rows = summarize(run, timeline=False)["by_priority"]
    for name in ("critical", "standard", "sheddable"):
        assert rows[name]["orders"] == drawn.count(name)
        assert rows[name]["orders"] / run.orders == pytest.approx(MIX.share(name), abs=0.03)
    assert sum(row["fulfilled"] for row in rows.values()) == run.fulfilled


def test_at_four_times_capacity_critical_orders_are_kept_and_sheddable_ones_shed() -> None:
    rows = _figures(_config(mix=MIX, reserve=16))["by_priority"]
    critical, standard, sheddable = rows["critical"], rows["standard"], rows["sheddable"]
    assert critical["refused"] == 0
    # a critical order waits only for the critical orders ahead of it and a free slot
    assert critical["wait_s"]["p99"] <= 2.0
    assert standard["wait_s"]["p50"] > 5 * critical["wait_s"]["p50"]
    # sheddable orders are taken only when they can start at once: they never wait
    assert sheddable["refused_share"] > 0.9
    assert sheddable["wait_s"]["max"] == 0.0
    assert standard["refused"] > 0


def test_without_a_reserve_a_full_queue_refuses_critical_orders_too() -> None:
    rows = _figures(_config(mix=MIX))["by_priority"]
    assert rows["critical"]["refused"] > 0


def test_with_fixed_delays_an_accepted_order_never_expires() -> None:
    """The estimate is exact: orders that could not start in time are refused up front."""
    summary = _figures(_config(start_within_s=2))
    assert summary["expired"] == 0
    assert summary["refused"] > 0
    assert summary["wait_s"]["max"] <= 2.0 + 1e-9


@pytest.mark.parametrize("rate", [32.0, 64.0])
@pytest.mark.parametrize("within", [1.0, 5.0])
def test_in_degrade_mode_with_fixed_delays_no_order_expires_that_nothing_overtook(
    rate: float, within: float
) -> None:
    """Critical orders run in full in degrade mode, and the estimate plans each waiting order
    at its own level: with fixed delays no critical order expires. Sheddable orders are taken
    only when they start at once, so with critical and sheddable orders nothing expires.
    A standard order can still be overtaken by a critical order accepted after it: that one
    starts first, by design, and the standard order may then miss its deadline."""
    plain = _figures(_config("degrade", mix=MIX, rate=rate, start_within_s=within))
    rows = plain["by_priority"]
    assert rows["critical"]["accepted"] > 0 and rows["critical"]["wait_s"]["count"] > 0
    assert rows["critical"]["expired"] == 0 and rows["sheddable"]["expired"] == 0
    assert rows["critical"]["wait_s"]["max"] <= within + 1e-9

    no_standard = Mix.parse("critical=0.5,sheddable=0.5")
    summary = _figures(_config("degrade", mix=no_standard, rate=rate, start_within_s=within))
    assert summary["expired"] == 0
    assert summary["refused"] > 0  # deadlines that could not be met were refused up front
    assert summary["by_priority"]["critical"]["wait_s"]["max"] > 0.5 * within  # it did wait
    assert summary["wait_s"]["max"] <= within + 1e-9


def test_an_order_past_its_deadline_expires_and_takes_no_slot() -> None:
    summary = _figures(_config(delay="exponential:1", start_within_s=2))
    assert summary["expired"] > 0
    assert summary["accepted"] == summary["fulfilled"] + summary["failed"] + summary["expired"]
    assert summary["wait_s"]["count"] == summary["fulfilled"] + summary["failed"]
    assert summary["wait_s"]["max"] <= 2.0 + 1e-9  # no order started after its deadline


def test_retries_stay_within_the_budget() -> None:
    unbudgeted = _figures(_config("reject", retries=3))
    budgeted = _figures(_config("reject", retries=3, retry_budget=0.1))
    retried = budgeted["attempts"] - budgeted["orders"]
    assert 0 < retried <= 0.1 * budgeted["orders"]
    assert budgeted["retries_denied"] > 0
    assert unbudgeted["attempts"] - unbudgeted["orders"] > 3 * retried
    assert unbudgeted["retries_denied"] == 0


def _simulate(*args: str, into: Path | None = None) -> Any:
    """`retail simulate` at 4x the capacity rate; with `into`, with the mix and writing
    `out.json` and `chart.png` there."""
    options = [
        "simulate",
        "--capacity",
        "8",
        "--fulfilment-delay",
        "fixed:1",
        "--rate",
        "32",
        "--duration",
        "20",
        "--arrivals",
        "poisson",
        "--seed",
        "4",
        *args,
    ]
    if into is not None:
        options += ["--mix", MIX.describe(), "--json", str(into / "out.json")]
        options += ["--plot", str(into / "chart.png")]
    return CliRunner().invoke(app, options, env=WIDE)


def test_simulate_reports_per_priority(tmp_path: Path) -> None:
    result = _simulate("--critical-reserve", "16", "--start-within", "5", "--retry", into=tmp_path)
    assert result.exit_code == 0, result.output
    assert "by priority" in result.output and "sheddable" in result.output
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data["by_priority"]) == {"critical", "standard", "sheddable"}
    assert data["arrivals"]["mix"] == "critical=0.2,standard=0.5,sheddable=0.3"
    assert data["arrivals"]["retry_budget"] == 0.1
    assert data["arrivals"]["retries"] == 3
    assert data["attempts"] - data["orders"] <= 0.1 * data["orders"]
    for row in data["by_priority"].values():
        assert set(row) >= {"orders", "accepted", "refused", "goodput_per_s", "wait_s"}
    # The Retry-After error per priority counts that priority's refusals only.
    errors = {name: row["retry_after_error"] for name, row in data["by_priority"].items()}
    measured = sum(e.get("count", 0) + e["unresolved"] for e in errors.values())
    assert measured == data["refusals"] > 0
    assert errors["standard"]["count"] > 0 and errors["standard"]["median"] >= 0
    # Retry-After-Ms, beside it, for the same refusals: room is back within a fraction of
    # a second here, which the milliseconds say and whole seconds cannot.
    fine = {name: row["retry_after_ms_error"] for name, row in data["by_priority"].items()}
    assert all(fine[name]["unresolved"] == errors[name]["unresolved"] for name in errors)
    assert fine["standard"]["count"] == errors["standard"]["count"]
    assert fine["standard"]["median"] < errors["standard"]["median"]
    assert "Retry-After error" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "critical=0.5"], "add up to 0.5, not 1"),
        (["--mix", "vip=1"], "unknown priority 'vip'"),
        (["--start-within", "-1"], "--start-within"),
    ],
)
def test_simulate_refuses_a_wrong_mix_or_deadline(args: list[str], message: str) -> None:
    result = _simulate(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_sweep_with_a_mix_plots_goodput_per_priority(tmp_path: Path) -> None:
    result = _simulate(
        "--sweep", "--sweep-factors", "1,4", "--sweep-modes", "queue,reject", into=tmp_path
    )
    assert result.exit_code == 0, result.output
    assert "critical goodput/s" in result.output
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    points = json.loads((tmp_path / "out.json").read_text())["points"]
    assert len(points) == 4 and all("critical" in p["by_priority"] for p in points)


def test_a_run_can_leave_out_the_orders_due_before_a_time() -> None:
    # The control run of a recovery: the same orders after a burst, the burst left out.
    whole = _config(mix=MIX, rate=4.0, seconds=30.0)
    later = dataclasses.replace(whole, skip_before_s=10.0)
    dues = due_times(whole.schedule, Arrivals.POISSON, seed=whole.seed)
    names = MIX.assign(len(dues), whole.seed)
    kept = [(due, name) for due, name in zip(dues, names, strict=True) if due >= 10.0]
    run = simulate(later)
    assert run.orders == len(kept) < len(dues)
    assert min([*run.accepted_at, *run.refused_at]) == kept[0][0]
    for priority in Priority:
        assert run.by_priority[priority.rank].orders == sum(
            1 for _, name in kept if name == priority.value
        )
