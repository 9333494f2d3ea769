"""Overload: what each capacity mode delivers when more orders arrive than fit.

A real server (`retail serve`, one process, SQLite) with capacity `C` and a fixed
fulfilment time `D` can fulfil at most `C / D` orders per second. Orders arrive
open loop (Poisson, `retail.loadgen`, seeded) at a multiple of that rate for
`duration_s`; then the database says which orders were fulfilled and when.

Throughput is counted in a window: fulfilled orders whose `finished_at` lies in
`[t0 + D, t0 + duration]` (t0 = the first due time; the first `D` seconds are the
slots filling up), divided by the window's length. Nothing after the last arrival
counts, so a queue left over at the end neither helps nor hurts.

Limits it is held against (`bench.erlang`): `C / D` for queue mode (Little's law:
every slot always busy), Erlang-B carried load `λ·(1 - B(C, λ·D))` for reject mode
(a loss system), and, to separate the server from the luck of a 20 s sample, the
same arrivals replayed through an ideal loss system. Degrade mode is compared with
queue mode at the same load.

Refusal latency is the client's time from an order's due time to its `503` (open
loop: a late client counts against the server), and also from the moment the
request went out (httpcore's trace), which leaves the client's own lateness out.
The server's resident memory is sampled from /proc through each run.

`saturation()` measures how fast the server refuses: reject mode with every slot
held by a long order, wrk on 64 connections, against the no-database baseline.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from bench import erlang, ingest, servers, wrk
from retail.core.types import Priority
from retail.sim.report import retry_after_error_by_rank

MODES = ("queue", "reject", "degrade", "auto")
SKU = ingest.SKU
STOCK = 1_000_000
SETTLE_S = 0.5  # after the window: let finishes stamped inside it commit
WARMUP_SERVICE_TIMES = 2  # the window starts 2·D after the first due time


@dataclass(frozen=True)
class OverloadConfig:
    capacity: int = 8
    delay_s: float = 1.0
    duration_s: float = 20.0
    multiples: tuple[float, ...] = (2.0, 4.0)
    modes: tuple[str, ...] = MODES
    seed: int = 20261126
    target_wait_s: float = 5.0  # auto mode's RETAIL_TARGET_WAIT_S

    @property
    def limit_rate(self) -> float:
        return erlang.queue_limit_rate(self.capacity, self.delay_s)


@dataclass(frozen=True)
class OverloadResult:
    mode: str
    multiple: float
    rate: float  # offered orders/s
    capacity: int
    delay_s: float
    duration_s: float
    sent: int
    accepted: int
    refused: int
    errors: int
    fulfilled_in_window: int
    window_s: float
    refusal_ms: tuple[float, float] | None  # p50, p99 of 503s, from the due time
    refusal_sent_ms: tuple[float, float] | None  # p50, p99 of 503s, from the send
    accept_ms: tuple[float, float] | None  # p50, p99 of 202s
    replay_rate: float  # ideal loss system on these arrivals, same window
    rss_kib: tuple[int, int, int]  # at 25 % of the run, at its end, peak (VmHWM)
    service_s: float  # mean started -> finished of fulfilled full-service orders
    wait_ms: tuple[float, float] | None  # p50, p99 created -> started of fulfilled orders
    # `retail.sim.report.retry_after_error` of the 503s: how far each Retry-After was
    # from the time until an order sent after it was first accepted; and each
    # Retry-After-Ms (the estimate in milliseconds)
    retry_after_error: dict[str, Any]
    retry_after_ms_error: dict[str, Any] = field(default_factory=dict)

    @property
    def fulfilled_rate(self) -> float:
        return self.fulfilled_in_window / self.window_s

    @property
    def limit_rate(self) -> float | None:
        """The physical limit this mode is held against (None: degrade, compared with queue)."""
        if self.mode == "queue":
            return erlang.queue_limit_rate(self.capacity, self.delay_s)
        if self.mode == "reject":
            return erlang.carried_load(self.rate, self.capacity, self.delay_s)
        return None

    @property
    def of_limit(self) -> float | None:
        limit = self.limit_rate
        return self.fulfilled_rate / limit if limit else None


@dataclass(frozen=True)
class SaturationResult:
    baseline: ingest.Measured
    refusals: ingest.Measured
    defaults: bool = False  # capacity 8, 1 s orders, fair shares, logs at info

    @property
    def refusal_rate(self) -> float:
        """Refusals per second: `503`s, and the `429`s of fair shares."""
        return self.refusals.wrk.rate_of(503) + self.refusals.wrk.rate_of(429)

    @property
    def ratio(self) -> float:
        base = self.baseline.wrk.rate
        return self.refusal_rate / base if base else 0.0

    @property
    def cpu_ratio(self) -> float:
        """The baseline's CPU per answer over retail's CPU per refusal."""
        return self.baseline.cpu_us / self.refusals.cpu_us if self.refusals.cpu_us else 0.0


def percentiles_ms(values: list[float]) -> tuple[float, float] | None:
    """(p50, p99) in milliseconds, nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
        return ordered[index] * 1000

    return rank(0.50), rank(0.99)


