"""`retail demo`: synchronous against asynchronous fulfilment, with three customers.

Alice, Bob and Charlie each place one order at the same moment. With capacity 1 the
service fulfils one order at a time, so the second and third wait their turn; with
capacity 3 all three are fulfilled at once. The demo starts its own service (`python -m
retail serve` as a subprocess, on a free 127.0.0.1 port, with a temporary SQLite
database and a fixed fulfilment delay), plays one round per capacity and shows who waited how long.

Each customer asks to wait for the final order (`Prefer: wait=N`, RFC 7240) and falls
back to polling the order's `Location` if it is not done by then.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from retail.loadgen.process import ServerFailed, free_port, serving
from retail.loadgen.runner import TERMINAL_STATUSES, parse_retry_after
from retail.loadgen.timeline import Span, elapsed, span_of

CUSTOMERS = ("Alice", "Bob", "Charlie")
DEFAULT_CAPACITIES = (1, 3)
DEFAULT_FULFILMENT_DELAY = "2"
DEFAULT_SKU = "MUG-1"
PREFER_WAIT_S = 60
ROUND_TIMEOUT_S = 300.0
SERVER_START_TIMEOUT_S = 90.0
SERVER_STOP_TIMEOUT_S = 10.0
BAR_WIDTH = 24


class DemoError(Exception):
    """The demo could not run; the message says why."""


@dataclass(frozen=True)
class CustomerOrder:
    name: str
    placed_at: float  # epoch: the moment everyone placed their order
    order_id: str | None
    status: str | None  # final order status, or the HTTP problem when refused
    service_level: str | None
    span: Span | None

    def _at(self, moment: float | None) -> float | None:
        return elapsed(self.placed_at, moment)

    @property
    def started_s(self) -> float | None:
        return self._at(self.span.started if self.span else None)

    @property
    def finished_s(self) -> float | None:
        return self._at(self.span.finished if self.span else None)

    @property
    def waited_s(self) -> float | None:
        """From placing the order to its fulfilment starting."""
        return self.started_s

    @property
    def work_s(self) -> float | None:
        return self.span.work_s if self.span else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "order_id": self.order_id,
            "status": self.status,
            "service_level": self.service_level,
            "placed_at": self.placed_at,
            "created_at": self.span.created if self.span else None,
            "started_at": self.span.started if self.span else None,
            "finished_at": self.span.finished if self.span else None,
            "waited_s": self.waited_s,
            "work_s": self.work_s,
            "finished_s": self.finished_s,
        }


@dataclass(frozen=True)
class DemoRound:
    capacity: int
    customers: tuple[CustomerOrder, ...]

    @property
    def title(self) -> str:
        if self.capacity == 1:
            return "capacity 1: one order at a time (synchronous)"
        return f"capacity {self.capacity}: up to {self.capacity} at once (asynchronous)"

    @property
    def last_finished_s(self) -> float:
        return max((c.finished_s or 0.0 for c in self.customers), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "customers": [c.to_json() for c in self.customers]}


# --- the service, in its own process ---------------------------------------------------


@contextmanager
def serve_subprocess(
    settings: dict[str, str],
    *,
    directory: Path,
    start_timeout_s: float = SERVER_START_TIMEOUT_S,
) -> Iterator[str]:
    """Run `python -m retail serve` with these `RETAIL_*` settings on a free 127.0.0.1
    port, in `directory` (so no `.env` of the caller is read); yields its base URL once
    `/readyz` answers 200. The caller's own `RETAIL_*` variables are not passed on."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")}
    env.update({f"RETAIL_{name.upper()}": value for name, value in settings.items()})
    env.update(RETAIL_HOST="127.0.0.1", RETAIL_PORT=str(port))
    try:
        with serving(
            [sys.executable, "-m", "retail", "serve", "--no-access-log"],
            port=port,
            env=env,
            cwd=directory,
            log=directory / "server.log",
            ready="/readyz",
            start_timeout_s=start_timeout_s,
            stop_timeout_s=SERVER_STOP_TIMEOUT_S,
        ) as server:
            yield server.url
    except ServerFailed as failure:
        raise DemoError(f"the service {failure}") from None


# --- one round ---------------------------------------------------------------------------


