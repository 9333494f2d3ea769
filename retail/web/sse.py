"""An order's events as Server-Sent Events (`GET /orders/{id}/events`, `Accept: text/event-stream`).

Read from the in-process `EventBus`, and true when another process (`retail worker`)
does the fulfilling: the database is the source of truth, the bus only says when to
look. A stream subscribes before it reads the history, then re-reads the events
after the last one it sent whenever a notice arrives or `poll_interval_s` passes
without one, so nothing falls between history and live and nothing is sent twice.
Every open stream holds one of `max_streams` slots (`retail.runtime.streams`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack

import anyio
from fastapi import Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from retail.core.events import OrderEvent
from retail.runtime.bus import Subscription
from retail.runtime.orders import order_events
from retail.runtime.services import Services

EVENT_STREAM = "text/event-stream"
SHUTDOWN_GRACE_S = 2.0


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
) -> tuple[list[OrderEvent], bool]:
    """The events after `after_id`, oldest first, and whether the order has ended.

    The status is read before the events: an order seen ended has all its events
    stored, so its last event is among those read.
    """
    order = await services.store.get_order(order_id)
    events = await order_events(services, order_id, after_id=after_id)
    ended = order.status.is_terminal or any(event.status.is_terminal for event in events)
    return events, ended


def _message(event: OrderEvent) -> ServerSentEvent:
    data = json.dumps(event.document(), separators=(",", ":"))
    return ServerSentEvent(data=data, event=event.kind, id=str(event.id))


async def _woken(services: Services, subscription: Subscription, timeout_s: float) -> None:
    """Return when an event arrives (taking every waiting one), the service stops, or
    `timeout_s` passes."""
    if subscription.queue.empty() and not subscription.closed:
        subscription.arrived.clear()
        await services.clock.wait(subscription.arrived, timeout_s)
    subscription.drain_terminal()


async def _follow(
    services: Services,
    order_id: uuid.UUID,
    subscription: Subscription,
    after_id: int,
    events: list[OrderEvent],
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
        await _woken(services, subscription, services.settings.poll_interval_s)
        if shutdown.is_set() or subscription.closed:
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
