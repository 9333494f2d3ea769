"""Chaos: `kill -9` and restart cycles, dropped database connections and slow clients,
under a steady stream of orders; then count accepted, lost and duplicated orders.

    uv run python -m bench.chaos --cycles 5 --cycle-s 4
    uv run python -m bench.chaos --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

Every order has its own customer id and `Idempotency-Key`; a client retries it with the
same key (after a refusal, a connection error or a crash) until it gets a `2xx` or the
run ends. Afterwards, straight from the database:

- accepted: orders that got a `2xx`;
- lost: accepted orders the database does not have;
- duplicated: extra orders for one customer id (one order was placed per id);
- unfinished: stored orders not in a terminal state once the last server drained.

Bounded: `cycles` x `cycle_s` seconds of load plus restarts. Loads only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sqlite3
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.servers import (
    HOST,
    _run_admin_sql,
    environment,
    free_port,
    fresh_database,
    retail_serve_command,
    serving,
    workdir,
)

TERMINAL = ("fulfilled", "failed", "cancelled")


@dataclass
class Tally:
    database: str
    cycles: int
    attempts: int = 0
    accepted: int = 0
    refused: int = 0
    transport_errors: int = 0
    kills: int = 0
    dropped_connections: int = 0
    slow_clients: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    unfinished: int = 0
    accepted_ids: set[str] = field(default_factory=set, repr=False)


async def _client(url: str, tally: Tally, stop: asyncio.Event, rate_hz: float) -> None:
    """One shopper: an order at a time, retried with its key until a 2xx or the end."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            key = uuid.uuid4().hex
            body = {"customer_id": f"chaos-{key}", "items": [{"sku": "MUG-1", "quantity": 1}]}
            while not stop.is_set():
                tally.attempts += 1
                try:
                    response = await client.post(
                        "/orders", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.TransportError:
                    tally.transport_errors += 1
                    await asyncio.sleep(0.05)
                    continue
                if response.is_success:
                    tally.accepted += 1
                    tally.accepted_ids.add(response.json()["id"])
                    break
                tally.refused += 1
                await asyncio.sleep(min(1.0, float(response.headers.get("retry-after", 0.1))))
            await asyncio.sleep(random.expovariate(rate_hz))


def _slow_clients(port: int, count: int) -> list[socket.socket]:
    """Connections that send half a request head, or half a body, and wait."""
    held = []
    for i in range(count):
        try:
            sock = socket.create_connection((HOST, port), timeout=2)
            if i % 2:
                sock.sendall(b"POST /orders HTTP/1.1\r\nHost: x\r\n")
            else:
                sock.sendall(
                    b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 200\r\n\r\n{"customer_id": '
                )
            held.append(sock)
        except OSError:
            pass
    return held


def _drop_connections(postgres_url: str, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    _run_admin_sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )


def _final_counts(database_url: str) -> tuple[dict[str, int], list[str], int]:
    """(orders per customer id, ids of all orders, orders not terminal), from the database."""
    query_counts = "SELECT customer_id, count(*) FROM orders GROUP BY customer_id"
    query_ids = "SELECT id, status FROM orders"
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(path) as db:
            counts = dict(db.execute(query_counts).fetchall())
            rows = db.execute(query_ids).fetchall()
    else:
        import asyncpg

        async def read() -> tuple[dict[str, int], list[Any]]:
            dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
            connection = await asyncpg.connect(dsn)
            try:
                found = {r[0]: r[1] for r in await connection.fetch(query_counts)}
                return found, list(await connection.fetch(query_ids))
            finally:
                await connection.close()

        counts, rows = asyncio.run(read())
    ids = [str(uuid.UUID(str(r[0]))) for r in rows]
    unfinished = sum(1 for r in rows if r[1] not in TERMINAL)
    return counts, ids, unfinished


def run(
    *,
    postgres_url: str | None,
    cycles: int,
    cycle_s: float,
    clients: int,
    rate_hz: float,
    slow: int,
) -> Tally:
    tally = Tally(database="postgresql" if postgres_url else "sqlite", cycles=cycles)
    work = workdir()
    port = free_port()
    with fresh_database(postgres_url, work) as database_url:
        env = environment(
            database_url=database_url,
            fulfilment_delay="uniform:0.05,0.3",
            capacity=8,
            queue_limit=10_000,
            lease_s=2,
            header_timeout_s=2,
            poll_interval_s=0.1,
        )
        log = work / "server.log"

        async def load_for(seconds: float, server_pid: int) -> None:
            stop = asyncio.Event()
            shoppers = [
                asyncio.create_task(_client(f"http://{HOST}:{port}", tally, stop, rate_hz))
                for _ in range(clients)
            ]
            held = _slow_clients(port, slow)
            tally.slow_clients += len(held)
            await asyncio.sleep(seconds / 2)
            if postgres_url is not None:
                await asyncio.to_thread(_drop_connections, postgres_url, database_url)
                tally.dropped_connections += 1
            await asyncio.sleep(seconds / 2)
            if server_pid:
                import os

                os.kill(server_pid, signal.SIGKILL)  # mid-load: requests in flight
                tally.kills += 1
                await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*shoppers, return_exceptions=True)
            for sock in held:
                sock.close()

        command = retail_serve_command(port)
        for _cycle in range(cycles):
            with ExitStack() as stack:
                server = stack.enter_context(serving(command, port=port, env=env, log=log))
                asyncio.run(load_for(cycle_s, server.pid))
        # A last, calm start: everything accepted is fulfilled, nothing is placed.
        with serving(command, port=port, env=env, log=log) as server:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, _, unfinished = _final_counts(database_url)
                if unfinished == 0:
                    break
                time.sleep(0.5)
        counts, ids, tally.unfinished = _final_counts(database_url)
    tally.stored = len(ids)
    tally.lost = len(tally.accepted_ids - set(ids))
    tally.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    return tally


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL to create the run's database on")
    parser.add_argument("--cycles", type=int, default=5, help="kill -9 and restart cycles")
    parser.add_argument("--cycle-s", type=float, default=4.0, help="seconds of load per cycle")
    parser.add_argument("--clients", type=int, default=16, help="concurrent shoppers")
    parser.add_argument("--rate", type=float, default=20.0, help="orders/s per shopper, at most")
    parser.add_argument("--slow", type=int, default=20, help="slow clients per cycle")
    args = parser.parse_args(argv)
    tally = run(
        postgres_url=args.postgres,
        cycles=args.cycles,
        cycle_s=args.cycle_s,
        clients=args.clients,
        rate_hz=args.rate,
        slow=args.slow,
    )
    report = {k: v for k, v in asdict(tally).items() if k != "accepted_ids"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
