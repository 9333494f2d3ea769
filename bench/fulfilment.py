"""Fulfilment at the pace its slots allow, while orders keep arriving.

A real server (`retail serve`, one process) with capacity 64 and 0.2 s orders can
fulfil 320 orders/s. Offered 250 orders/s open loop (Poisson, `bench.openloop`)
for `duration_s`, it should fulfil them as they come (>= 0.95 of the offered rate,
counted as `bench.overload` counts: finishes inside the window) while still
answering each `202` quickly (p99 under 50 ms from the order's due time). The same
run on PostgreSQL with `postgres_url`. And the refusal tail while fulfilment writes
at full rate: capacity 8, 0.5 s orders, reject mode at 4x the slots' rate (refusal
p99 <= 5 ms). Each run is `bench.overload.run_one` with these settings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import overload

FULFILLED_TARGET = 0.95  # of the offered rate
ACCEPT_P99_TARGET_MS = 50.0
REFUSAL_P99_TARGET_MS = 5.0


@dataclass(frozen=True)
class FulfilmentConfig:
    capacity: int = 64
    delay_s: float = 0.2
    rate: float = 250.0  # offered orders/s
    duration_s: float = 20.0
    refusal_capacity: int = 8
    refusal_delay_s: float = 0.5
    refusal_multiple: float = 4.0


@dataclass(frozen=True)
class FulfilmentResult:
    backend: str
    run: overload.OverloadResult

    @property
    def offered_rate(self) -> float:
        """Orders actually sent per second (the Poisson draw, not the nominal rate)."""
        return self.run.sent / self.run.duration_s

    @property
    def of_offered(self) -> float:
        return self.run.fulfilled_rate / self.offered_rate if self.run.sent else 0.0

    @property
    def ok(self) -> bool:
        accept = self.run.accept_ms
        return (
            self.of_offered >= FULFILLED_TARGET
            and accept is not None
            and accept[1] <= ACCEPT_P99_TARGET_MS
            and self.run.errors == 0
        )


def run(
    config: FulfilmentConfig | None = None,
    *,
    postgres_url: str | None = None,
    workdir: Path | None = None,
) -> tuple[list[FulfilmentResult], overload.OverloadResult]:
    """The SQLite run (and the PostgreSQL one), then the refusal run on SQLite."""
    config = config or FulfilmentConfig()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retail-bench-"))
    slots = overload.OverloadConfig(
        capacity=config.capacity, delay_s=config.delay_s, duration_s=config.duration_s
    )
    multiple = config.rate / slots.limit_rate
    urls = [None, postgres_url] if postgres_url else [None]
    results = [
        FulfilmentResult(
            "PostgreSQL" if url else "SQLite",
            overload.run_one(workdir, "queue", multiple, slots, postgres_url=url),
        )
        for url in urls
    ]
    refusing = overload.OverloadConfig(
        capacity=config.refusal_capacity,
        delay_s=config.refusal_delay_s,
        duration_s=config.duration_s,
    )
    refusals = overload.run_one(workdir, "reject", config.refusal_multiple, refusing)
    return results, refusals
