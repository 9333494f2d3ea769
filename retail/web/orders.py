"""Orders over HTTP: follow, list, cancel (placing them is `retail.web.intake`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from retail.core.errors import RetailError
from retail.core.types import OrderStatus, Priority
from retail.runtime.orders import cancel_order as cancel_order_use_case
from retail.runtime.orders import order_events, read_order
from retail.store.base import OrderQuery
from retail.web import sse
from retail.web.access import FORBIDDEN, ListAccessDep, OrderAccessDep
from retail.web.cursors import decode_cursor, encode_cursor
from retail.web.deps import ServicesDep
from retail.web.presenters import event_read, order_read
from retail.web.problems import responses
from retail.web.schemas import (
    TEXT_PATTERN,
    OrderEventRead,
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
    priority: Annotated[Priority | None, Query(description="Only orders of this priority.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
) -> OrderPage:
    key = services.settings.signing_key()
    before = decode_cursor(cursor, key) if cursor else None
    query = OrderQuery(status, customer_id, priority, before_seq=before, limit=limit)
    rows, next_seq = await services.store.list_orders(query)
    return OrderPage(
        items=[order_read(row) for row in rows],
        next_cursor=encode_cursor(next_seq, key) if next_seq else None,
    )


@router.get(
    "/{order_id}",
    summary="One order and where it stands",
    dependencies=[OrderAccessDep],
    responses={
        200: {
            "description": "The order, with its queue position and expected start while it "
            "waits, and the step it is in while it is fulfilled.",
            "headers": {
                "Retry-After": {
                    "description": "Until the order has ended: seconds until it is worth "
                    "asking again.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        },
        **responses(404, 422),
        **FORBIDDEN,
    },
)
async def get_order(order_id: uuid.UUID, services: ServicesDep, response: Response) -> OrderRead:
    state = await read_order(services, order_id)
    if state.retry_after_s is not None:
        response.headers["Retry-After"] = str(state.retry_after_s)
    return order_read(state)


@router.get(
    "/{order_id}/events",
    summary="An order's history, oldest first; live with `Accept: text/event-stream`",
    description=(
        "As JSON: every event so far.\n\n"
        "With `Accept: text/event-stream`: a stream of Server-Sent Events, the history "
        "first and then each event as it happens, until the order's terminal event "
        "(`fulfilled`, `failed`, `cancelled` or `expired`), when the stream ends. Each message has "
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
                sse.EVENT_STREAM: {
                    "schema": {"type": "string"},
                    "example": sse.SSE_EXAMPLE,
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
    if sse.wants_event_stream(accept):
        return await sse.order_event_stream(services, order_id, _last_event_id(last_event_id))
    return [event_read(event) for event in await order_events(services, order_id)]


@router.post(
    "/{order_id}/cancel",
    summary="Cancel an order that has not started fulfilment",
    description="Gives its stock back. `409` once fulfilment has started or the order ended.",
    dependencies=[OrderAccessDep],
    responses={**responses(404, 409, 422), **FORBIDDEN},
)
async def cancel_order(order_id: uuid.UUID, services: ServicesDep) -> OrderRead:
    return order_read(await cancel_order_use_case(services, order_id))