def serve_settings(database_url: str, mode: str, config: OverloadConfig) -> dict[str, object]:
    return {
        "database_url": database_url,
        "overload_mode": mode,
        "capacity": config.capacity,
        "fulfilment_delay": f"fixed:{config.delay_s:g}",
        "admin_token": servers.ADMIN_TOKEN,
        "seed_demo_catalogue": "false",
        "shutdown_timeout_s": 1,
        "target_wait_s": config.target_wait_s,
    }


async def order_rows(database_url: str, *columns: Any, fulfilled_only: bool = False) -> Any:
    """`columns` of the `orders` table, row by row (of fulfilled orders only, if asked)."""
    from sqlalchemy import select

    from retail.core.types import OrderStatus
    from retail.store.sql.engine import Database
    from retail.store.sql.models import Order

    query = select(*columns)
    if fulfilled_only:
        query = query.where(Order.status == OrderStatus.FULFILLED.value)
    db = Database(database_url)
    try:
        async with db.read() as session:
            return (await session.execute(query)).all()
    finally:
        await db.dispose()


async def _fulfilled(database_url: str) -> list[tuple[float, float, str, float]]:
    """(started_at, finished_at, service level, created_at) of every fulfilled order,
    epoch seconds."""
    from retail.store.sql.models import Order

    rows = await order_rows(
        database_url,
        Order.started_at,
        Order.finished_at,
        Order.service_level,
        Order.created_at,
        fulfilled_only=True,
    )
    return [
        (started.timestamp(), finished.timestamp(), level, created.timestamp())
        for started, finished, level, created in rows
        if started is not None and finished is not None
    ]


@dataclass(frozen=True)
class Sent:
    """One order of an open-loop run (`bench.openloop`), times in seconds from its start."""

    due_s: float
    sent_s: float | None
    answered_s: float | None
    status: int | None
    location: str | None
    error: str | None
    retry_after: str | None = None
    priority: str | None = None
    retry_after_ms: str | None = None

    @property
    def latency_s(self) -> float | None:
        """Due time to answer: what an open-loop client waited."""
        return None if self.answered_s is None else self.answered_s - self.due_s

    @property
    def from_send_s(self) -> float | None:
        """Request written to answer: the client's own lateness left out."""
        if self.answered_s is None or self.sent_s is None:
            return None
        return self.answered_s - self.sent_s


