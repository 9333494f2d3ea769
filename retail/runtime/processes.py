"""`retail serve --workers N`: N API processes on one port, one fleet (PostgreSQL).

Each process is a whole `retail serve` (its own event loop, fulfilment slots and
admission) binding the port with `SO_REUSEPORT`, so the kernel spreads connections
among them. They run with `RETAIL_FLEET=true`, so admission in each plans with the
fleet's load; they share one secret key (order tokens and list cursors work on any of
them) and one `PROMETHEUS_MULTIPROC_DIR`, so `/metrics` on any of them sums all.

This process only supervises: SIGTERM or Ctrl+C stops them all; if one ends, the
others are stopped too and its exit code is returned. If the supervisor itself is
killed (`kill -9`), Linux sends each process SIGTERM (`PR_SET_PDEATHSIG`): none is
left behind holding the port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from retail.runtime.metrics import MULTIPROCESS_DIR_ENV

STOP_TIMEOUT_S = 30.0
STARTUP_POLL_S = 0.2
STARTUP_POLLS = 600  # two minutes


def serve_processes(count: int, overrides: dict[str, Any], *, port: int, access_log: bool) -> int:
    """Run `count` `retail serve` processes until one ends or a stop is asked for.

    The schema is migrated before (by the caller): the processes do not migrate.
    """
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is not None:
            env[f"RETAIL_{name.upper()}"] = str(value)
    env["RETAIL_FLEET"] = "true"
    env["RETAIL_MIGRATE_ON_START"] = "false"
    env.setdefault("RETAIL_SECRET_KEY", secrets.token_hex(32))
    own_metrics_dir = None
    if not env.get(MULTIPROCESS_DIR_ENV):
        own_metrics_dir = tempfile.mkdtemp(prefix="retail-metrics-")
        env[MULTIPROCESS_DIR_ENV] = own_metrics_dir
    command = [sys.executable, "-m", "retail", "serve", "--reuse-port"]
    if not access_log:
        command.append("--no-access-log")
    children: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, preexec_fn=_end_with_parent)

    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # The first alone until it answers: it seeds the catalogue of an empty database,
        # which the others would race it for.
        children.append(start())
        if _answers(children[0], overrides.get("host") or env.get("RETAIL_HOST"), port):
            for _ in range(count - 1):
                children.append(start())
        code = _wait_any(children)
        if not stopping:
            stop(signal.SIGTERM, None)
        for child in children:
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _wait_any(children: list[subprocess.Popen[bytes]]) -> int:
    """The exit code of the first child to end."""
    while True:
        pid, status = os.wait()
        for child in children:
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                return child.returncode


def _answers(child: subprocess.Popen[bytes], host: str | None, port: int) -> bool:
    """Wait until `child` answers `/healthz` (True) or ends (False)."""
    import httpx

    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    for _ in range(STARTUP_POLLS):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        try:
            child.wait(STARTUP_POLL_S)
            return False  # it ended
        except subprocess.TimeoutExpired:
            continue
    return child.poll() is None


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the supervisor dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
