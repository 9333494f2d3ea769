"""Orders over HTTP: follow, list, cancel (placing them is `retail.web.intake`)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from retail.core.errors import RetailError
from retail.core.pipeline import STEPS
from retail.core.types import OrderStatus, ServiceLevel
from retail.runtime.services import Services
from retail.store.sql import orders as order_repo
from retail.store.sql.models import Order
from retail.store.sql.orders import PlacedOrder
from retail.web import live
from retail.web.access import FORBIDDEN, ListAccessDep, OrderAccessDep
from retail.web.cursors import decode_cursor, encode_cursor
from retail.web.deps import ServicesDep
from retail.web.problems import responses
from retail.web.schemas import (
    TEXT_PATTERN,
    OrderEventRead,
    OrderLineRead,
    OrderPage,
    OrderRead,
)

MAX_PAGE = 200


class InvalidLastEventId(RetailError):
    status, slug, title = 400, "invalid-last-event-id", "Invalid Last-Event-ID"


MAX_EVENT_ID = 2**63 - 1


def _last_event_id(value: str | None) -> int | None:
    """The `Last-Event-ID` header as an event id; 400 if it cannot be one."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_EVENT_ID:
        raise InvalidLastEventId(
            "Last-Event-ID: not an event id; send the `id:` of the last event received."
        )
    return int(text)


# --- reading models into responses --------------------------------------------------


def order_read(
    order: Order | PlacedOrder,
    *,
    queue_position: int | None = None,
    estimated_start_at: datetime | None = None,
    current_step: str | None = None,
) -> OrderRead:
    return OrderRead(
        id=order.id,
        customer_id=order.customer_id,
        status=OrderStatus(order.status),
        service_level=ServiceLevel(order.service_level),
        skipped_steps=list(order.skipped_steps),
        lines=[
            OrderLineRead(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.quantity * line.unit_price,
            )
            for line in order.lines
        ],
        total=order.total,
        currency=order.currency,
        created_at=order.created_at,
        updated_at=order.updated_at,
        started_at=order.started_at,
        finished_at=order.finished_at,
        current_step=current_step,
        failure_reason=order.failure_reason,
        queue_position=queue_position,
        estimated_start_at=estimated_start_at,
    )


def retry_after_s(services: Services, order: Order, position: int | None) -> int | None:
    """How long a poller should wait before asking again; None once terminal."""
    status = OrderStatus(order.status)
    if status.is_terminal:
        return None
    level = ServiceLevel(order.service_level)
    if status is OrderStatus.QUEUED and position is not None:
        seconds = services.admission.estimated_start_s(position, level)
    else:
        steps_left = len(STEPS) - len(order.skipped_steps) - order.step_index
        seconds = services.pipeline.mean_s(level) * steps_left / max(1, len(STEPS))
    return max(1, math.ceil(seconds))


router = APIRouter(prefix="/orders", tags=["orders"])


# --- following orders ------------------------------------------------------------------


@router.get(
    "",
    summary="List orders, newest first",
    dependencies=[ListAccessDep],
    responses={**responses(400, 422), **FORBIDDEN},
)
async def list_orders(
    services: ServicesDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this state.")] = None,
    customer_id: Annotated[str | None, Query(max_length=100, pattern=TEXT_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
) -> OrderPage:
    key = services.settings.signing_key()
    before = decode_cursor(cursor, key) if cursor else None
    async with services.db.read() as session:
        rows, next_seq = await order_repo.list_orders(
            session=session, status=status, customer_id=customer_id, before_seq=before, limit=limit
        )
        items = [order_read(row) for row in rows]
    return OrderPage(items=items, next_cursor=encode_cursor(next_seq, key) if next_seq else None)


def _current_step(services: Services, order: Order) -> str | None:
    if order.status != OrderStatus.PROCESSING:
        return None
    flight = services.pool.in_flight.get(order.id)
    if flight is not None:
        return flight.step
    steps = [s.name for s in STEPS if s.name not in order.skipped_steps]
    return steps[order.step_index] if order.step_index < len(steps) else None


@router.get(
    "/{order_id}",
    summary="One order and where it stands",
    dependencies=[OrderAccessDep],
    responses={**responses(404, 422), **FORBIDDEN},
)
async def get_order(order_id: uuid.UUID, services: ServicesDep, response: Response) -> OrderRead:
    async with services.db.read() as session:
        order = await order_repo.get_order(session=session, order_id=order_id)
        position = None
        estimated = None
        if order.status == OrderStatus.QUEUED:
            position = await order_repo.queue_position(session=session, order=order)
            level = ServiceLevel(order.service_level)
            estimated = services.clock.now() + timedelta(
                seconds=services.admission.estimated_start_s(position, level)
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
    dependencies=[OrderAccessDep],
    responses={
        200: {
            "description": "The events as JSON, or as an event stream.",
            "content": {
                live.EVENT_STREAM: {
                    "schema": {"type": "string"},
                    "example": live.SSE_EXAMPLE,
                }
            },
        },
        204: {"description": "Resumed (`Last-Event-ID`) after the terminal event: no more."},
        **responses(400, 404, 422),
        **FORBIDDEN,
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
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Event stream only: resume after this event id (a decimal integer "
            "up to 2^63 - 1; anything else is `400`).",
        ),
    ] = None,
) -> list[OrderEventRead] | Response:
    if live.wants_event_stream(accept):
        after = _last_event_id(last_event_id)
        return await live.order_event_stream(services, order_id, after)
    async with services.db.read() as session:
        events = await order_repo.list_events(session=session, order_id=order_id)
        return [OrderEventRead.model_validate(e, from_attributes=True) for e in events]


@router.post(
    "/{order_id}/cancel",
    summary="Cancel an order that has not started fulfilment",
    description="Gives its stock back. `409` once fulfilment has started or the order ended.",
    dependencies=[OrderAccessDep],
    responses={**responses(404, 409, 422), **FORBIDDEN},
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
