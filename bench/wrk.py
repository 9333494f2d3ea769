"""Closed-loop load with wrk: POST /orders from `examples/wrk_post_order.lua`, parsed results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "wrk_post_order.lua"
MARKER = "BENCH-JSON "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    statuses: dict[int, int]
    errors: int  # socket errors: connect, read, write, timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Answers per second, of any status."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    def rate_of(self, status: int) -> float:
        return self.statuses.get(status, 0) / self.duration_s if self.duration_s else 0.0


def parse(output: str) -> WrkResult:
    """The `BENCH-JSON` line that the script's `done()` prints."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line.removeprefix(MARKER))
            errors = data["errors"]
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                statuses={int(code): n for code, n in data["statuses"].items()},
                errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise ValueError(f"no {MARKER.strip()} line in wrk's output:\n{output}")


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return found


def command(url: str, *, connections: int, duration_s: float, threads: int = 2) -> list[str]:
    return [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
    ]


def run(
    url: str,
    *,
    connections: int = 64,
    duration_s: float = 10.0,
    threads: int = 2,
    sku: str = "MUG-1",
    idempotency_keys: bool = False,
    ids_dir: Path | None = None,
) -> WrkResult:
    """Run wrk against `url`; with `ids_dir`, every 202's Location is written there."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("the benchmarks only ever load 127.0.0.1")
    env = {
        **os.environ,
        "WRK_SKU": sku,
        "WRK_QUANTITY": "1",
        "WRK_KEYS": "1" if idempotency_keys else "0",
        "WRK_REPORT": "json",
    }
    env.pop("WRK_IDS_DIR", None)
    if ids_dir is not None:
        ids_dir.mkdir(parents=True, exist_ok=True)
        env["WRK_IDS_DIR"] = str(ids_dir)
    done = subprocess.run(
        command(url, connections=connections, duration_s=duration_s, threads=threads),
        env=env,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    )
    return parse(done.stdout)


def accepted_ids(ids_dir: Path) -> list[str]:
    """The order ids of every 202 wrk saw (from their Location headers)."""
    ids = []
    for path in sorted(ids_dir.glob("ids-*.txt")):
        ids.extend(
            line.strip().removeprefix("/orders/") for line in path.read_text().splitlines() if line
        )
    return ids
