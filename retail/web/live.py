"""The `/ws` feed: capacity snapshots and every order's transitions, as JSON.

It reads the in-process `EventBus`; every open feed holds one of `max_streams` slots
(`retail.runtime.streams`), shared with the SSE streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import ExitStack
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from retail.core.events import OrderEvent
from retail.runtime.bus import Subscription
from retail.runtime.services import Services
from retail.runtime.streams import TooManyStreams
from retail.web.presenters import capacity_snapshot
from retail.web.security import origin_allowed

log = logging.getLogger(__name__)

WS_SEND_TIMEOUT_S = 10.0  # a client that takes longer to accept one message is dropped
WS_TRY_AGAIN_LATER = 1013
WS_POLICY_VIOLATION = 1008

router = APIRouter()


# --- /ws: capacity snapshots and every order's transitions --------------------------------


def _snapshot(services: Services) -> dict[str, Any]:
    return {
        "type": "capacity",
        "at": services.clock.now().isoformat(),
        **capacity_snapshot(services).model_dump(mode="json"),
    }


def _transition(event: OrderEvent) -> dict[str, Any]:
    return {"type": "event", "order_id": str(event.order_id), **event.document()}


async def _send(websocket: WebSocket, message: dict[str, Any]) -> None:
    async with asyncio.timeout(WS_SEND_TIMEOUT_S):
        await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def _send_loop(websocket: WebSocket, services: Services, subscription: Subscription) -> None:
    """A snapshot every `snapshot_interval_s` (the first at once), and every transition.

    A client slower than the transitions loses the oldest ones (the subscription's
    queue is bounded); snapshots are made when sent, so they never pile up.
    """
    clock = services.clock
    interval = services.settings.snapshot_interval_s
    next_snapshot = clock.monotonic()
    while not subscription.closed:
        now = clock.monotonic()
        if now >= next_snapshot:
            await _send(websocket, _snapshot(services))
            next_snapshot = max(next_snapshot + interval, now)
            continue
        if subscription.queue.empty():
            subscription.arrived.clear()
            await clock.wait(subscription.arrived, next_snapshot - now)
        while not subscription.queue.empty():
            await _send(websocket, _transition(subscription.queue.get_nowait()))


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
