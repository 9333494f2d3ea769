"""Fixtures: a real database per test (SQLite file; PostgreSQL when configured),
the app with its lifespan running, and an HTTP client speaking to it over ASGI."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from retail.config import Settings
from retail.runtime.clock import Clock, ManualClock
from retail.runtime.services import Services
from retail.web.app import create_app

POSTGRES_URL_ENV = "RETAIL_TEST_POSTGRES_URL"
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_URL_ENV) or None


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the settings they pass: no RETAIL_* from the shell, no .env."""
    for name in list(os.environ):
        if name.startswith("RETAIL_") and name != POSTGRES_URL_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _pg_dsn(url: str, database: str | None = None) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    if database is not None:
        dsn = dsn.rsplit("/", 1)[0] + "/" + database
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"
        return
    async with postgres_database() as url:
        yield url


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new PostgreSQL database for one test, dropped after it (skips when not configured)."""
    base = postgres_url()
    if base is None:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_URL_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1/test)"
        )
    name = f"retail_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_pg_dsn(base))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(_pg_dsn(base))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "fulfilment_delay": "0",
        "poll_interval_s": 0.02,
        "shutdown_timeout_s": 0.1,
        "capacity": 4,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    clock: Clock

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


StartApp = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_app(database_url: str) -> AsyncIterator[StartApp]:
    """`await start_app(capacity=1, ...)`: the app running on this test's database.

    Call it again to get a second instance on the same database (a restart);
    `await running.stop()` is done for you at the end of the test.
    """
    async with AsyncExitStack() as stack:

        async def start(*, clock: Clock | None = None, **overrides: Any) -> Running:
            settings = make_settings(database_url, **overrides)
            app = create_app(settings, clock=clock)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://retail.test"
            )
            await stack.enter_async_context(client)
            return Running(app, client, settings, clock or app.state.services.clock)

        yield start


@pytest.fixture
async def running(start_app: StartApp) -> Running:
    return await start_app()


@pytest.fixture
async def client(running: Running) -> httpx.AsyncClient:
    return running.client


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float = 10.0
) -> None:
    """Wait (in real time, for I/O only) until `check()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def settle(clock: ManualClock, running: Running, sleepers: int) -> None:
    """Wait until `sleepers` simulated sleeps are pending (work reached its next step)."""
    await eventually(lambda: clock.sleepers >= sleepers)


async def place(
    client: httpx.AsyncClient,
    sku: str = "MUG-1",
    quantity: int = 1,
    customer: str = "alice",
    **kwargs: Any,
) -> httpx.Response:
    return await client.post(
        "/orders",
        json={"customer_id": customer, "items": [{"sku": sku, "quantity": quantity}]},
        **kwargs,
    )


async def one_slot_taken(start_app: StartApp, clock: ManualClock, **settings: Any) -> Running:
    """The app with one slot and 10 s orders on `clock`, a first order holding the slot."""
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="10", **settings)
    assert (await place(running.client)).status_code == 202
    await quiescent(running)
    return running


async def order_status(client: httpx.AsyncClient, order_id: str) -> str:
    response = await client.get(f"/orders/{order_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def all_terminal(client: httpx.AsyncClient, ids: list[str]) -> bool:
    """Whether each of these orders is fulfilled, failed or cancelled."""
    for order_id in ids:
        if await order_status(client, order_id) not in {"fulfilled", "failed", "cancelled"}:
            return False
    return True


async def quiescent(running: Running) -> None:
    """Wait until every in-flight order sleeps on the clock and no free slot has work."""
    services = running.services
    clock = running.clock
    assert isinstance(clock, ManualClock)

    def check() -> bool:
        pool = services.pool
        busy = pool.in_flight
        return clock.sleepers == busy and (
            services.admission.queued == 0 or busy >= services.admission.limits.capacity
        )

    await eventually(check)


async def drive(
    running: Running,
    done: Callable[[], Awaitable[bool]],
    step_s: float = 0.1,
    max_steps: int = 10_000,
) -> None:
    """Advance virtual time in small steps, letting work settle each time, until `done()`."""
    clock = running.clock
    assert isinstance(clock, ManualClock)
    for _ in range(max_steps):
        await quiescent(running)
        if await done():
            return
        clock.advance(step_s)
    raise AssertionError("not done after driving the clock")
