"""The app under every server it supports, each a real process on a free port.

Each one: wait for /healthz, place an order, follow its Location to `fulfilled`,
then SIGTERM: the process must stop promptly and cleanly.
"""

from __future__ import annotations

import importlib.util
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serving import (
    PYTHON,
    ROOT,
    environment,
    follow,
    free_port,
    serving,
    uvicorn_command,
)

pytestmark = pytest.mark.slow

# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status
# says what stopped it: -SIGTERM to Popen, 143 to a shell. Either is a clean stop.
UVICORN_EXIT = frozenset({0, -signal.SIGTERM})


@dataclass(frozen=True)
class Kind:
    name: str
    command: Callable[[int], list[str]]
    server_header: str
    exit_codes: frozenset[int]
    shutdown_line: str | None = None  # logged once the lifespan shutdown has finished

    def __str__(self) -> str:
        return self.name


def _retail_serve(port: int) -> list[str]:
    return [PYTHON, "-m", "retail", "serve", "--port", str(port)]


def _hypercorn(port: int) -> list[str]:
    return [PYTHON, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "retail.main:app"]


def _daphne(port: int) -> list[str]:
    return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "retail.main:app"]


def _fastapi_run(port: int) -> list[str]:
    main = str(ROOT / "retail" / "main.py")
    return [PYTHON, "-m", "fastapi", "run", main, "--host", "127.0.0.1", "--port", str(port)]


SHUTDOWN_COMPLETE = "Application shutdown complete"
UVICORN = Kind("uvicorn", uvicorn_command, "uvicorn", UVICORN_EXIT, SHUTDOWN_COMPLETE)
RETAIL_SERVE = Kind("retail-serve", _retail_serve, "uvicorn", UVICORN_EXIT, SHUTDOWN_COMPLETE)
HYPERCORN = Kind("hypercorn", _hypercorn, "hypercorn", frozenset({0}))
DAPHNE = Kind("daphne", _daphne, "daphne", frozenset({0}))
FASTAPI_RUN = Kind("fastapi-run", _fastapi_run, "uvicorn", UVICORN_EXIT, SHUTDOWN_COMPLETE)

needs_fastapi_cli = pytest.mark.skipif(
    importlib.util.find_spec("fastapi_cli") is None, reason="the fastapi CLI is not installed"
)
KINDS = [
    UVICORN,
    RETAIL_SERVE,
    HYPERCORN,
    DAPHNE,
    pytest.param(FASTAPI_RUN, marks=needs_fastapi_cli),
]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"


def place(url: str, customer: str = "alice") -> httpx.Response:
    return httpx.post(
        f"{url}/orders",
        json={"customer_id": customer, "items": [{"sku": "MUG-1", "quantity": 2}]},
        timeout=10,
    )


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_places_and_fulfils_an_order_then_stops_on_sigterm(kind: Kind, tmp_path: Path) -> None:
    port = free_port()
    env = environment(sqlite_url(tmp_path), fulfilment_delay=0)
    log = tmp_path / "server.log"
    with serving(kind.command(port), port=port, env=env, cwd=tmp_path, log=log) as server:
        response = place(server.url)
        assert response.status_code == 202, response.text
        assert kind.server_header in response.headers["server"]
        placed = response.json()
        location = response.headers["location"]
        assert location == f"/orders/{placed['id']}"

        order = follow(server.url, location)
        assert order["status"] == "fulfilled"
        assert order["total"] == 2 * order["lines"][0]["unit_price"]
        events = httpx.get(f"{server.url}{location}/events", timeout=5).json()
        kinds = [event["kind"] for event in events]
        assert kinds[0] == "created"
        assert kinds[-1] == "fulfilled"
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200

        code, seconds = server.terminate()
    assert code in kind.exit_codes, server.output()
    assert seconds < 5, server.output()
    if kind.shutdown_line is not None:
        assert kind.shutdown_line in server.output()


def stored_order(tmp_path: Path, order_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(tmp_path / "retail.db") as connection:
        status, lease_owner = connection.execute(
            "SELECT status, lease_owner FROM orders WHERE id = ?", (order_id.replace("-", ""),)
        ).fetchone()
    return status, lease_owner


@pytest.mark.parametrize("kind", [HYPERCORN, DAPHNE], ids=str)
def test_sigterm_lets_the_order_in_flight_finish(kind: Kind, tmp_path: Path) -> None:
    """The services stop gracefully under these servers too (daphne has no lifespan)."""
    port = free_port()
    env = environment(sqlite_url(tmp_path), fulfilment_delay=1, shutdown_timeout_s=10)
    log = tmp_path / "server.log"
    with serving(kind.command(port), port=port, env=env, cwd=tmp_path, log=log) as server:
        response = place(server.url)
        assert response.status_code == 202, response.text
        order_id = response.json()["id"]
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/orders/{order_id}").json()["status"] != "processing":
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)

        code, seconds = server.terminate()
    assert code == 0, server.output()
    assert seconds < 5, server.output()
    assert stored_order(tmp_path, order_id) == ("fulfilled", None)