def _values(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def open_loop(
    url: str, *, rate: float, duration_s: float, seed: int, out: Path, extra: tuple[str, ...] = ()
) -> tuple[float, list[Sent]]:
    """Run `bench.openloop` in its own process; (wall clock at due time 0, orders).

    `extra`: more options for it (`--mix`, `--schedule`; `duration_s` must still cover
    the schedule, it bounds the wait)."""
    subprocess.run(
        [
            servers.PYTHON,
            "-m",
            "bench.openloop",
            url,
            f"--rate={rate:g}",
            f"--duration={duration_s:g}",
            f"--seed={seed}",
            f"--sku={SKU}",
            f"--out={out}",
            *extra,
        ],
        cwd=servers.ROOT,
        check=True,
        timeout=duration_s + 90,
    )
    data = json.loads(out.read_text())
    return data["started_epoch"], [Sent(**order) for order in data["orders"]]


@contextmanager
def fresh_server(
    workdir: Path, log_name: str, settings: dict[str, object], *, postgres_url: str | None = None
) -> Iterator[tuple[str, servers.Server]]:
    """`retail serve` with `settings` on a fresh database (SQLite, or PostgreSQL with
    `postgres_url`): (the database's URL, the server)."""
    port = servers.free_port()
    with (
        servers.fresh_database(postgres_url, workdir) as database_url,
        servers.serving(
            servers.retail_serve_command(port),
            port=port,
            env=servers.environment(**{**settings, "database_url": database_url}),
            log=workdir / log_name,
        ) as server,
    ):
        yield database_url, server


def run_one(
    workdir: Path,
    mode: str,
    multiple: float,
    config: OverloadConfig,
    *,
    postgres_url: str | None = None,
) -> OverloadResult:
    """One open-loop run against a fresh server (SQLite, or PostgreSQL with `postgres_url`)."""
    name = f"{mode}-{multiple:g}{'-pg' if postgres_url else ''}"
    settings = serve_settings("", mode, config)
    with fresh_server(workdir, f"serve-{name}.log", settings, postgres_url=postgres_url) as (
        database_url,
        server,
    ):
        return measure(server.url, database_url, server.pid, workdir, mode, multiple, config)


def measure(
    url: str,
    database_url: str,
    pid: int | None,
    workdir: Path,
    mode: str,
    multiple: float,
    config: OverloadConfig,
) -> OverloadResult:
    """Offer `multiple` times the limit to the service at `url`, open loop; what it fulfilled
    (read from `database_url`) and how it answered. `pid`: the process whose memory is
    sampled (None: none)."""
    rate = multiple * config.limit_rate
    ingest.put_product(url, SKU, STOCK)
    memory = servers.MemorySampler(pid).start() if pid is not None else None
    try:
        t0, orders = open_loop(
            url,
            rate=rate,
            duration_s=config.duration_s,
            seed=config.seed,
            out=workdir / f"openloop-{mode}-{multiple:g}.json",
        )
        window_end = t0 + config.duration_s
        time.sleep(max(0.0, window_end + SETTLE_S - time.time()))
    finally:
        if memory is not None:
            memory.stop()
    fulfilled = asyncio.run(_fulfilled(database_url))
    warmup_s = WARMUP_SERVICE_TIMES * config.delay_s
    window = (t0 + warmup_s, t0 + config.duration_s)
    window_s = window[1] - window[0]
    in_window = sum(1 for _, finished, _, _ in fulfilled if window[0] <= finished <= window[1])
    full = [finished - started for started, finished, level, _ in fulfilled if level == "full"]
    waits = [started - created for started, _, _, created in fulfilled]
    replay = erlang.loss_system_finishes([o.due_s for o in orders], config.capacity, config.delay_s)
    replay_in_window = sum(1 for moment in replay if warmup_s <= moment <= config.duration_s)
    answered = [o for o in orders if o.status is not None]
    refused = [o for o in answered if o.status == 503]
    accepted = [o for o in answered if o.status is not None and 200 <= o.status < 300]
    return OverloadResult(
        mode=mode,
        multiple=multiple,
        rate=rate,
        capacity=config.capacity,
        delay_s=config.delay_s,
        duration_s=config.duration_s,
        sent=len(orders),
        accepted=len(accepted),
        refused=len(answered) - len(accepted),
        errors=len(orders) - len(answered),
        fulfilled_in_window=in_window,
        window_s=window_s,
        refusal_ms=percentiles_ms(_values([o.latency_s for o in refused])),
        refusal_sent_ms=percentiles_ms(_values([o.from_send_s for o in refused])),
        accept_ms=percentiles_ms(_values([o.latency_s for o in accepted])),
        replay_rate=replay_in_window / window_s,
        rss_kib=(
            (memory.rss_at(0.25), memory.rss_at(1.0), memory.peak_kib) if memory else (0, 0, 0)
        ),
        service_s=sum(full) / len(full) if full else 0.0,
        wait_ms=percentiles_ms(waits),
        retry_after_error=retry_after_accuracy(orders),
        retry_after_ms_error=retry_after_accuracy(orders, fine=True),
    )


def retry_after_accuracy(orders: list[Sent], *, fine: bool = False) -> dict[str, Any]:
    """`retail.sim.report.retry_after_error_by_rank` on a live run: each 503 and each 202
    at the moment its request was sent (admission decides as a request arrives). `fine`:
    of the `Retry-After-Ms` given, not the `Retry-After`."""
    refusals = [
        (
            o.sent_s,
            int(o.retry_after_ms) / 1000.0 if fine else float(o.retry_after),
            Priority(o.priority or "standard").rank,
        )
        for o in orders
        if o.status == 503
        and o.sent_s is not None
        and (o.retry_after_ms if fine else o.retry_after) is not None
    ]
    admitted = [
        (o.sent_s, Priority(o.priority or "standard").rank)
        for o in orders
        if o.status == 202 and o.sent_s is not None
    ]
    return retry_after_error_by_rank(refusals, admitted)


class Scenarios(Protocol):
    """Runs of every mode at every multiple of the capacity rate."""

    @property
    def multiples(self) -> tuple[float, ...]: ...

    @property
    def modes(self) -> tuple[str, ...]: ...


C = TypeVar("C", bound=Scenarios)
R = TypeVar("R")


def each_scenario(
    run_one: Callable[[Path, str, float, C], R], config: C, workdir: Path | None
) -> list[R]:
    """`run_one` for each multiple (in order) and each mode, in one work directory."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retail-bench-"))
    return [
        run_one(workdir, mode, multiple, config)
        for multiple in config.multiples
        for mode in config.modes
    ]


def run(
    config: OverloadConfig | None = None, *, workdir: Path | None = None
) -> list[OverloadResult]:
    return each_scenario(run_one, config or OverloadConfig(), workdir)


def saturation(
    *,
    duration_s: float = 10.0,
    connections: int = 64,
    capacity: int = 4,
    warmup_s: float = ingest.WARMUP_S,
    workdir: Path | None = None,
    defaults: bool = False,
) -> SaturationResult:
    """Refusals/s with every slot full, against the baseline's answers/s, back to back.

    Every slot is held for an hour, logs at `warning`; or, with `defaults`, as people
    run it: capacity 8, 1 s orders (wrk's own orders take the slots as they free),
    fair shares on, logs at `info` with a line per request.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retail-bench-"))
    baseline = ingest.run_baseline(
        workdir, duration_s=duration_s, connections=connections, warmup_s=warmup_s
    )
    if defaults:
        capacity = ingest.DEFAULT_CAPACITY
    config = OverloadConfig(capacity=capacity, delay_s=1.0 if defaults else 3600.0)
    port = servers.free_port()
    settings = {
        **serve_settings("", "reject", config),
        "log_level": "info" if defaults else "warning",
    }
    with servers.fresh_database(None, workdir) as database_url:
        settings["database_url"] = database_url
        command = servers.retail_serve_command(port, access_log=defaults)
        with servers.serving(
            command,
            port=port,
            env=servers.environment(**settings),
            log=workdir / "serve-saturation.log",
        ) as server:
            ingest.put_product(server.url, SKU, STOCK)
            body = {"customer_id": "bench-hold", "items": [{"sku": SKU, "quantity": 1}]}
            for _ in range(capacity):  # hold every slot for an hour
                httpx.post(f"{server.url}/orders", json=body, timeout=10).raise_for_status()
            wrk.run(server.url, connections=connections, duration_s=warmup_s, sku=SKU)
            refusals = ingest.measure(
                server, connections=connections, duration_s=duration_s, sku=SKU
            )
    return SaturationResult(baseline=baseline, refusals=refusals, defaults=defaults)


def rss_growth(result: OverloadResult) -> float:
    """RSS at the end over RSS at a quarter of the run (1.0 = flat)."""
    early, late, _ = result.rss_kib
    return late / early if early else 0.0


def degrade_over_queue(results: list[OverloadResult]) -> dict[float, float]:
    """Per load multiple: fulfilled/s in degrade mode over queue mode."""
    by = {(r.mode, r.multiple): r for r in results}
    return {
        multiple: by["degrade", multiple].fulfilled_rate / by["queue", multiple].fulfilled_rate
        for (mode, multiple) in by
        if mode == "queue" and ("degrade", multiple) in by and by[mode, multiple].fulfilled_rate
    }
