"""Live views: an order's events as Server-Sent Events, the /ws feed, and the bound on
how many streams are open at once.

Streams need a server that really streams, so these run the app under uvicorn in the
test's own event loop (the services, clock and database are the test's), and talk to
it over a socket with httpx and a WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from retail.runtime.clock import ManualClock
from tests.conftest import (
    Running,
    StartApp,
    drive,
    eventually,
    order_status,
    place,
    quiescent,
)

SSE = {"Accept": "text/event-stream"}


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """The app (its lifespan already running) under uvicorn on a free port; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done())
        assert not task.done(), task
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads("\n".join(self.data))


@dataclass
class EventStream:
    """What one SSE response delivered: its messages and its keep-alive comments."""

    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    current: Message = field(default_factory=Message)

    def feed(self, line: str) -> None:
        """One line of the stream: a blank line ends the message being read."""
        if line == "":
            if self.current.data:
                self.messages.append(self.current)
            self.current = Message()
        elif line.startswith(":"):
            self.comments.append(line)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                self.current.id = value
            elif name == "event":
                self.current.event = value
            elif name == "data":
                self.current.data.append(value)


async def read_stream(response: httpx.Response, into: EventStream) -> None:
    async for line in response.aiter_lines():
        into.feed(line)
    into.ended = True


@asynccontextmanager
async def following(
    url: str, order_id: str, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[EventStream, asyncio.Task[None]]]:
    """An SSE request for the order's events, read in the background."""
    stream = EventStream()
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream(
            "GET", f"/orders/{order_id}/events", headers={**SSE, **(headers or {})}
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_stream(response, stream))
        try:
            yield stream, reader
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def history(running: Running, order_id: str) -> list[dict[str, Any]]:
    response = await running.client.get(f"/orders/{order_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    events: list[dict[str, Any]] = response.json()
    return events


def as_events(messages: list[Message]) -> list[dict[str, Any]]:
    for message in messages:
        body = message.json
        assert message.id == str(body["id"])
        assert message.event == body["kind"]
    return [message.json for message in messages]


def live_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("retail-ws")]


async def nothing_held(running: Running) -> None:
    """Every stream has given back its slot, its subscription and its tasks."""
    services = running.services
    await eventually(
        lambda: services.streams.open == 0 and services.bus.subscribers == 0 and not live_tasks()
    )


# --- SSE -------------------------------------------------------------------------------


async def test_sse_sends_the_history_then_each_event_live_until_the_order_ends(
    start_app: StartApp,
) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="6")
    placed = await place(running.client)
    order_id = placed.json()["id"]
    await quiescent(running)  # started: the first step sleeps on the clock
    so_far = await history(running, order_id)
    assert [e["kind"] for e in so_far] == ["created", "started", "step_started"]

    async with serve(running.app) as url, following(url, order_id) as (stream, reader):
        await eventually(lambda: len(stream.messages) == len(so_far))
        assert as_events(stream.messages) == so_far  # the history, before time moves on

        async def ended() -> bool:
            return await order_status(running.client, order_id) == "fulfilled"

        await drive(running, ended)
        async with asyncio.timeout(10):
            await reader  # the stream ends by itself after the terminal event
    assert stream.ended

    events = as_events(stream.messages)
    assert events == await history(running, order_id)  # every event, each once, in order
    assert events[-1]["kind"] == "fulfilled" and events[-1]["status"] == "fulfilled"
    assert len(events) > len(so_far) + 10  # the rest arrived live: each step's start and end
    await nothing_held(running)


async def test_sse_follows_an_order_fulfilled_by_another_process(start_app: StartApp) -> None:
    # The API process fulfils nothing; a second instance on the same database (its own
    # event bus, as a `retail worker` would have) does the work.
    api = await start_app(workers_enabled=False)
    await start_app()
    order_id = (await place(api.client)).json()["id"]
    response = await api.client.get(f"/orders/{order_id}/events", headers=SSE)
    assert response.status_code == 200
    messages = parse(response.text)
    events = as_events(messages)
    assert events[-1]["kind"] == "fulfilled"
    assert events == await history(api, order_id)


def parse(text: str) -> list[Message]:
    stream = EventStream()
    for line in [*text.splitlines(), ""]:
        stream.feed(line)
    return stream.messages


