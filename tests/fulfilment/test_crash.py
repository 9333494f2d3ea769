"""A real server process: killed with SIGKILL, stopped with SIGTERM, started again."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import PYTHON, environment, free_port, serving


@contextmanager
def server(
    database_url: str, log: Path, **settings: Any
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`retail serve` on a free port with the given settings, until it answers."""
    port = free_port()
    command = [PYTHON, "-m", "retail", "serve", "--port", str(port), "--no-access-log"]
    env = environment(database_url, **settings)
    with serving(command, port=port, env=env, cwd=log.parent, log=log) as running:
        yield running.process, running.url


def wait_until(check: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def statuses(url: str, ids: list[str]) -> list[str]:
    return [httpx.get(f"{url}/orders/{i}").json()["status"] for i in ids]


def stopped_cleanly(process: subprocess.Popen[bytes], log: Path) -> bool:
    """uvicorn shuts down gracefully on SIGTERM, then exits by re-raising the signal."""
    code = process.wait(15)
    return code in (0, -signal.SIGTERM) and "Application shutdown complete" in log.read_text()


def place_many(url: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = httpx.post(
            f"{url}/orders",
            json={"customer_id": f"c{i}", "items": [{"sku": "LAMP-1", "quantity": 1}]},
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"


def test_kill_9_then_restart_fulfils_every_order_exactly_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with server(sqlite_url, log, capacity=2, fulfilment_delay=30, lease_s=1) as (process, url):
        ids = place_many(url, 5)
        wait_until(lambda: statuses(url, ids).count("processing") == 2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    # Everything was durable; the two in flight hold leases that expire after 1 s.
    with server(sqlite_url, log, capacity=3, fulfilment_delay=0.05, lease_s=1) as (_, url):
        wait_until(lambda: set(statuses(url, ids)) == {"fulfilled"})
        for order_id in ids:
            events = httpx.get(f"{url}/orders/{order_id}/events").json()
            kinds = [e["kind"] for e in events]
            assert kinds.count("fulfilled") == 1
            steps = [e["step"] for e in events if e["kind"] == "step_completed"]
            assert steps == ["reserve", "fraud_check", "payment", "pick", "pack", "ship"]
        resumed = sum(
            "resumed" in [e["kind"] for e in httpx.get(f"{url}/orders/{i}/events").json()]
            for i in ids
        )
        assert resumed == 2
        assert httpx.get(f"{url}/products/LAMP-1").json()["stock"] == 45


def test_sigterm_drains_in_flight_orders_then_exits(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with server(sqlite_url, log, capacity=2, fulfilment_delay=0.6, shutdown_timeout_s=10) as (
        process,
        url,
    ):
        ids = place_many(url, 2)
        wait_until(lambda: statuses(url, ids).count("processing") == 2)
        process.send_signal(signal.SIGTERM)
        assert stopped_cleanly(process, log)
    with server(sqlite_url, log, workers_enabled=False) as (_, url):
        assert statuses(url, ids) == ["fulfilled", "fulfilled"]


def test_sigterm_past_the_timeout_leaves_orders_for_the_next_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with server(
        sqlite_url, log, capacity=2, fulfilment_delay=60, shutdown_timeout_s=0.3, lease_s=600
    ) as (process, url):
        ids = place_many(url, 3)
        wait_until(lambda: statuses(url, ids).count("processing") == 2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert stopped_cleanly(process, log)
        assert time.monotonic() - started < 5
    # Leases were released on the way out: the next start resumes at once (lease_s is long).
    with server(sqlite_url, log, capacity=3, fulfilment_delay=0.05, lease_s=600) as (_, url):
        wait_until(lambda: set(statuses(url, ids)) == {"fulfilled"})


def test_a_separate_worker_on_sqlite_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "retail", "worker"],
        env=environment(sqlite_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.count("\n") == 0, message  # one line, no traceback
    assert "needs PostgreSQL" in message


def test_separate_worker_process_fulfils_orders_taken_by_an_api_only_server(
    database_url: str, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a separate worker runs on PostgreSQL only")
    sqlite_url = database_url  # the name the body uses
    log = tmp_path / "server.log"
    # The queue has room for everything this test places, whether or not the worker has
    # claimed the earlier orders yet when the next one arrives.
    with server(sqlite_url, log, workers_enabled="false", capacity=1, queue_limit=20) as (_, url):
        ids = place_many(url, 3)
        assert httpx.get(f"{url}/capacity").json()["queued"] == 3
        with (tmp_path / "worker.log").open("ab") as out:
            worker = subprocess.Popen(
                [PYTHON, "-m", "retail", "worker", "--capacity", "3"],
                env=environment(sqlite_url, fulfilment_delay=0.05),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: set(statuses(url, ids)) == {"fulfilled"})
            # The API process sees the queue drain even though it claims nothing itself.
            wait_until(lambda: httpx.get(f"{url}/capacity").json()["queued"] == 0)
            assert len(place_many(url, 5)) == 5
            # Prefer: wait also sees orders finished by the other process.
            waited = httpx.post(
                f"{url}/orders",
                json={"customer_id": "w", "items": [{"sku": "MUG-1", "quantity": 1}]},
                headers={"Prefer": "wait=20"},
                timeout=30,
            )
            assert waited.status_code == 201
            assert waited.json()["status"] == "fulfilled"
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(15) == 0
