"""The fleet on PostgreSQL: throughput that grows with API processes, the view's staleness,
and the overload figures of a fleet against C/D and Erlang B.

- Scaling: `retail serve` (one API process) and `retail serve --workers 2` (two, one
  port), API-only, queue mode with a queue nothing fills, each on a fresh database;
  wrk closed loop, the same connections and duration, back to back, once the two
  processes are both up (both announced in the fleet). The figure is two processes'
  stored orders/s over one's, measured twice: with every order for one SKU (every
  batch of both processes takes stock from one row) and with the orders spread over
  `SPREAD_SKUS` SKUs in turn, as a shop's orders spread over its catalogue.
- Staleness, during the two-process run: every 0.25 s both processes' `GET /capacity`
  gives the longest delay from a change's commit to its notice being applied since the
  last reconcile; `/metrics` gives the same delays as a histogram (all processes). When
  wrk stops, the time until both processes count the database's queue exactly.
- Overload: two API-only processes (`retail serve --workers 2`) and two `retail worker`
  processes with C/2 slots each, fixed fulfilment D, open-loop Poisson arrivals at a
  multiple of C/D (`bench.overload.measure`): fulfilled/s against C/D in queue mode and
  Erlang B's carried load in reject mode.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import ingest, overload, servers, wrk
from bench.report import overload_runs_table, table

SAMPLE_S = 0.25
SPREAD_SKUS = tuple(f"{ingest.SKU}-{n}" for n in range(1, 9))
CONVERGE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Staleness:
    sampled_max_ms: float  # the longest notice delay any sample of /capacity reported
    histogram_p50_ms: float  # bucket bounds of retail_fleet_notice_delay_seconds
    histogram_p99_ms: float
    notices: int
    converge_s: float  # after the load: until both processes count the database's queue


@dataclass(frozen=True)
class ScalingResult:
    one: list[wrk.WrkResult]  # one API process, per round: every order for one SKU
    two: list[wrk.WrkResult]  # two API processes, per round: every order for one SKU
    staleness: Staleness
    one_spread: list[wrk.WrkResult] = field(default_factory=list)  # over SPREAD_SKUS
    two_spread: list[wrk.WrkResult] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Stored orders/s of two processes over one's, all rounds together (one SKU)."""
        return _ratio(self.one, self.two)

    @property
    def spread_ratio(self) -> float:
        """The same with the orders spread over `SPREAD_SKUS`."""
        return _ratio(self.one_spread, self.two_spread)


def _ratio(one: list[wrk.WrkResult], two: list[wrk.WrkResult]) -> float:
    base = sum(r.rate_of(202) for r in one)
    return sum(r.rate_of(202) for r in two) / base if base else 0.0


def fleet_settings(database_url: str, **settings: object) -> dict[str, object]:
    return {
        "database_url": database_url,
        "fleet": "true",
        "admin_token": servers.ADMIN_TOKEN,
        "log_level": "warning",
        "seed_demo_catalogue": "false",
        "shutdown_timeout_s": 1,
        **settings,
    }


@contextlib.contextmanager
def api_processes(
    database_url: str, count: int, workdir: Path, **settings: object
) -> Iterator[servers.Server]:
    """`retail serve` (count 1) or `retail serve --workers N`, until it answers."""
    port = servers.free_port()
    command = servers.retail_serve_command(port)
    if count > 1:
        command += ["--workers", str(count)]
    with servers.serving(
        command,
        port=port,
        env=servers.environment(**fleet_settings(database_url, **settings)),
        log=workdir / f"fleet-api{count}-{port}.log",
    ) as server:
        # The first process answers before the others are started: wait for them all,
        # or the load's connections would all go to the first.
        _wait_for_members(database_url, count)
        yield server


def _wait_for_members(database_url: str, count: int, timeout_s: float = 120.0) -> None:
    """Until `count` processes have announced themselves in the fleet."""
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    from retail.store.sql.fleet import asyncpg_dsn

    async def members() -> int:
        connection = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return int(await connection.fetchval("SELECT count(*) FROM workers"))
        finally:
            await connection.close()

    deadline = time.monotonic() + timeout_s
    while asyncio.run(members()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} API processes did not all start")
        time.sleep(0.2)