async def _finish(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    """The order's final representation: from the response, or by polling `Location`."""
    order: dict[str, Any] = response.json()
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while order["status"] not in TERMINAL_STATUSES and time.monotonic() < deadline:
        wait = parse_retry_after(response.headers.get("retry-after")) or 1.0
        await asyncio.sleep(wait)
        response = await client.get(f"/orders/{order['id']}")
        response.raise_for_status()
        order = response.json()
    return order


async def _customer(
    client: httpx.AsyncClient, name: str, placed_at: float, wait_s: int
) -> CustomerOrder:
    response = await client.post(
        "/orders",
        json={"customer_id": name, "items": [{"sku": DEFAULT_SKU, "quantity": 1}]},
        headers={"Prefer": f"wait={wait_s}"},
    )
    if not response.is_success:
        return CustomerOrder(name, placed_at, None, f"refused {response.status_code}", None, None)
    order = await _finish(client, response)
    events = await client.get(f"/orders/{order['id']}/events")
    events.raise_for_status()
    span = span_of(
        ((event["kind"], _epoch(event["at"])) for event in events.json()),
        outcome=order["status"] if order["status"] in TERMINAL_STATUSES else None,
    )
    return CustomerOrder(
        name, placed_at, order["id"], order["status"], order["service_level"], span
    )


def _epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


async def play_round(
    client: httpx.AsyncClient,
    *,
    capacity: int,
    admin_token: str,
    customers: Sequence[str] = CUSTOMERS,
    wait_s: int = PREFER_WAIT_S,
) -> DemoRound:
    """Set the capacity, then every customer orders at once; their timelines."""
    response = await client.put(
        "/admin/capacity",
        json={"capacity": capacity},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if response.status_code != 200:
        raise DemoError(f"PUT /admin/capacity answered {response.status_code}: {response.text}")
    placed_at = time.time()
    orders = await asyncio.gather(
        *(_customer(client, name, placed_at, wait_s) for name in customers)
    )
    return DemoRound(capacity, tuple(orders))


async def play(
    url: str, *, capacities: Sequence[int], admin_token: str, customers: Sequence[str]
) -> list[DemoRound]:
    timeout = httpx.Timeout(PREFER_WAIT_S + 30.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        return [
            await play_round(
                client, capacity=capacity, admin_token=admin_token, customers=customers
            )
            for capacity in capacities
        ]


def run_demo(
    *,
    capacities: Sequence[int] = DEFAULT_CAPACITIES,
    fulfilment_delay: str = DEFAULT_FULFILMENT_DELAY,
    customers: Sequence[str] = CUSTOMERS,
) -> list[DemoRound]:
    """Start a private service, play one round per capacity, stop the service."""
    if not capacities or any(c < 1 for c in capacities):
        raise DemoError("capacities must be whole numbers of at least 1")
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="retail-demo-") as directory:
        settings = {
            "database_url": f"sqlite+aiosqlite:///{Path(directory) / 'demo.db'}",
            "admin_token": token,
            "fulfilment_delay": fulfilment_delay,
            "capacity": str(max(capacities)),
            "overload_mode": "queue",
            "queue_limit": str(max(100, len(customers))),
            "workers_enabled": "true",
            "migrate_on_start": "true",
            "seed_demo_catalogue": "true",
            "shutdown_timeout_s": "1",
            "log_level": "warning",
        }
        with serve_subprocess(settings, directory=Path(directory)) as url:
            return asyncio.run(
                play(url, capacities=capacities, admin_token=token, customers=customers)
            )


# --- showing it -----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _bar(order: CustomerOrder, scale_s: float) -> str:
    if order.started_s is None or order.finished_s is None or scale_s <= 0:
        return ""
    per_char = scale_s / BAR_WIDTH
    waited = round(order.started_s / per_char)
    worked = max(1, round(order.finished_s / per_char) - waited)
    return "[dim]" + "·" * waited + "[/dim][green]" + "█" * worked + "[/green]"


def round_table(round_: DemoRound, scale_s: float) -> Table:
    table = Table(box=None, padding=(0, 1))
    table.add_column("customer")
    table.add_column("waited", justify="right")
    table.add_column("took", justify="right")
    table.add_column("done", justify="right")
    table.add_column(f"0 → {scale_s:.1f} s", no_wrap=True, min_width=BAR_WIDTH)
    for order in round_.customers:
        table.add_row(
            order.name,
            _seconds(order.waited_s),
            _seconds(order.work_s),
            _seconds(order.finished_s),
            _bar(order, scale_s) if order.span else f"[red]{order.status}[/red]",
        )
    return table


def conclusion(round_: DemoRound) -> str:
    waits = [(o.waited_s, o.name) for o in round_.customers if o.waited_s is not None]
    if not waits:
        return f"capacity {round_.capacity}: no order was fulfilled"
    longest, name = max(waits)
    if longest < 0.5 * max((o.work_s or 0.0) for o in round_.customers):
        return (
            f"capacity {round_.capacity}: nobody waited; all done after "
            f"{round_.last_finished_s:.1f} s"
        )
    return (
        f"capacity {round_.capacity}: {name} waited {longest:.1f} s before fulfilment started; "
        f"the last order was done after {round_.last_finished_s:.1f} s"
    )


def render_demo(rounds: Sequence[DemoRound]) -> RenderableType:
    scale = max((r.last_finished_s for r in rounds), default=0.0)
    scale = math.ceil(scale * 10) / 10 or 1.0
    panels = [Panel(round_table(r, scale), title=r.title, expand=False) for r in rounds]
    lines = [conclusion(r) for r in rounds]
    legend = (
        "[dim]·[/dim] waiting for a slot   [green]█[/green] being fulfilled   "
        "waited: placed → started, took: started → done, done: placed → done"
    )
    return Group(Columns(panels), legend, *lines)
