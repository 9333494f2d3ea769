"""`retail simulate` and `retail plan` as a person runs them, and the simulator against the
live service: the same settings and arrivals through `retail load` against `retail serve`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retail.cli import app
from tests.commands import WIDE, retail
from tests.serving import PYTHON, ROOT, environment, free_port, serving

KEYS = {
    "orders",
    "accepted",
    "refused",
    "degraded",
    "fulfilled",
    "throughput_per_s",
    "refused_share",
    "wait_s",
    "sojourn_s",
    "sim_seconds",
    "wall_seconds",
}


def test_simulate_prints_the_report_and_writes_json_and_a_chart(tmp_path: Path) -> None:
    result = retail(
        "simulate --capacity 2 --fulfilment-delay exponential:1 --overload-mode reject",
        "--rate 4 --orders 2000 --arrivals poisson --seed 3",
        *("--json", tmp_path / "run.json", "--plot", tmp_path / "run.png"),
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run.json").read_text())
    assert data.keys() >= KEYS
    for key in ("wait_s", "sojourn_s"):
        assert data[key].keys() >= {"mean", "p50", "p90", "p99"}
    assert data["orders"] == 2000 == data["accepted"] + data["refused"]
    assert data["refused"] > 0 and data["degraded"] == 0
    assert data["wait_s"]["max"] == 0.0  # reject mode: nobody waits
    assert "2000 orders in" in result.output and "refused" in result.output
    assert (tmp_path / "run.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_environment_sets_the_service_as_for_serve() -> None:
    result = retail(
        "simulate --rate 10 --duration 5 --seed 1 --json -",
        env={
            "RETAIL_CAPACITY": "1",
            "RETAIL_FULFILMENT_DELAY": "1",
            "RETAIL_QUEUE_LIMIT": "0",
        },
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["capacity"] == 1
    # One slot, 1 s per order, nothing may wait: one order per second gets in.
    assert data["accepted"] == 5 and data["refused"] == 45


def test_plan_prints_a_recommendation_and_the_neighbours() -> None:
    result = retail(
        "plan --rate 10 --fulfilment-delay 0 --step-delays pick=exponential:1",
        "--p99-wait 1.5 --orders 5000 --json -",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["first_guess"] == 13 and data["exact_theory"] is True
    assert [row["capacity"] for row in data["rows"]] == [
        data["capacity"] + d for d in (-1, 0, 1, 2)
    ]


def test_bad_settings_are_reported_plainly() -> None:
    result = retail("simulate --fulfilment-delay gamma:2")
    assert result.exit_code == 2
    assert "Invalid settings" in result.output and "gamma" in result.output


# Settings under which a live server on a busy machine still decides as the simulation
# does: a few orders per second, evenly spaced, fixed delays (so the live run and the
# simulation face the same plans, not two draws of them), overload from the first seconds.
# Each run says how far behind its plans the live server may fall and still decide alike
# (`slack_s`):
# - reject: two slots, 1 s plans, an arrival every 0.476 s: a slot frees 0.43 s before the
#   next arrival that can take it, and nobody waits, so lateness does not add up. One
#   order in three is refused.
# - queue: the queue stays full, so each slot runs a chain of orders end to end and the
#   lateness of each start and end adds up along it. A slot freed late gives its place to
#   a later arrival instead (no count changes) unless the window ends first: the last
#   ends before the last arrival are 0.5 and 0.75 s ahead of it. Over 40 % refused.
LIVE_RUNS: dict[str, tuple[dict[str, Any], list[str], float]] = {
    "reject": (
        {"capacity": 2, "fulfilment_delay": "1", "overload_mode": "reject"},
        ["--rate", "2.1", "--duration", "15"],
        0.35,
    ),
    "queue": (
        {"capacity": 2, "fulfilment_delay": "1", "overload_mode": "queue", "queue_limit": 4},
        ["--rate", "4", "--duration", "15"],
        0.6,
    ),
}
PLANNED_S = 1.0


def behind_s(report: dict[str, Any], waits: bool) -> float:
    """How far the live server fell behind the plans the simulation keeps to, in seconds.

    Without waiting, each order: from its due time plus its plan to its end. With a full
    queue, each slot's chain: the mean lateness per order (held past its plan, plus from
    the end before it, or its being stored, to its start) times the orders in the window.
    """
    t0 = report["started_at"]
    done = [o for o in report["orders"] if o["outcome"] == "accepted" and o["finished_at"]]
    if not done:
        return 0.0
    if not waits:
        return float(max(o["finished_at"] - t0 - o["due_s"] - PLANNED_S for o in done))
    ends = sorted(o["finished_at"] for o in done)
    late = [
        (o["finished_at"] - o["started_at"] - PLANNED_S)
        + o["started_at"]
        - max([o["created_at"], *(end for end in ends if end <= o["started_at"])])
        for o in done
    ]
    return float(sum(late) / len(late) * report["summary"]["duration_s"] / PLANNED_S)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(LIVE_RUNS))
def test_the_simulation_agrees_with_the_live_service(tmp_path: Path, mode: str) -> None:
    service, window, slack_s = LIVE_RUNS[mode]
    arrivals = [*window, "--arrivals", "fixed", "--seed", "5"]
    port = free_port()
    # The database on a RAM disk where there is one: the slots should be held for their
    # planned time, not for the disk's syncs at each step.
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    env = environment(f"sqlite+aiosqlite:///{folder / 'retail.db'}", **service)
    command = [PYTHON, "-m", "retail", "serve", "--port", str(port), "--no-access-log"]
    try:
        with serving(command, port=port, env=env, cwd=ROOT, log=tmp_path / "server.log") as srv:
            live = CliRunner().invoke(
                app,
                [
                    "load",
                    "--url",
                    srv.url,
                    *arrivals,
                    "--no-progress",
                    "--follow-timeout",
                    "20",
                    "--json",
                    str(tmp_path / "live.json"),
                ],
                env=WIDE,
            )
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)
    assert live.exit_code == 0, live.output
    simulated = CliRunner().invoke(
        app,
        [
            "simulate",
            *arrivals,
            *(f"--{k.replace('_', '-')}={v}" for k, v in service.items()),
            "--json",
            str(tmp_path / "sim.json"),
        ],
        env=WIDE,
    )
    assert simulated.exit_code == 0, simulated.output
    report = json.loads((tmp_path / "live.json").read_text())
    measured = report["summary"]
    predicted = json.loads((tmp_path / "sim.json").read_text())
    assert measured["orders"] == predicted["orders"]
    assert measured["errors"]["total"] == 0 and measured["unfinished"] == 0
    # Fulfilled per second over the same window for both: the window the orders were
    # offered in (every accepted order was followed to its end).
    assert measured["duration_s"] == pytest.approx(predicted["duration_s"])
    live_rate = measured["fulfilled"] / measured["duration_s"]
    sim_rate = predicted["fulfilled"] / predicted["duration_s"]
    live_refused = measured["refused"]["total"] / measured["orders"]
    figures = (
        f"fulfilled/s live {live_rate:.3f} sim {sim_rate:.3f}; "
        f"refused live {live_refused:.3f} sim {predicted['refused_share']:.3f}"
    )
    print(f"{mode}: {figures}")
    behind = behind_s(report, waits=service["overload_mode"] == "queue")
    lag_s = max((o["send_lag_s"] or 0.0) for o in report["orders"])
    if behind + lag_s > slack_s:
        # The comparison holds the policy to account, not the machine.
        pytest.skip(
            f"the live server fell {behind:.2f} s behind its plans (and the load generator "
            f"sent up to {lag_s * 1000:.0f} ms late), more than the {slack_s:g} s these "
            f"arrivals leave: a machine too busy to compare; {figures}"
        )
    assert predicted["refused_share"] > 0.25  # overloaded, or the comparison says little
    assert live_rate == pytest.approx(sim_rate, rel=0.05)
    assert live_refused == pytest.approx(predicted["refused_share"], rel=0.05)