@contextlib.contextmanager
def worker_processes(
    database_url: str, count: int, capacity: int, workdir: Path, **settings: object
) -> Iterator[list[subprocess.Popen[bytes]]]:
    script = Path(servers.PYTHON).with_name("retail")
    command = [str(script)] if script.exists() else [servers.PYTHON, "-m", "retail"]
    env = servers.environment(**fleet_settings(database_url, migrate_on_start="false", **settings))
    workers = []
    try:
        for index in range(count):
            with (workdir / f"fleet-worker{index}.log").open("ab") as out:
                workers.append(
                    subprocess.Popen(
                        [*command, "worker", "--capacity", str(capacity)],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=servers.ROOT,
                    )
                )
        yield workers
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _capacity(url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{url}/capacity", timeout=5).json()
    return body


def _wait_for_capacity(url: str, capacity: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        fleet = _capacity(url).get("fleet")
        if isinstance(fleet, dict) and fleet.get("capacity") == capacity:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fleet at {url} did not reach capacity {capacity}")
        time.sleep(0.1)


@dataclass
class _Sampler:
    """Reads `GET /capacity` every `SAMPLE_S` in a thread: the longest notice delay seen."""

    url: str
    max_delay_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> _Sampler:
        self._stop = threading.Event()

        def run() -> None:
            with httpx.Client(timeout=5) as client:
                while not self._stop.wait(SAMPLE_S):
                    try:
                        fleet = client.get(f"{self.url}/capacity").json()["fleet"]
                    except (httpx.HTTPError, KeyError, ValueError):
                        continue
                    self.max_delay_s = max(self.max_delay_s, fleet["notice_delay_max_s"])

        self._thread = threading.Thread(target=run, name="bench-fleet-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _histogram_ms(metrics: str, quantile: float) -> tuple[float, int]:
    """(upper bound in ms of the bucket holding `quantile`, observations)."""
    buckets = [
        (float("inf") if le == "+Inf" else float(le), float(count))
        for le, count in re.findall(
            r'^retail_fleet_notice_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
    ]
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= quantile * total:
            return bound * 1000, int(total)
    return float("nan"), int(total)


async def _queued_in_database(database_url: str) -> int:
    from retail.store.sql.store import SqlStore

    store = SqlStore(database_url)
    try:
        return sum((await store.queued_by_priority()).values())
    finally:
        await store.close()


def _converge_s(url: str, database_url: str, agreeing: int = 8) -> float:
    """Seconds until `agreeing` answers in a row, each on a new connection (the kernel
    spreads them over the processes), count the database's queue exactly."""
    import asyncio

    started = time.monotonic()
    truth = asyncio.run(_queued_in_database(database_url))
    in_a_row = 0
    while time.monotonic() - started < CONVERGE_TIMEOUT_S:
        body = httpx.get(f"{url}/capacity", timeout=5).json()
        in_a_row = in_a_row + 1 if body["fleet"]["queued"] == truth else 0
        if in_a_row >= agreeing:
            return time.monotonic() - started
        time.sleep(0.01)
    return float("inf")


def scaling(
    postgres_url: str, *, duration_s: float, connections: int, workdir: Path, rounds: int = 2
) -> ScalingResult:
    """One process and two, each on its own fresh database, both up at once; wrk runs
    alternate between them (1, 2, 1, 2, …) so the machine's noise falls on both."""
    settings = {
        "workers_enabled": "false",
        "overload_mode": "queue",
        "queue_limit": ingest.QUEUE_LIMIT,
    }
    spread = ",".join(SPREAD_SKUS)
    with (
        servers.fresh_database(postgres_url, workdir) as one_url,
        servers.fresh_database(postgres_url, workdir) as two_url,
        api_processes(one_url, 1, workdir, **settings) as one,
        api_processes(two_url, 2, workdir, **settings) as two,
    ):
        for server in (one, two):
            for sku in (ingest.SKU, *SPREAD_SKUS):
                ingest.put_product(server.url, sku, ingest.STOCK)
            wrk.run(server.url, connections=connections, duration_s=ingest.WARMUP_S, sku=ingest.SKU)
        runs: dict[tuple[int, str], list[wrk.WrkResult]] = {}
        sampler = _Sampler(two.url)
        for _ in range(rounds):
            for skus in (ingest.SKU, spread):
                runs.setdefault((1, skus), []).append(
                    wrk.run(one.url, connections=connections, duration_s=duration_s, sku=skus)
                )
                with sampler:
                    runs.setdefault((2, skus), []).append(
                        wrk.run(two.url, connections=connections, duration_s=duration_s, sku=skus)
                    )
        converge_s = _converge_s(two.url, two_url)
        metrics = httpx.get(f"{two.url}/metrics", timeout=10).text
    p50, notices = _histogram_ms(metrics, 0.5)
    p99, _ = _histogram_ms(metrics, 0.99)
    staleness = Staleness(sampler.max_delay_s * 1000, p50, p99, notices, converge_s)
    return ScalingResult(
        one=runs[1, ingest.SKU],
        two=runs[2, ingest.SKU],
        staleness=staleness,
        one_spread=runs[1, spread],
        two_spread=runs[2, spread],
    )


def overload_runs(
    postgres_url: str, config: overload.OverloadConfig, *, workdir: Path
) -> list[overload.OverloadResult]:
    """Two API processes and two workers of C/2 slots each, per mode and multiple."""
    results = []
    for multiple in config.multiples:
        for mode in config.modes:
            settings = overload.serve_settings("", mode, config)
            settings.pop("database_url")
            settings.pop("capacity")
            with (
                servers.fresh_database(postgres_url, workdir) as database_url,
                api_processes(
                    database_url, 2, workdir, workers_enabled="false", **settings
                ) as server,
                worker_processes(
                    database_url,
                    2,
                    config.capacity // 2,
                    workdir,
                    fulfilment_delay=settings["fulfilment_delay"],
                ),
            ):
                _wait_for_capacity(server.url, config.capacity)
                results.append(
                    overload.measure(
                        server.url, database_url, None, workdir, mode, multiple, config
                    )
                )
    return results


def tables(
    result: ScalingResult,
    runs: list[overload.OverloadResult],
    config: overload.OverloadConfig,
    *,
    connections: int,
    duration_s: float,
) -> str:
    scaling_table = table(
        ["round", "SKUs", "API processes", "stored orders/s", "p50 / p99 ms", "statuses"],
        [
            [
                str(index + 1),
                str(skus),
                str(n),
                f"{r.rate_of(202):,.0f}",
                f"{r.p50_ms:.1f} / {r.p99_ms:.1f}",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(r.statuses.items())),
            ]
            for skus, ones, twos in (
                (1, result.one, result.two),
                (len(SPREAD_SKUS), result.one_spread, result.two_spread),
            )
            for index, pair in enumerate(zip(ones, twos, strict=True))
            for n, r in zip((1, 2), pair, strict=True)
        ],
    )
    s = result.staleness
    stale_table = table(
        ["measure", "value"],
        [
            ["longest notice delay seen by /capacity samples (ms)", f"{s.sampled_max_ms:.1f}"],
            [
                "notice delay p50 / p99 (histogram bucket bound, ms)",
                f"{s.histogram_p50_ms:g} / {s.histogram_p99_ms:g}",
            ],
            ["notices applied (both processes)", f"{s.notices:,}"],
            [
                "after the load: until the view counts the database's queue (s)",
                f"{s.converge_s:.2f}",
            ],
        ],
    )
    overload_table = overload_runs_table(runs)
    verdicts = [
        f"- two API processes over one, {label}: {ratio:.2f}, target >= 1.3: "
        f"{'met' if ratio >= 1.3 else 'NOT met'}"
        for label, ratio in (
            (f"orders spread over {len(SPREAD_SKUS)} SKUs", result.spread_ratio),
            ("every order for one SKU", result.ratio),
        )
        if ratio
    ]
    for r in runs:
        if r.of_limit is not None:
            verdicts.append(
                f"- fleet {r.mode} at {r.multiple:g}x: {r.of_limit:.3f} of the limit, "
                f"target >= 0.95: {'met' if r.of_limit >= 0.95 else 'NOT met'}"
            )
    return (
        f"## Fleet scaling on PostgreSQL: wrk, {connections} connections, {duration_s:g} s "
        f"per run, API-only processes, runs alternating\n\n{scaling_table}\n\n"
        f"## Fleet view staleness, during the two-process run\n\n{stale_table}\n\n"
        f"## Fleet overload: 2 API processes, 2 workers x {config.capacity // 2} slots, "
        f"fixed {config.delay_s:g} s (limit {config.limit_rate:g} orders/s), "
        f"{config.duration_s:g} s per run\n\n{overload_table}\n\n"
        "Targets:\n\n" + "\n".join(verdicts) + "\n"
    )
