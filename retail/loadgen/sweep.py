"""`retail load --sweep`: goodput and p99 against offered load, in every overload mode.

The capacity rate is what the service can fulfil per second in full:
`capacity / full_service_s`, both read from `GET /capacity`. For each mode (switched
with `PUT /admin/capacity`) and each factor, the sweep waits until the service is idle,
offers `factor x capacity rate` orders per second for one short step, follows every
accepted order to its end and keeps the step's summary. At the end it puts back the
mode it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.table import Table

from retail.loadgen.report import Summary, ms, summarize
from retail.loadgen.runner import LiveCounts, LoadConfig, run_load
from retail.loadgen.schedule import Schedule

MODES = ("queue", "reject", "degrade")
DEFAULT_FACTORS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
DEFAULT_STEP_S = 5.0
DEFAULT_SETTLE_TIMEOUT_S = 60.0
SETTLE_POLL_S = 0.1
SCHEMA = "retail.loadgen.sweep/1"


class SweepError(Exception):
    """The sweep cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class SweepConfig:
    base: LoadConfig  # everything but the schedule, which each step sets
    admin_token: str
    modes: tuple[str, ...] = MODES
    factors: tuple[float, ...] = DEFAULT_FACTORS
    step_s: float = DEFAULT_STEP_S
    settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"modes must be among {', '.join(MODES)}; got {unknown or 'none'}")
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError("factors must be positive")
        if self.step_s <= 0:
            raise ValueError("a step must last more than 0 s")


@dataclass(frozen=True)
class SweepPoint:
    mode: str
    factor: float
    rate: float
    summary: Summary

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "factor": self.factor,
            "rate": self.rate,
            "summary": self.summary.to_json(),
        }


@dataclass
class Sweep:
    url: str
    capacity: int
    full_service_s: float
    capacity_rate: float
    step_s: float
    points: list[SweepPoint]
    restored_mode: str

    def to_json(self) -> dict[str, Any]:
        """`{"schema", "url", "capacity", "full_service_s", "capacity_rate", "step_s",
        "restored_mode", "points": [{"mode", "factor", "rate", "summary"}]}`, where
        `summary` is the load report's summary (see `retail.loadgen.report`)."""
        return {
            "schema": SCHEMA,
            "url": self.url,
            "capacity": self.capacity,
            "full_service_s": self.full_service_s,
            "capacity_rate": self.capacity_rate,
            "step_s": self.step_s,
            "restored_mode": self.restored_mode,
            "points": [point.to_json() for point in self.points],
        }


StepStarted = Callable[[str, float, float, LiveCounts], None]


async def _capacity(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/capacity")
    if response.status_code != 200:
        raise SweepError(f"GET /capacity answered {response.status_code}: {response.text[:200]}")
    data: dict[str, Any] = response.json()
    return data


async def set_mode(client: httpx.AsyncClient, token: str, mode: str) -> None:
    response = await client.put(
        "/admin/capacity", json={"mode": mode}, headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code in (401, 403):
        raise SweepError(
            f"PUT /admin/capacity answered {response.status_code}: pass the server's admin "
            "token with --admin-token or RETAIL_ADMIN_TOKEN"
        )
    if response.status_code != 200:
        raise SweepError(
            f"PUT /admin/capacity answered {response.status_code}: {response.text[:200]}"
        )


async def settle(client: httpx.AsyncClient, timeout_s: float) -> None:
    """Wait until nothing is in flight or queued, so steps do not leak into each other."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        data = await _capacity(client)
        if data["in_flight"] == 0 and data["queued"] == 0:
            return
        if loop.time() > deadline:
            raise SweepError(
                f"the service is still busy after {timeout_s:g} s ({data['in_flight']} in "
                f"flight, {data['queued']} queued); is someone else sending orders?"
            )
        await asyncio.sleep(SETTLE_POLL_S)


async def run_sweep(
    config: SweepConfig,
    *,
    client: httpx.AsyncClient,
    on_step: StepStarted | None = None,
) -> Sweep:
    first = await _capacity(client)
    capacity, full_service_s = int(first["capacity"]), float(first["full_service_s"])
    if full_service_s <= 0:
        raise SweepError(
            "the service fulfils orders in no time (full_service_s is 0), so there is no "
            "capacity rate to sweep around: start it with a fulfilment delay"
        )
    capacity_rate = capacity / full_service_s
    original_mode = str(first["mode"])
    # One customer for every point: a point does not compete for a fair share with the last.
    customer = config.base.customer or f"sweep-{uuid.uuid4().hex[:8]}"
    points: list[SweepPoint] = []
    try:
        for mode in config.modes:
            await set_mode(client, config.admin_token, mode)
            for factor in config.factors:
                await settle(client, config.settle_timeout_s)
                rate = factor * capacity_rate
                step = dataclasses.replace(
                    config.base,
                    schedule=Schedule.constant(rate, config.step_s),
                    follow=True,
                    customer=customer,
                )
                live = LiveCounts()
                if on_step is not None:
                    on_step(mode, factor, rate, live)
                run = await run_load(step, client=client, live=live)
                points.append(SweepPoint(mode, factor, rate, summarize(run)))
    except BaseException:
        with contextlib.suppress(Exception):  # keep the first error, not the restore's
            await set_mode(client, config.admin_token, original_mode)
        raise
    await set_mode(client, config.admin_token, original_mode)
    return Sweep(
        url=str(client.base_url),
        capacity=capacity,
        full_service_s=full_service_s,
        capacity_rate=capacity_rate,
        step_s=config.step_s,
        points=points,
        restored_mode=original_mode,
    )


def sweep_table(sweep: Sweep) -> Table:
    table = Table(
        title=(
            f"retail load --sweep {sweep.url}: capacity {sweep.capacity} x 1/"
            f"{sweep.full_service_s:g} s = {sweep.capacity_rate:.2f} orders/s, "
            f"{sweep.step_s:g} s per step"
        ),
        title_justify="left",
        caption="p99 done: from due to fulfilled, for the step's fulfilled orders"
        + "".join(
            f"\n{point.mode} {point.factor:g}x: {point.summary.goodput_note}"
            for point in sweep.points
            if point.summary.goodput_note
        ),
        caption_justify="left",
    )
    for name in (
        "mode",
        "load",
        "offered/s",
        "accepted",
        "degraded",
        "refused",
        "goodput/s",
        "p99 answer ms",
        "p99 done ms",
    ):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for point in sweep.points:
        s = point.summary
        table.add_row(
            point.mode,
            f"{point.factor:g}x",
            f"{s.offered_rate:.2f}",
            str(s.accepted),
            str(s.accepted_degraded),
            str(s.refused),
            "-" if s.goodput_per_s is None else f"{s.goodput_per_s:.2f}",
            ms(s.latency_accepted.p99_s),
            ms(s.fulfilment.p99_s),
        )
    return table
