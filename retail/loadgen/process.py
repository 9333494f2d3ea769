"""A server in a process of its own: start it, wait until it answers, stop it.

One helper for everything that runs a real server: `retail demo`, the benchmarks in
`bench/` and the tests. It starts a command (usually `python -m retail serve`), waits
until a readiness path answers `200`, and at the end sends SIGTERM, then SIGKILL if
the process is still there after `stop_timeout_s`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServerFailed(RuntimeError):
    """The server exited or did not answer while starting; the message says how."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def last_lines(self, count: int = 3) -> str:
        lines = self.output().strip().splitlines()
        return " ".join(line.strip() for line in lines[-count:]) or "no output"

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int, float]:
        """SIGTERM and wait; (exit code, seconds it took). `TimeoutError` if it stays."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"still running {timeout_s:g} s after SIGTERM:\n{self.output()}"
            ) from None
        return code, time.monotonic() - started

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        if self.process.poll() is not None:
            return
        try:
            self.terminate(timeout_s)
        except TimeoutError:
            self.process.kill()
            self.process.wait(timeout_s)


@contextmanager
def serving(
    command: Sequence[str],
    *,
    port: int,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    ready: str = "/healthz",
    start_timeout_s: float = START_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    kill_at_end: bool = False,
) -> Iterator[Server]:
    """Run `command` until `ready` answers 200; `ServerFailed` if it exits or never does.

    Whatever still runs at the end is stopped (`Server.stop`), or killed at once.
    """
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://{HOST}:{port}", log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise ServerFailed(
                    f"exited with {process.returncode} while starting: {server.last_lines()}"
                )
            try:
                if httpx.get(server.url + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"no answer on {ready} within {start_timeout_s:g} s")
            time.sleep(0.05)
        yield server
    finally:
        if kill_at_end and process.poll() is None:
            process.kill()
            process.wait(stop_timeout_s)
        server.stop(stop_timeout_s)
