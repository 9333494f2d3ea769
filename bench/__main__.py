"""`python -m bench [WHAT]`: run the benchmarks, print markdown tables.

WHAT is one of ingest, overload, fulfilment, priorities, simulate, fleet or all (the default).

    uv run python -m bench all --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

Every server runs on 127.0.0.1 on a free port with a fresh database (SQLite file in a
temporary folder; with `--postgres`, a `retail_bench_*` database created on that
server and dropped afterwards). Load is bounded: wrk runs for `--duration` seconds,
the open-loop runs for `--overload-duration` seconds each. `all` takes about 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fleet, fulfilment, ingest, overload, priorities, report
from bench import simulate as sim_bench


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {load:.2f} at start"
    )


def _listed(text: str) -> tuple[str, ...]:
    """The items of a comma-separated option, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "what",
        nargs="?",
        choices=("ingest", "overload", "fulfilment", "priorities", "simulate", "fleet", "all"),
        default="all",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run ingest and fulfilment on PostgreSQL (any database of the server; "
        "a fresh one is made)",
    )
    parser.add_argument("--duration", type=float, default=12.0, help="wrk seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--overload-duration", type=float, default=20.0, help="seconds per open-loop run"
    )
    parser.add_argument(
        "--overload-modes", default=",".join(overload.MODES), help="overload: modes to run"
    )
    parser.add_argument(
        "--overload-multiples", default="2,4", help="overload: offered load / capacity rate"
    )
    parser.add_argument(
        "--target-wait", type=float, default=5.0, help="overload: auto mode's target wait (s)"
    )
    parser.add_argument("--capacity", type=int, default=8, help="overload: capacity C")
    parser.add_argument(
        "--delay", type=float, default=1.0, help="overload: fixed fulfilment time D (s)"
    )
    parser.add_argument(
        "--sim-orders", type=int, default=1_000_000, help="simulate: orders per mode"
    )
    parser.add_argument(
        "--sim-factor", type=float, default=1.0, help="simulate: offered load / capacity rate"
    )
    parser.add_argument(
        "--priority-modes",
        default=",".join(priorities.MODES),
        help="priorities: overload modes (queue,reject,degrade; auto where it exists)",
    )
    parser.add_argument(
        "--priority-multiples", default="4,8", help="priorities: multiples of the capacity rate"
    )
    parser.add_argument(
        "--priority-recovery", type=float, default=30.0, help="priorities: seconds at 0.5x after"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="retail-bench-"))
    started = time.monotonic()
    header = [
        f"# retail benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {_machine()}.",
        f"Command: `uv run python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
    ]
    print("\n".join(header), flush=True)
    raw: dict[str, Any] = {}

    if args.what in ("ingest", "all"):
        results = []
        plans = [(None, False, False), (None, True, False), (None, False, True)]
        if args.postgres:
            plans += [(args.postgres, False, False), (args.postgres, True, False)]
        for postgres, keys, defaults in plans:
            results.append(
                ingest.run(
                    postgres_url=postgres,
                    duration_s=args.duration,
                    connections=args.connections,
                    keys=keys,
                    workdir=workdir,
                    defaults=defaults,
                )
            )
        print(report.ingest_table(results, args.connections, args.duration), flush=True)
        raw["ingest"] = [asdict(r) for r in results]

    if args.what in ("overload", "all"):
        config = overload.OverloadConfig(
            capacity=args.capacity,
            delay_s=args.delay,
            duration_s=args.overload_duration,
            modes=_listed(args.overload_modes),
            multiples=tuple(map(float, _listed(args.overload_multiples))),
            target_wait_s=args.target_wait,
        )
        runs = overload.run(config, workdir=workdir)
        saturations = [
            overload.saturation(
                duration_s=args.duration,
                connections=args.connections,
                workdir=workdir,
                defaults=defaults,
            )
            for defaults in (False, True)
        ]
        print(report.overload_tables(runs, saturations, config), flush=True)
        raw["overload"] = [asdict(r) for r in runs]
        raw["saturation"] = [asdict(s) for s in saturations]

    if args.what in ("priorities", "all"):
        config = priorities.PriorityConfig(
            capacity=args.capacity,
            delay_s=args.delay,
            duration_s=args.overload_duration,
            recovery_s=args.priority_recovery,
            multiples=tuple(map(float, _listed(args.priority_multiples))),
            modes=_listed(args.priority_modes),
        )
        found = priorities.run(config, workdir=workdir)
        print(priorities.tables(found, config), flush=True)
        raw["priorities"] = [asdict(r) for r in found]

    if args.what in ("fulfilment", "all"):
        fulfilment_config = fulfilment.FulfilmentConfig(duration_s=args.overload_duration)
        fulfilled, refusals = fulfilment.run(
            fulfilment_config, postgres_url=args.postgres, workdir=workdir
        )
        print(report.fulfilment_tables(fulfilled, refusals, fulfilment_config), flush=True)
        raw["fulfilment"] = [asdict(r) for r in fulfilled]
        raw["fulfilment_refusals"] = asdict(refusals)

    if args.what == "fleet" or (args.what == "all" and args.postgres):
        if not args.postgres:
            parser.error("fleet needs --postgres URL")
        config = overload.OverloadConfig(
            capacity=args.capacity,
            delay_s=args.delay,
            duration_s=args.overload_duration,
            multiples=(2.0,),
            modes=("queue", "reject"),
        )
        scaled = fleet.scaling(
            args.postgres, duration_s=args.duration, connections=args.connections, workdir=workdir
        )
        fleet_runs = fleet.overload_runs(args.postgres, config, workdir=workdir)
        print(
            fleet.tables(
                scaled, fleet_runs, config, connections=args.connections, duration_s=args.duration
            ),
            flush=True,
        )
        raw["fleet"] = {
            "scaling": asdict(scaled),
            "overload": [asdict(r) for r in fleet_runs],
        }

    if args.what == "simulate":
        results = [
            sim_bench.run_one(mode, args.sim_orders, args.sim_factor)
            for mode in ("queue", "reject", "degrade")
        ]
        print(sim_bench.table(results), flush=True)
        raw["simulate"] = [asdict(r) for r in results]

    print(f"\nTotal time: {time.monotonic() - started:.0f} s. Server logs: {workdir}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
