"""Servers for the benchmarks: processes on 127.0.0.1, fresh databases, memory samples."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from retail.loadgen import process
from retail.loadgen.process import Server, free_port

__all__ = ["Server", "free_port", "serving"]

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOST = "127.0.0.1"
ADMIN_TOKEN = "bench-admin-token"


def environment(**settings: object) -> dict[str, str]:
    """This process's environment without RETAIL_*, plus the given `RETAIL_*` settings."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")}
    return {**inherited, **{f"RETAIL_{k.upper()}": str(v) for k, v in settings.items()}}


def uvicorn_command(app: str, port: int) -> list[str]:
    """One uvicorn worker, no access log: the same server for retail and the baseline."""
    return [
        PYTHON,
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def retail_serve_command(port: int, *, access_log: bool = False) -> list[str]:
    """`retail serve`, the service's own entry point (uvicorn inside, one process);
    without its line per request unless `access_log`."""
    script = Path(PYTHON).with_name("retail")
    command = [str(script)] if script.exists() else [PYTHON, "-m", "retail"]
    command += ["serve", "--host", HOST, "--port", str(port)]
    return command if access_log else [*command, "--no-access-log"]


# --- memory ---------------------------------------------------------------------------


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB, from /proc/<pid>/status."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class MemorySampler:
    """Samples a process's resident memory in a thread: (seconds since start, RSS KiB)."""

    pid: int
    interval_s: float = 0.25
    samples: list[tuple[float, int]] = field(default_factory=list)
    peak_kib: int = 0  # VmHWM: the kernel's high-water mark of RSS
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        started = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    rss, hwm = memory_kib(self.pid)
                except (OSError, ValueError):
                    return
                self.samples.append((time.monotonic() - started, rss))
                self.peak_kib = max(self.peak_kib, hwm)
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=run, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def rss_at(self, fraction: float) -> int:
        """RSS at a fraction of the sampled span (0 = first sample, 1 = last)."""
        if not self.samples:
            return 0
        end = self.samples[-1][0]
        for t, rss in self.samples:
            if t >= fraction * end:
                return rss
        return self.samples[-1][1]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- processes -------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    command: Sequence[str], *, port: int, env: dict[str, str], log: Path, ready: str = "/healthz"
) -> Iterator[Server]:
    """Run `command` from the project's root until `ready` answers 200; stop it at the end."""
    with process.serving(command, port=port, env=env, cwd=ROOT, log=log, ready=ready) as server:
        yield server


# --- databases -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(postgres_url: str | None, workdir: Path) -> Iterator[str]:
    """A new, empty database for one server; dropped (or deleted) afterwards.

    SQLite: a file in `workdir`. PostgreSQL: `retail_bench_<random>` created on the
    server of `postgres_url` (any database of it will do), dropped at the end.
    """
    if postgres_url is None:
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    from sqlalchemy import make_url

    name = f"retail_bench_{uuid.uuid4().hex[:8]}"
    _run_admin_sql(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _run_admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_admin_sql(postgres_url: str, statement: str) -> None:
    """Run one statement on the `postgres` maintenance database through asyncpg."""
    import asyncio

    import asyncpg
    from sqlalchemy import make_url

    url = make_url(postgres_url)

    async def run() -> None:
        connection = await asyncpg.connect(
            host=url.host or HOST,
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            database="postgres",
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="retail-bench-"))
