"""Real server processes for tests (`retail.loadgen.process`), and following their orders."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from retail.loadgen import process
from retail.loadgen.process import Server, free_port

__all__ = [
    "PYTHON",
    "ROOT",
    "Server",
    "environment",
    "follow",
    "free_port",
    "python_environment",
    "retail_serve_command",
    "serve_in_thread",
    "server_in",
    "serving",
    "sqlite_url",
    "uvicorn_command",
]

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
TERMINAL = {"fulfilled", "failed", "cancelled"}
# Server processes share their compiled bytecode here, outside the source tree, so each
# one starts without compiling every module again.
PYCACHE = Path(tempfile.gettempdir()) / "retail-tests-pycache"


def python_environment() -> dict[str, str]:
    """This process's environment without RETAIL_*, for a Python subprocess."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RETAIL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    return {**inherited, "PYTHONPYCACHEPREFIX": str(PYCACHE)}


def environment(database_url: str, **settings: Any) -> dict[str, str]:
    """A Python subprocess's environment with the given settings (and no others)."""
    return {
        **python_environment(),
        "RETAIL_DATABASE_URL": database_url,
        **{f"RETAIL_{k.upper()}": str(v) for k, v in settings.items()},
    }


@contextmanager
def serving(
    command: Sequence[str], *, port: int, env: dict[str, str], cwd: Path, log: Path
) -> Iterator[Server]:
    """Run `command` until /healthz answers 200; kill it at the end if it still runs."""
    try:
        with process.serving(
            command,
            port=port,
            env=env,
            cwd=cwd,
            log=log,
            start_timeout_s=START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
            kill_at_end=True,
        ) as server:
            yield server
    except process.ServerFailed as failure:
        raise AssertionError(f"{failure}\n{log.read_text(errors='replace')}") from None


def uvicorn_command(port: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "retail.main:app", "--host", "127.0.0.1", "--port", str(port)]


def retail_serve_command(port: int) -> list[str]:
    return [PYTHON, "-m", "retail", "serve", "--port", str(port)]


def sqlite_url(folder: Path) -> str:
    """The SQLite database file `retail.db` in `folder`."""
    return f"sqlite+aiosqlite:///{folder / 'retail.db'}"


@contextmanager
def server_in(
    folder: Path, command: Callable[[int], list[str]] = retail_serve_command, **settings: Any
) -> Iterator[Server]:
    """A server process on a free port with `settings` (and no others); its working
    directory, SQLite database and log (`server.log`) in `folder`."""
    port = free_port()
    env = environment(sqlite_url(folder), **settings)
    with serving(command(port), port=port, env=env, cwd=folder, log=folder / "server.log") as s:
        yield s


def follow(url: str, location: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Poll an order's Location until it is terminal; its final representation."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(url + location, timeout=5)
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        if order["status"] in TERMINAL:
            assert "retry-after" not in response.headers
            return order
        assert int(response.headers["retry-after"]) >= 1
        if time.monotonic() > deadline:
            raise AssertionError(f"order not finished after {timeout_s} s: {order}")
        time.sleep(0.05)


@contextmanager
def serve_in_thread(
    app: Any, *, start_timeout_s: float = START_TIMEOUT_S, **config: Any
) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread (`config`: more of
    `uvicorn.Config`); yields its base URL."""
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, log_level="warning", lifespan="on", access_log=False, **config
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="retail-test-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise AssertionError("the server stopped while starting")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start within {start_timeout_s:g} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(start_timeout_s)
        sock.close()
