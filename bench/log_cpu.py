"""CPU per log line, in-process: the two lines each accepted order makes, as the service makes them.

    uv run python -m bench.log_cpu [--orders 20000] [--rounds 5]

Logging is configured as `retail serve` configures it (`configure_logging`: the log
thread, the request id and rate-limit filters), writing to a file as a server's stderr
would be. Each order makes its two info lines through the callers the service uses: the
access line of `POST /orders 202` (`Telemetry`, with the Location header it reads the
order id from) and the order's `created` line (`log_transition`), inside a request whose
id is in force. The caller's CPU (the thread that logs) and the process's (with the log
thread that formats and writes, which shares the GIL with the event loop) are taken
until every line is written. Prints, per format (text, JSON), the CPU microseconds per
line of every round, and their minimum and median.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

from retail.config import LogFormat, LogLevel
from retail.core.events import OrderEvent
from retail.core.types import OrderStatus
from retail.runtime.clock import SystemClock
from retail.runtime.logs import configure_logging, flush_logs, log_transition, request_id
from retail.runtime.metrics import Metrics
from retail.web.telemetry import Telemetry


def one_round(
    telemetry: Telemetry, orders: list[OrderEvent], rids: list[str]
) -> tuple[float, float]:
    """(caller CPU s, process CPU s) for the two lines of each order, all written."""
    ids = [str(event.order_id) for event in orders]
    headers = [
        [(b"content-type", b"application/json"), (b"location", f"/orders/{order_id}".encode())]
        for order_id in ids
    ]
    flush_logs()
    cpu, caller = time.process_time(), time.thread_time()
    for event, rid, answer in zip(orders, rids, headers, strict=True):
        token = request_id.set(rid)
        log_transition(event)
        telemetry._log("POST", "/orders", 202, 0.0012345, rid, answer)
        request_id.reset(token)
    flush_logs()  # the log thread has written every line
    return time.thread_time() - caller, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000, help="orders per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="retail-log-cpu-")
    sys.stderr = open(os.path.join(workdir, "server.log"), "w")  # noqa: SIM115 - whole run
    telemetry = Telemetry(Metrics(), SystemClock())
    now = datetime.now(UTC)
    orders = [
        OrderEvent(n, uuid.uuid4(), "created", OrderStatus.QUEUED, None, now)
        for n in range(args.orders)
    ]
    rids = [os.urandom(16).hex() for _ in orders]
    gc.freeze()  # as the app does with what it builds at start-up: full passes skip it
    lines = 2 * len(orders)
    results: dict[str, list[tuple[float, float]]] = {"text": [], "json": []}
    for _ in range(args.rounds):
        for log_format in (LogFormat.TEXT, LogFormat.JSON):
            configure_logging(log_format, LogLevel.INFO, logger="retail")
            one_round(telemetry, orders[:1000], rids[:1000])  # warm-up
            caller, process = one_round(telemetry, orders, rids)
            results[log_format.value].append((caller / lines * 1e6, process / lines * 1e6))
    logging.shutdown()
    out = sys.__stdout__ or sys.stdout
    print(f"lines per round: {lines} (two per order), rounds: {args.rounds}", file=out)
    for name, rounds in results.items():
        both = [process for _, process in rounds]
        callers = [caller for caller, _ in rounds]
        print(
            f"{name}: cpu_us_per_line (both threads) "
            f"min={min(both):.2f} median={statistics.median(both):.2f} "
            f"[{', '.join(f'{v:.2f}' for v in both)}]; "
            f"caller min={min(callers):.2f} median={statistics.median(callers):.2f}",
            file=out,
        )


if __name__ == "__main__":
    main()
