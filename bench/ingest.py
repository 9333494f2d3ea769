"""Ingest: how fast `POST /orders` stores orders, against the no-database floor.

Both servers are one uvicorn worker without an access log. wrk sends the same body
(`{"customer_id": …, "items": [{"sku": "BENCH-1", "quantity": 1}]}`) on 64
connections, closed loop, for the same duration, first to the baseline
(`bench.baseline`: same request model and checks, no database), then to `retail` in
queue mode with a queue limit nothing reaches and fulfilment workers off, so the
figure is the write path alone: admission, one group-committed transaction per
batch (order, line, stock reservation, first event), the `202`.

`defaults=True` runs retail as people run it instead: `retail serve` (the service's
own entry point, with its HTTP protocol), fulfilment workers on (capacity 8, 1 s per
order, so the queue deepens all through the run; the queue limit still nothing
reaches) and logs at `info` (a request line and an order line per order), so the
figure includes what the service does beside the write path.

After the run the database is checked: every `202` wrk saw (its `Location`) names a
stored order, and the stock taken equals the orders stored (nothing oversold, none
lost). The ratio is `retail orders/s ÷ baseline requests/s`, measured back to back.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import servers, wrk

SKU = "BENCH-1"
STOCK = 2_000_000_000
QUEUE_LIMIT = 100_000_000
DEFAULT_CAPACITY = 8  # the configuration people run: workers on, 1 s orders, logs at info
DEFAULT_DELAY = "1"
WARMUP_S = 2.0


@dataclass(frozen=True)
class Durability:
    accepted: int  # distinct 202s wrk saw, warm-up included
    stored: int  # orders in the database
    missing: int  # 202s whose order is not in the database
    stock_taken: int  # units gone from the SKU's stock

    @property
    def ok(self) -> bool:
        # Orders stored but never answered are the requests in flight when wrk stopped.
        return self.missing == 0 and self.stock_taken == self.stored >= self.accepted


@dataclass(frozen=True)
class Measured:
    """A wrk run and the server's CPU time per answer during it."""

    wrk: wrk.WrkResult
    cpu_us: float  # server CPU microseconds per answer (all threads)


def measure(server: servers.Server, **wrk_options: object) -> Measured:
    before = servers.cpu_seconds(server.pid)
    result = wrk.run(server.url, **wrk_options)  # type: ignore[arg-type]
    used = servers.cpu_seconds(server.pid) - before
    return Measured(result, used / result.requests * 1e6 if result.requests else 0.0)


@dataclass(frozen=True)
class IngestResult:
    backend: str
    keys: bool
    baseline: Measured
    retail: Measured
    durability: Durability
    defaults: bool = False  # workers on and logs at info (else workers off, logs at warning)

    @property
    def ratio(self) -> float:
        """Stored orders/s over the baseline's answers/s."""
        base = self.baseline.wrk.rate
        return self.retail.wrk.rate_of(202) / base if base else 0.0

    @property
    def cpu_ratio(self) -> float:
        """The baseline's CPU per answer over retail's CPU per order (less noisy)."""
        return self.baseline.cpu_us / self.retail.cpu_us if self.retail.cpu_us else 0.0


def retail_settings(database_url: str, *, defaults: bool = False) -> dict[str, object]:
    """Queue mode with a queue limit nothing reaches; the write path alone, or `defaults`."""
    settings: dict[str, object] = {
        "database_url": database_url,
        "overload_mode": "queue",
        "queue_limit": QUEUE_LIMIT,
        "admin_token": servers.ADMIN_TOKEN,
        "seed_demo_catalogue": "false",
    }
    if defaults:
        return {
            **settings,
            "capacity": DEFAULT_CAPACITY,
            "fulfilment_delay": DEFAULT_DELAY,
            "log_level": "info",
        }
    return {**settings, "workers_enabled": "false", "log_level": "warning"}


