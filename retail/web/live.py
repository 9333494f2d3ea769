"""Live views: an order's events as Server-Sent Events, and the `/ws` feed.

Both read the in-process `EventBus`, and both stay true when another process
(`retail worker`) does the fulfilling: the database is the source of truth, the
bus only says when to look. An SSE stream subscribes before it reads the history,
then re-reads the events after the last one it sent whenever a notice arrives or
`poll_interval_s` passes without one, so nothing falls between history and live
and nothing is sent twice.

Every open stream holds one of `max_streams` slots (`retail.runtime.streams`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import anyio
from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from retail.core.types import OrderStatus
from retail.runtime.bus import OrderNotice, Subscription
from retail.runtime.services import Services
from retail.runtime.streams import TooManyStreams
from retail.store.sql import orders as order_repo
from retail.web.health import capacity_snapshot
from retail.web.schemas import OrderEventRead
from retail.web.security import origin_allowed

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
WS_SEND_TIMEOUT_S = 10.0  # a client that takes longer to accept one message is dropped
WS_TRY_AGAIN_LATER = 1013
WS_POLICY_VIOLATION = 1008
SHUTDOWN_GRACE_S = 2.0

router = APIRouter()


def wants_event_stream(accept: str | None) -> bool:
    """Whether `Accept` asks for an event stream (and so not for JSON)."""
    if not accept:
        return False
    for part in accept.split(","):
        media_type, *params = (piece.strip().lower() for piece in part.split(";"))
        if media_type == EVENT_STREAM and "q=0" not in params:
            return True
    return False


# --- SSE: one order's events ------------------------------------------------------------


class OrderEventStream(EventSourceResponse):
    """The response owns its slot and subscription and gives them back when it ends,
    however it ends: the order finished, the client hung up, or the server stopped."""

    def __init__(
        self,
        content: AsyncIterator[ServerSentEvent],
        *,
        held: ExitStack,
        ping: float,
        shutdown: anyio.Event,
    ) -> None:
        # On server shutdown `shutdown` is set and the stream ends cleanly (a client
        # reconnects with Last-Event-ID); one that has not ended after the grace
        # period is cancelled.
        super().__init__(
            content, ping=ping, shutdown_event=shutdown, shutdown_grace_period=SHUTDOWN_GRACE_S
        )
        self._held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._held.close()


async def _read_after(
    services: Services, order_id: uuid.UUID, after_id: int
) -> tuple[list[OrderEventRead], bool]:
    """The events after `after_id`, oldest first, and whether the order has ended.

    The status is read before the events: an order seen terminal has all its events
    stored, so its last event is among those read.
    """
    async with services.db.read() as session:
        order = await order_repo.get_order(session=session, order_id=order_id)
        ended = OrderStatus(order.status).is_terminal
        rows = await order_repo.list_events(session=session, order_id=order_id, after_id=after_id)
        events = [OrderEventRead.model_validate(row, from_attributes=True) for row in rows]
    return events, ended or any(event.status.is_terminal for event in events)


def _message(event: OrderEventRead) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=event.kind, id=str(event.id))


async def _woken(
    notices: asyncio.Queue[OrderNotice], shutdown: anyio.Event, timeout_s: float
) -> None:
    """Return when a notice arrives (taking every waiting one), the server shuts down, or
    `timeout_s` passes."""
    waits = {asyncio.ensure_future(notices.get()), asyncio.ensure_future(shutdown.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    while not notices.empty():
        notices.get_nowait()


async def _follow(
    services: Services,
    order_id: uuid.UUID,
    subscription: Subscription,
    after_id: int,
    events: list[OrderEventRead],
    ended: bool,
    shutdown: anyio.Event,
) -> AsyncIterator[ServerSentEvent]:
    last_id = after_id
    while True:
        for event in events:
            last_id = event.id
            yield _message(event)
        if ended:
            return
        await _woken(subscription.queue, shutdown, services.settings.poll_interval_s)
        if shutdown.is_set():
            return
        events, ended = await _read_after(services, order_id, last_id)


async def order_event_stream(
    services: Services, order_id: uuid.UUID, last_event_id: int | None
) -> Response:
    """The order's events after `last_event_id` as SSE, ending with its terminal event.

    Raises `TooManyStreams` (503) when every slot is taken and `OrderNotFound` (404)
    before anything is streamed. A client resuming after the terminal event gets
    `204 No Content`, which tells an `EventSource` not to reconnect.
    """
    after_id = last_event_id or 0
    held = ExitStack()
    try:
        held.enter_context(services.streams.hold())
        # Subscribed before the history is read: an event committed in between is
        # seen in one or the other.
        subscription = held.enter_context(services.bus.subscribe(order_id))
        events, ended = await _read_after(services, order_id, after_id)
    except BaseException:
        held.close()
        raise
    if ended and not events and last_event_id is not None:
        held.close()
        return Response(status_code=204)
    shutdown = anyio.Event()
    stream = _follow(services, order_id, subscription, after_id, events, ended, shutdown)
    return OrderEventStream(
        stream, held=held, ping=services.settings.keepalive_s, shutdown=shutdown
    )


SSE_EXAMPLE = (
    "id: 41\n"
    "event: created\n"
    'data: {"id":41,"kind":"created","status":"queued","step":null,'
    '"at":"2026-11-25T10:00:00Z","detail":null}\n\n'
    "id: 42\n"
    "event: started\n"
    'data: {"id":42,"kind":"started","status":"processing","step":null,'
    '"at":"2026-11-25T10:00:00.5Z","detail":null}\n\n'
    ": ping - 2026-11-25 10:00:15+00:00\n\n"
)


# --- /ws: capacity snapshots and every order's transitions --------------------------------


def _snapshot(services: Services) -> dict[str, Any]:
    return {
        "type": "capacity",
        "at": services.clock.now().isoformat(),
        **capacity_snapshot(services).model_dump(mode="json"),
    }


def _transition(notice: OrderNotice) -> dict[str, Any]:
    event = OrderEventRead(
        id=notice.event_id,
        kind=notice.kind,
        status=notice.status,
        step=notice.step,
        at=notice.at,
        detail=notice.detail,
    )
    return {"type": "event", "order_id": str(notice.order_id), **event.model_dump(mode="json")}


async def _send(websocket: WebSocket, message: dict[str, Any]) -> None:
    async with asyncio.timeout(WS_SEND_TIMEOUT_S):
        await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def _send_loop(websocket: WebSocket, services: Services, subscription: Subscription) -> None:
    """A snapshot every `snapshot_interval_s` (the first at once), and every transition.

    A client slower than the transitions loses the oldest ones (the subscription's
    queue is bounded); snapshots are made when sent, so they never pile up.
    """
    loop = asyncio.get_running_loop()
    interval = services.settings.snapshot_interval_s
    next_snapshot = loop.time()
    while True:
        now = loop.time()
        if now >= next_snapshot:
            await _send(websocket, _snapshot(services))
            next_snapshot = max(next_snapshot + interval, now)
            continue
        try:
            async with asyncio.timeout(next_snapshot - now):
                notice = await subscription.queue.get()
        except TimeoutError:
            continue
        await _send(websocket, _transition(notice))


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/ws", name="live feed")
async def live_feed(websocket: WebSocket) -> None:
    """JSON messages: `{"type": "capacity", …}` every `snapshot_interval_s` (the body of
    `GET /capacity` plus `at`), and `{"type": "event", "order_id": …, …}` for every order
    event (the fields of `GET /orders/{id}/events` items). Over `max_streams`, the
    connection is closed at once with code 1013 (try again later). A browser page from
    another origin is refused (`RETAIL_ALLOWED_ORIGINS` lists more origins)."""
    services: Services = websocket.app.state.services
    if not origin_allowed(websocket.scope["headers"], services.settings.allowed_origins):
        # Before the handshake completes: the browser sees the upgrade refused (403).
        await websocket.close(WS_POLICY_VIOLATION)
        return
    await websocket.accept()
    with ExitStack() as held:
        try:
            held.enter_context(services.streams.hold())
        except TooManyStreams as error:
            await websocket.close(WS_TRY_AGAIN_LATER, reason=error.detail[:120])
            return
        subscription = held.enter_context(services.bus.subscribe())
        sender = asyncio.create_task(
            _send_loop(websocket, services, subscription), name="retail-ws-send"
        )
        receiver = asyncio.create_task(_until_closed(websocket), name="retail-ws-receive")
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
        failure = sender.exception() if not sender.cancelled() else None
        if isinstance(failure, TimeoutError):
            log.info("closing a /ws client that stopped reading")
        elif failure is not None and not isinstance(failure, WebSocketDisconnect | OSError):
            log.error("the /ws feed failed", exc_info=failure)
