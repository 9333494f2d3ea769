"""Orders over HTTP: follow, list, cancel (placing them is `retail.web.intake`)."""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from retail.core.errors import RetailError
from retail.core.pipeline import STEPS
from retail.core.types import OrderStatus, ServiceLevel
from retail.runtime.services import Services
from retail.store.sql import orders as order_repo
from retail.store.sql.models import Order
from retail.web import sse
from retail.web.deps import ServicesDep
from retail.web.presenters import order_read
from retail.web.problems import responses
from retail.web.schemas import (
    OrderEventRead,
    OrderPage,
    OrderRead,
)

MAX_PAGE = 200


class InvalidCursor(RetailError):
    status, slug, title = 422, "invalid-cursor", "Invalid cursor"


# --- reading models into responses --------------------------------------------------


def retry_after_s(services: Services, order: Order, position: int | None) -> int | None:
    """How long a poller should wait before asking again; None once terminal."""
    status = OrderStatus(order.status)
    if status.is_terminal:
        return None
    level = ServiceLevel(order.service_level)
    if status is OrderStatus.QUEUED and position is not None:
        seconds = services.admission.estimated_start_s(services.clock.seconds(), position, level)
    else:
        steps_left = len(STEPS) - len(order.skipped_steps) - order.step_index
        seconds = services.pipeline.mean_s(level) * steps_left / max(1, len(STEPS))
    return max(1, math.ceil(seconds))


router = APIRouter(prefix="/orders", tags=["orders"])


# --- following orders ------------------------------------------------------------------


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(
            "cursor: not a cursor this API gave out; pass `next_cursor` from a previous page."
        ) from None


@router.get("", summary="List orders, newest first", responses=responses(422))
async def list_orders(
    services: ServicesDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this state.")] = None,
    customer_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
) -> OrderPage:
    before = _decode_cursor(cursor) if cursor else None
    async with services.db.read() as session:
        rows, next_seq = await order_repo.list_orders(
            session=session, status=status, customer_id=customer_id, before_seq=before, limit=limit
        )
        items = [order_read(row) for row in rows]
    return OrderPage(items=items, next_cursor=_encode_cursor(next_seq) if next_seq else None)


def _current_step(services: Services, order: Order) -> str | None:
    if order.status != OrderStatus.PROCESSING:
        return None
    step = services.pool.current_step(order.id)
    if step is not None:
        return step
    steps = [s.name for s in STEPS if s.name not in order.skipped_steps]
    return steps[order.step_index] if order.step_index < len(steps) else None


@router.get("/{order_id}", summary="One order and where it stands", responses=responses(404, 422))
async def get_order(order_id: uuid.UUID, services: ServicesDep, response: Response) -> OrderRead:
    async with services.db.read() as session:
        order = await order_repo.get_order(session=session, order_id=order_id)
        position = None
        estimated = None
        if order.status == OrderStatus.QUEUED:
            position = await order_repo.queue_position(session=session, order=order)
            level = ServiceLevel(order.service_level)
            now = services.clock.now()
            estimated = now + timedelta(
                seconds=services.admission.estimated_start_s(now.timestamp(), position, level)
            )
    retry = retry_after_s(services, order, position)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return order_read(
        order,
        queue_position=position,
        estimated_start_at=estimated,
        current_step=_current_step(services, order),
    )


@router.get(
    "/{order_id}/events",
    summary="An order's history, oldest first; live with `Accept: text/event-stream`",
    description=(
        "As JSON: every event so far.\n\n"
        "With `Accept: text/event-stream`: a stream of Server-Sent Events, the history "
        "first and then each event as it happens, until the order's terminal event "
        "(`fulfilled`, `failed` or `cancelled`), when the stream ends. Each message has "
        "`id:` (the event id), `event:` (its kind) and `data:` (the event as JSON, as in "
        "the JSON list). Idle streams get a keep-alive comment every `RETAIL_KEEPALIVE_S`. "
        "`Last-Event-ID` resumes after that event; resuming after the terminal event "
        "gives `204`, which tells an `EventSource` to stop reconnecting. Streams count "
        "against `RETAIL_MAX_STREAMS`: over it, `503`."
    ),
    response_model=list[OrderEventRead],
    responses={
        200: {
            "description": "The events as JSON, or as an event stream.",
            "content": {
                sse.EVENT_STREAM: {
                    "schema": {"type": "string"},
                    "example": sse.SSE_EXAMPLE,
                }
            },
        },
        204: {"description": "Resumed (`Last-Event-ID`) after the terminal event: no more."},
        **responses(404, 422),
        503: {
            **responses(503)[503],
            "description": "Every live stream slot is taken; retry after `Retry-After` s.",
        },
    },
)
async def get_events(
    order_id: uuid.UUID,
    services: ServicesDep,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            description="Event stream only: resume after this event id.",
        ),
    ] = None,
) -> list[OrderEventRead] | Response:
    if sse.wants_event_stream(accept):
        return await sse.order_event_stream(services, order_id, last_event_id)
    async with services.db.read() as session:
        events = await order_repo.list_events(session=session, order_id=order_id)
        return [OrderEventRead.model_validate(e, from_attributes=True) for e in events]


@router.post(
    "/{order_id}/cancel",
    summary="Cancel an order that has not started fulfilment",
    description="Gives its stock back. `409` once fulfilment has started or the order ended.",
    responses=responses(404, 409, 422),
)
async def cancel_order(order_id: uuid.UUID, services: ServicesDep) -> OrderRead:
    from retail.runtime.pool import notice

    async with services.db.write() as session:
        event = await order_repo.cancel_order(
            session=session, order_id=order_id, now=services.clock.now()
        )
        order = await order_repo.get_order(session=session, order_id=order_id)
    services.admission.left_queue()
    services.bus.publish(notice(event))
    return order_read(order)
