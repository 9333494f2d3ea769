"""The example client works against a real server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.serving import (
    PYTHON,
    ROOT,
    environment,
    free_port,
    python_environment,
    serving,
    uvicorn_command,
)

pytestmark = pytest.mark.slow

PLACE_ORDERS = ROOT / "examples" / "place_orders.py"


def test_place_orders_follows_every_order_to_fulfilment(tmp_path: Path) -> None:
    port = free_port()
    # One slot and a short delay: later orders queue, so the client really has to poll.
    env = environment(
        f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}", capacity=1, fulfilment_delay=0.3
    )
    log = tmp_path / "server.log"
    with serving(uvicorn_command(port), port=port, env=env, cwd=tmp_path, log=log) as server:
        result = subprocess.run(
            [PYTHON, str(PLACE_ORDERS), "--url", server.url, "--count", "3", "--customer", "dana"],
            env=python_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout

        stored = httpx.get(f"{server.url}/orders", params={"customer_id": "dana"}).json()["items"]
        assert sorted(order["status"] for order in stored) == ["fulfilled"] * 3
        placed = re.findall(
            r"^placed (\S+): 202 queued, full service, queue position \d+$",
            output,
            flags=re.MULTILINE,
        )
        assert sorted(placed) == sorted(order["id"] for order in stored)

        for order_id in placed:
            events = httpx.get(f"{server.url}/orders/{order_id}/events").json()
            expected = [f"{e['kind']} {e['step']}" if e["step"] else e["kind"] for e in events]
            block = output.split(f"order {order_id} for dana: fulfilled\n", 1)[1]
            printed = re.findall(r"^  \+\s*\d+\.\d{3}s  (.+)$", block, flags=re.MULTILINE)
            assert printed[: len(expected)] == expected
            assert expected[-1] == "fulfilled"
            # Polled as often as Retry-After said, not in a tight loop.
            polls = server.output().count(f'"GET /orders/{order_id} HTTP/1.1" 200')
            assert 1 <= polls <= 5, polls
        assert output.rstrip().endswith("3 of 3 orders fulfilled")


def test_place_orders_without_a_server_says_so_in_one_line() -> None:
    result = subprocess.run(
        [PYTHON, str(PLACE_ORDERS), "--url", f"http://127.0.0.1:{free_port()}", "--count", "1"],
        env=python_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cannot reach http://127.0.0.1:"), result.stderr
    assert "is `retail serve` running?" in lines[0]