async def test_sse_resumes_after_last_event_id(running: Running) -> None:
    client = running.client
    placed = await place(client, headers={"Prefer": "wait=10"})
    assert placed.status_code == 201
    order_id = placed.json()["id"]
    events = await history(running, order_id)

    resumed = await client.get(
        f"/orders/{order_id}/events", headers={**SSE, "Last-Event-ID": str(events[3]["id"])}
    )
    assert resumed.status_code == 200
    assert as_events(parse(resumed.text)) == events[4:]

    # After the terminal event there is nothing more: 204 stops an EventSource reconnecting.
    done = await client.get(
        f"/orders/{order_id}/events", headers={**SSE, "Last-Event-ID": str(events[-1]["id"])}
    )
    assert done.status_code == 204
    assert done.content == b""

    bad = await client.get(f"/orders/{order_id}/events", headers={**SSE, "Last-Event-ID": "x"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"


async def test_sse_resumes_mid_flight_without_repeating_anything(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="6")
    order_id = (await place(running.client)).json()["id"]
    await quiescent(running)
    seen = await history(running, order_id)
    resume = {"Last-Event-ID": str(seen[-1]["id"])}  # nothing newer yet

    async with serve(running.app) as url, following(url, order_id, resume) as (stream, reader):

        async def ended() -> bool:
            return await order_status(running.client, order_id) == "fulfilled"

        await drive(running, ended)
        async with asyncio.timeout(10):
            await reader
    assert as_events(stream.messages) == (await history(running, order_id))[len(seen) :]


async def test_sse_for_an_unknown_order_is_a_404_problem(running: Running) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    response = await running.client.get(f"/orders/{unknown}/events", headers=SSE)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/order-not-found"
    assert running.services.streams.open == 0
    assert running.services.bus.subscribers == 0


@pytest.mark.parametrize("accept", [None, "application/json", "text/event-stream;q=0, */*"])
async def test_without_asking_for_a_stream_events_are_json(
    running: Running, accept: str | None
) -> None:
    order_id = (await place(running.client, headers={"Prefer": "wait=10"})).json()["id"]
    headers = {"Accept": accept} if accept else {}
    response = await running.client.get(f"/orders/{order_id}/events", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert [e["kind"] for e in response.json()][-1] == "fulfilled"


async def test_sse_keeps_an_idle_stream_alive_and_frees_it_on_disconnect(
    start_app: StartApp,
) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, capacity=1, fulfilment_delay="10", keepalive_s=0.05)
    order_id = (await place(running.client)).json()["id"]
    await quiescent(running)
    async with serve(running.app) as url:
        async with following(url, order_id) as (stream, _):
            await eventually(lambda: len(stream.comments) >= 2)
            assert running.services.streams.open == 1
            assert not stream.ended
        await nothing_held(running)  # the client hung up mid-stream


# --- /ws --------------------------------------------------------------------------------


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def test_ws_sends_capacity_snapshots_and_every_order_transition(
    start_app: StartApp,
) -> None:
    running = await start_app(capacity=3, snapshot_interval_s=0.05)
    async with serve(running.app) as url, connect(ws_url(url)) as ws:
        first = await receive(ws)
        assert first["type"] == "capacity"
        assert first["mode"] == "queue" and first["capacity"] == 3
        assert set(first["counters"]) >= {"accepted", "rejected"}

        order_id = (await place(running.client)).json()["id"]
        transitions: list[dict[str, Any]] = []
        snapshots = []
        while not transitions or transitions[-1]["kind"] != "fulfilled":
            message = await receive(ws)
            if message["type"] == "capacity":
                snapshots.append(message)
            else:
                assert message["type"] == "event"
                assert message.pop("order_id") == order_id
                del message["type"]
                transitions.append(message)
        assert transitions == await history(running, order_id)
        while len(snapshots) < 2:
            message = await receive(ws)
            if message["type"] == "capacity":
                snapshots.append(message)
        assert snapshots[-1]["counters"]["accepted"] == 1
        assert running.services.streams.open == 1
    await nothing_held(running)


async def test_streams_over_the_limit_are_refused(start_app: StartApp) -> None:
    # A 60 s order: its event stream stays open for the whole test.
    running = await start_app(max_streams=2, snapshot_interval_s=0.05, fulfilment_delay="60")
    order_id = (await place(running.client)).json()["id"]
    async with serve(running.app) as url:
        async with connect(ws_url(url)) as first, following(url, order_id) as (stream, _):
            assert (await receive(first))["type"] == "capacity"
            await eventually(lambda: len(stream.messages) >= 1)
            assert running.services.streams.open == 2

            async with connect(ws_url(url)) as refused:
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(refused)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013  # try again later

            response = await running.client.get(f"/orders/{order_id}/events", headers=SSE)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["type"] == "/problems/too-many-streams"

            # JSON reads do not count against the limit.
            assert (await running.client.get(f"/orders/{order_id}/events")).status_code == 200
        await nothing_held(running)

        async with connect(ws_url(url)) as again:
            assert (await receive(again))["type"] == "capacity"
    await nothing_held(running)


async def test_a_ws_client_that_vanishes_leaves_nothing_behind(start_app: StartApp) -> None:
    running = await start_app(snapshot_interval_s=0.02)
    async with serve(running.app) as url:
        for _ in range(3):
            ws = await connect(ws_url(url))
            await receive(ws)
            assert live_tasks()
            ws.transport.abort()  # no closing handshake: the connection just drops
            await nothing_held(running)
            # Orders still flow, and no stream is left to offer their events to.
            assert (await place(running.client)).status_code == 202


# --- the dashboard and the documentation ------------------------------------------------


async def test_the_dashboard_is_served_from_the_package_with_nothing_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in page.text  # the API docs stay one click away
    assets = {"/static/dashboard.js": "javascript", "/static/dashboard.css": "text/css"}
    for path, media_type in assets.items():
        assert f'"{path}"' in page.text
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert media_type in asset.headers["content-type"]
        assert re.findall(r"[a-z]+://[^\"']", asset.text) == [], f"{path} names another host"
    assert re.findall(r"[a-z]+://", page.text) == []
    assert (await client.get("/docs")).status_code == 200
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


async def test_the_event_stream_is_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/orders/{order_id}/events"]["get"]
    ok = operation["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "text/event-stream"}
    assert "id: " in ok["text/event-stream"]["example"]
    assert {"204", "404", "503"} <= set(operation["responses"])
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"Last-Event-ID"}