def put_product(url: str, sku: str, stock: int) -> None:
    response = httpx.put(
        f"{url}/products/{sku}",
        json={"name": "Benchmark item", "unit_price": 100, "stock": stock},
        headers={"Authorization": f"Bearer {servers.ADMIN_TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()


async def _check(database_url: str, accepted_ids: set[str], sku: str, stock: int) -> Durability:
    from sqlalchemy import func, select

    from retail.store.sql.engine import Database
    from retail.store.sql.models import Order, Product

    db = Database(database_url)
    try:
        async with db.read() as session:
            stored = {str(order_id) for order_id in await session.scalars(select(Order.id))}
            count = await session.scalar(select(func.count()).select_from(Order))
            left = await session.scalar(select(Product.stock).where(Product.sku == sku))
    finally:
        await db.dispose()
    return Durability(
        accepted=len(accepted_ids),
        stored=int(count or 0),
        missing=len(accepted_ids - stored),
        stock_taken=stock - int(left or 0),
    )


def run_baseline(
    workdir: Path, *, duration_s: float, connections: int, warmup_s: float = WARMUP_S
) -> Measured:
    port = servers.free_port()
    with servers.serving(
        servers.uvicorn_command("bench.baseline:app", port),
        port=port,
        env=servers.environment(),
        log=workdir / "baseline.log",
        ready="/openapi.json",
    ) as server:
        wrk.run(server.url, connections=connections, duration_s=warmup_s, sku=SKU)
        return measure(server, connections=connections, duration_s=duration_s, sku=SKU)


def run_retail(
    workdir: Path,
    database_url: str,
    *,
    duration_s: float,
    connections: int,
    keys: bool,
    warmup_s: float = WARMUP_S,
    defaults: bool = False,
) -> tuple[Measured, Durability]:
    port = servers.free_port()
    ids = workdir / f"ids-{port}"
    # As people start it with the defaults: `retail serve` (its HTTP protocol, its line
    # per request); the write path alone under plain uvicorn, as the baseline runs.
    command = (
        servers.retail_serve_command(port, access_log=True)
        if defaults
        else servers.uvicorn_command("retail.main:app", port)
    )
    with servers.serving(
        command,
        port=port,
        env=servers.environment(**retail_settings(database_url, defaults=defaults)),
        log=workdir / "retail.log",
    ) as server:
        put_product(server.url, SKU, STOCK)
        common = {"connections": connections, "sku": SKU, "idempotency_keys": keys}
        wrk.run(server.url, duration_s=warmup_s, ids_dir=ids / "warmup", **common)
        result = measure(server, duration_s=duration_s, ids_dir=ids / "run", **common)
    # Stopped (SIGTERM): whatever was still being written is written.
    accepted = set(wrk.accepted_ids(ids / "warmup")) | set(wrk.accepted_ids(ids / "run"))
    durability = asyncio.run(_check(database_url, accepted, SKU, STOCK))
    return result, durability


def run(
    *,
    postgres_url: str | None = None,
    duration_s: float = 12.0,
    connections: int = 64,
    keys: bool = False,
    warmup_s: float = WARMUP_S,
    workdir: Path | None = None,
    defaults: bool = False,
) -> IngestResult:
    """Baseline, then retail on a fresh database (SQLite, or PostgreSQL at `postgres_url`);
    `defaults`: workers on and logs at info."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retail-bench-"))
    baseline = run_baseline(
        workdir, duration_s=duration_s, connections=connections, warmup_s=warmup_s
    )
    with servers.fresh_database(postgres_url, workdir) as database_url:
        result, durability = run_retail(
            workdir,
            database_url,
            duration_s=duration_s,
            connections=connections,
            keys=keys,
            warmup_s=warmup_s,
            defaults=defaults,
        )
    return IngestResult(
        backend="PostgreSQL" if postgres_url else "SQLite",
        keys=keys,
        baseline=baseline,
        retail=result,
        durability=durability,
        defaults=defaults,
    )
