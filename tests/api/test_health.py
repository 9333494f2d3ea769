"""`/healthz` and `/readyz`: ready only while orders can be taken, and always a prompt answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from retail.store.sql.engine import Database
from retail.store.sql.migrations import migrate, schema_status
from retail.web.app import create_app
from tests.conftest import StartApp, eventually, make_settings, place


async def not_ready_because(client: httpx.AsyncClient) -> str:
    response = await client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/not-ready"
    detail: str = problem["detail"]
    return detail


def delete_sqlite_files(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()


def replace_with_a_copy(path: Path) -> None:
    """What a restore from a backup does: another file now has the name."""
    replacement = path.with_suffix(".new")
    shutil.copyfile(path, replacement)
    os.replace(replacement, path)


async def test_ready_when_everything_is_in_place(start_app: StartApp) -> None:
    running = await start_app()
    assert (await running.client.get("/healthz")).json() == {"status": "ok"}
    response = await running.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "fulfilment": "this process"}


async def test_an_api_only_server_is_ready_without_fulfilling(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    response = await running.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "fulfilment": "other processes (API only)"}
    # It takes orders: they wait for a `retail worker`.
    placed = await place(running.client)
    assert placed.status_code == 202
    assert (await running.client.get(placed.headers["location"])).json()["status"] == "queued"


async def test_not_ready_when_the_database_is_gone(start_app: StartApp, database_url: str) -> None:
    running = await start_app()
    assert (await running.client.get("/readyz")).status_code == 200
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # Open connections keep working on a deleted file: what they write would be lost.
        delete_sqlite_files(Path(str(url.database)))
        assert "is gone" in await not_ready_because(running.client)
    else:
        admin = await asyncpg.connect(
            str(url.set(drivername="postgresql", database="postgres").render_as_string(False))
        )
        try:
            await admin.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
        finally:
            await admin.close()
        assert "database unreachable" in await not_ready_because(running.client)


async def test_not_ready_when_the_sqlite_file_is_replaced(
    start_app: StartApp, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite file")
    running = await start_app()
    replace_with_a_copy(Path(str(make_url(database_url).database)))
    assert "was replaced" in await not_ready_because(running.client)


async def test_not_ready_while_the_schema_is_behind(start_app: StartApp, database_url: str) -> None:
    running = await start_app()
    db = Database(database_url)
    try:
        _, head = await schema_status(db.writer)
        await migrate(db.writer, "base", downgrade=True)  # `retail db downgrade base`
        detail = await not_ready_because(running.client)
        assert f"schema at None, code expects {head}" in detail
        assert "retail db upgrade" in detail
        await migrate(db.writer, "head")  # `retail db upgrade`
    finally:
        await db.dispose()
    assert (await running.client.get("/readyz")).status_code == 200


async def test_not_ready_once_the_workers_stop(start_app: StartApp) -> None:
    running = await start_app()
    await running.services.pool.stop()  # what shutdown does first
    assert "worker pool is not running" in await not_ready_because(running.client)


class Relay:
    """A TCP relay to PostgreSQL whose traffic can stop without closing anything:
    to the service, the network has gone silent."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[tuple[Relay, str]]:
    """A relay in front of this test's PostgreSQL database, and the URL through it."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("a network between the service and PostgreSQL")
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    port = await relay.start()
    try:
        yield relay, url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        relay.flowing.set()
        await relay.close()


async def test_readyz_answers_in_time_when_the_database_goes_silent(
    relay: tuple[Relay, str],
) -> None:
    network, url = relay
    app = create_app(make_settings(url, ready_timeout_s=0.2))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://retail.test") as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        network.flowing.clear()
        detail = await not_ready_because(client)
        assert detail.startswith("database did not answer within 0.2 s")
        # Probes keep answering (sharing one check) while the database stays silent.
        answers = await asyncio.gather(*(not_ready_because(client) for _ in range(5)))
        assert answers == [detail] * 5
        # A scrape answers too, with what the process itself knows.
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert "retail_orders_in_flight 0.0" in scrape.text
        network.flowing.set()

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready)
