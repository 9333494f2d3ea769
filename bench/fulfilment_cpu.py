"""Fulfilment CPU per order, in-process: what the workers cost while the slots are busy.

    uv run python -m bench.fulfilment_cpu [--seconds 10] [--capacity 8] [--delay 1]
                                          [--one-by-one] [--profile F]
                                          [--set RETAIL_NAME=VALUE ...]

No server, no sockets, no intake during the measure: the queue is filled first (through
the app, `POST /orders`, SQLite file in a temporary directory), then the process's CPU
is read over `seconds` while the workers fulfil orders as fast as their slots allow
(capacity 8, 1 s per order, logs at info: the defaults), and divided by the orders
fulfilled meanwhile. Each order is a claim and a transaction per step boundary (shared
by the orders whose boundaries fall together), its events, log lines and metrics. The
queue is filled by many clients at once, so orders are claimed together and keep their
step boundaries together; `--one-by-one` fills it with one client, each order claimed
as it comes, so every boundary is a transaction of its own (as with orders arriving
one at a time into free slots).
Printed: CPU per order (every thread), the event loop thread's, the share of a core,
then each thread's user and system time per order (from `/proc`, Linux).
`--profile F` writes cProfile's figures of the event loop thread to F.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import os
import tempfile
import threading
import time
from typing import Any

from bench.ingest_cpu import (
    SKU,
    _request,
    add_probe_options,
    apply_settings,
    log_to_file,
    probe_settings,
    put_product,
)

CLIENTS = 32


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each of this process's threads, by name (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    by_name: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                text = stat.read()
        except FileNotFoundError:  # the thread ended
            continue
        name = names.get(int(task), "other")
        fields = text[text.rindex(")") + 2 :].split()
        for part, field in (("user", fields[11]), ("system", fields[12])):
            key = f"{name} ({part})"
            by_name[key] = by_name.get(key, 0.0) + int(field) / tick
    return by_name


def _fulfilled(app: Any) -> int:
    """Orders fulfilled so far, as `/metrics` counts them."""
    counter = app.state.services.metrics.orders_finished
    return sum(
        int(sample.value)
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["status"] == "fulfilled"
    )


async def _run(
    seconds: float, capacity: int, delay: float, one_by_one: bool, profile: str | None
) -> None:
    from retail.web.app import create_app

    app = create_app()
    body = json.dumps({"customer_id": "bench", "items": [{"sku": SKU, "quantity": 1}]}).encode()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    async with app.router.lifespan_context(app):
        await put_product(app)
        # Enough for the warm-up and the measure, and some over: the slots never idle.
        wanted = math.ceil((seconds + 3) * capacity / delay * 1.5) + capacity

        async def client(count: int) -> None:  # many at once: faster than the slots drain
            for _ in range(count):
                status = await _request(app, "POST", "/orders", body, headers)
                assert status == 202, status

        clients = 1 if one_by_one else CLIENTS
        await asyncio.gather(*(client(wanted // clients + 1) for _ in range(clients)))
        await asyncio.sleep(2 * delay)  # warm-up: every slot busy, steps under way
        profiler = cProfile.Profile() if profile else None
        before = _fulfilled(app)
        threads = _thread_cpu()
        cpu, loop_cpu = time.process_time(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(seconds)
        if profiler is not None:
            profiler.disable()
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
        done = _fulfilled(app) - before
        threads = {name: spent - threads.get(name, 0.0) for name, spent in _thread_cpu().items()}
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    if not done:
        raise SystemExit(f"no order was fulfilled in {seconds:g} s")
    print(
        f"orders={done} per_s={done / seconds:.1f} cpu_ms_per_order={cpu / done * 1e3:.2f} "
        f"event_loop_cpu_ms_per_order={loop_cpu / done * 1e3:.2f} "
        f"cpu_share_of_a_core={cpu / seconds:.3f}"
    )
    for name, spent in sorted(threads.items(), key=lambda item: -item[1]):
        if spent > 0:
            print(f"  {name}: {spent / done * 1e3:.2f} ms per order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per order")
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="fill the queue one order at a time: each is claimed as it comes, so the "
        "orders' step boundaries fall apart (else many at once: claimed together, they "
        "share their transactions)",
    )
    add_probe_options(parser)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="retail-fulfilment-cpu-")
    settings = probe_settings(workdir) | {
        "RETAIL_CAPACITY": str(args.capacity),
        "RETAIL_FULFILMENT_DELAY": str(args.delay),
        "RETAIL_LOG_LEVEL": "info",
    }
    apply_settings(parser, settings, args.set)
    log_to_file(workdir)
    try:
        asyncio.run(_run(args.seconds, args.capacity, args.delay, args.one_by_one, args.profile))
    finally:
        logging.shutdown()


if __name__ == "__main__":
    main()
