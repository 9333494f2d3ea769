"""Ingest CPU per order, in-process: `POST /orders` driven through the ASGI app directly.

    uv run python -m bench.ingest_cpu [--orders 12000] [--clients 64] [--defaults] [--keys]
                                      [--profile F] [--set RETAIL_NAME=VALUE ...]

No server, no sockets: `clients` tasks each send their share of orders through the app
(SQLite file in a temporary directory, workers off, queue mode with a queue limit nothing
reaches, logs at warning, two customers as `bench ingest`'s wrk threads are). With
`--defaults`, as `bench ingest`'s "defaults" row runs it: workers on (capacity 8, 1 s
per order, so the queue deepens all through the run) and logs at info, written to
a file (as a server's stderr would be). With `--keys`, every request carries its own
`Idempotency-Key`, as `bench ingest`'s keyed row sends them. Prints the
process's CPU microseconds per order (every thread: the event loop and the SQLite
writer) and the event loop thread's alone. For finding where the write path spends its
CPU (`--profile F` writes cProfile's figures of the event loop thread for the measured part
to F); `bench ingest` gives the figures over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

SKU = "BENCH-1"
TOKEN = "bench-admin-token"


async def _request(app: Any, method: str, path: str, body: bytes, headers: list[Any]) -> int:
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
        "state": {},
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def put_product(app: Any) -> None:
    """The probe's one SKU, with stock for any run."""
    product = json.dumps({"name": "bench", "unit_price": 100, "stock": 2**31 - 1}).encode()
    admin = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
    ]
    assert await _request(app, "PUT", f"/products/{SKU}", product, admin) in (200, 201)


async def _run(orders: int, clients: int, keys: bool, profile: str | None) -> None:
    try:
        from retail.web.app import create_app
    except ImportError:  # the tree before the layered redesign (d90c89b)
        from retail.app import create_app  # type: ignore[no-redef]

    app = create_app()
    bodies = [
        json.dumps({"customer_id": f"wrk-{n}", "items": [{"sku": SKU, "quantity": 1}]}).encode()
        for n in (1, 2)
    ]
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(bodies[0])).encode()),
    ]

    sent = 0

    async def client(count: int, number: int) -> None:
        nonlocal sent
        for _ in range(count):
            keyed = headers
            if keys:
                sent += 1
                keyed = [*headers, (b"idempotency-key", b"bench-%d-%d" % (number, sent))]
            status = await _request(app, "POST", "/orders", bodies[number % 2], keyed)
            assert status == 202, status

    async with app.router.lifespan_context(app):
        await put_product(app)
        await asyncio.gather(*(client(50, n) for n in range(clients)))  # warm-up
        each = orders // clients
        profiler = cProfile.Profile() if profile else None
        cpu, loop_cpu = time.process_time(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        await asyncio.gather(*(client(each, n) for n in range(clients)))
        if profiler is not None:
            profiler.disable()
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    done = each * clients
    print(
        f"orders={done} cpu_us_per_order={cpu / done * 1e6:.1f} "
        f"event_loop_cpu_us_per_order={loop_cpu / done * 1e6:.1f}"
    )


def add_probe_options(parser: argparse.ArgumentParser) -> None:
    """The options every in-process probe with an app of its own takes."""
    parser.add_argument("--profile", metavar="FILE", help="write cProfile figures here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RETAIL_NAME=VALUE",
        help="a setting over the above (repeatable), e.g. RETAIL_LOG_LEVEL=warning",
    )


def probe_settings(workdir: str) -> dict[str, str]:
    """A SQLite file in `workdir`, queue mode with a queue nothing fills, an admin token,
    no demo catalogue."""
    return {
        "RETAIL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/retail.db",
        "RETAIL_OVERLOAD_MODE": "queue",
        "RETAIL_QUEUE_LIMIT": "100000000",
        "RETAIL_ADMIN_TOKEN": TOKEN,
        "RETAIL_SEED_DEMO_CATALOGUE": "false",
    }


def apply_settings(
    parser: argparse.ArgumentParser, settings: dict[str, str], assignments: list[str]
) -> None:
    """`settings`, each `--set RETAIL_NAME=VALUE` over them, into the environment."""
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name.startswith("RETAIL_"):
            parser.error(f"--set wants RETAIL_NAME=VALUE, not {assignment!r}")
        settings[name] = value
    os.environ.update(settings)


def log_to_file(workdir: str) -> None:
    """Logging as `retail.main` sets it up, to `workdir`/server.log (as stderr would be)."""
    from retail.config import LogFormat, Settings

    try:
        from retail.runtime.logs import configure_logging
    except ImportError:  # the tree before the layered redesign (d90c89b)
        from retail.logs import configure_logging  # type: ignore[no-redef]

    sys.stderr = open(f"{workdir}/server.log", "w")  # noqa: SIM115 - for the whole run
    configure_logging(LogFormat.TEXT, Settings().log_level, logger="retail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=12_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--defaults", action="store_true", help="workers on (capacity 8, 1 s orders), logs at info"
    )
    parser.add_argument(
        "--keys", action="store_true", help="an Idempotency-Key of its own on every request"
    )
    add_probe_options(parser)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="retail-ingest-cpu-")
    settings = probe_settings(workdir)
    if args.defaults:
        settings |= {
            "RETAIL_CAPACITY": "8",
            "RETAIL_FULFILMENT_DELAY": "1",
            "RETAIL_LOG_LEVEL": "info",
        }
    else:
        settings |= {"RETAIL_WORKERS_ENABLED": "false", "RETAIL_LOG_LEVEL": "warning"}
    apply_settings(parser, settings, args.set)
    log_to_file(workdir)
    try:
        asyncio.run(_run(args.orders, args.clients, args.keys, args.profile))
    finally:
        logging.shutdown()


if __name__ == "__main__":
    main()
