"""`retail serve --workers N`: N API processes on one port, one fleet (PostgreSQL).

Each process is a whole `retail serve` (its own event loop, fulfilment slots and
admission) binding the port with `SO_REUSEPORT`, so the kernel spreads connections
among them. They run with `RETAIL_FLEET=true`, so admission in each plans with the
fleet's load; they share one secret key (order tokens and list cursors work on any of
them) and one `PROMETHEUS_MULTIPROC_DIR`, so `/metrics` on any of them sums all.

This process only supervises: SIGTERM or Ctrl+C stops them all; if one ends, the
others are stopped too and its exit code is returned.
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


def serve_processes(count: int, overrides: dict[str, Any], *, access_log: bool) -> int:
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
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(count):
            children.append(subprocess.Popen(command, env=env))
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
