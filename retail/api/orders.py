"""Orders over HTTP: place, follow, list, cancel.

`POST /orders` runs behind `IntakeRoute`, which does the cheap work before the
body is parsed: an Idempotency-Key replay (or its 409/422), then the admission
decision. A refused order costs no parsing and no database work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from retail.admission import Ticket
from retail.api import live
from retail.api.deps import ServicesDep
from retail.api.problems import responses
from retail.app import Services
from retail.config import OrderStatus, ServiceLevel
from retail.db import idempotency
from retail.db import orders as order_repo
from retail.db.models import Order
from retail.db.orders import NewOrder, PlacedOrder
from retail.errors import IdempotencyKeyInUse, IdempotencyKeyMismatch, RetailError
from retail.fulfilment.pipeline import STEPS
from retail.ingest import KeyedResponse
from retail.schemas import (
    OrderCreate,
    OrderEventRead,
    OrderLineRead,
    OrderPage,
    OrderRead,
)

IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)
MAX_PAGE = 200
PREFER_WAIT_RECHECK_S = 1.0


class InvalidHeader(RetailError):
    status, slug, title = 400, "invalid-header", "Invalid header"


class InvalidOrder(RetailError):
    status, slug, title = 422, "invalid-order", "Invalid order"


class InvalidCursor(RetailError):
    status, slug, title = 422, "invalid-cursor", "Invalid cursor"


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


# --- the intake gate --------------------------------------------------------------------


def request_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


@dataclass
class Intake:
    """What the gate decided for one `POST /orders`, handed to the route handler."""

    services: Services
    ticket: Ticket
    key: str | None
    request_hash: str | None
    submitted: bool = False

    def submit(self, order: NewOrder, keyed: KeyedResponse | None) -> asyncio.Future[PlacedOrder]:
        """Give the order to the writer; the ticket and key are settled when it is stored."""
        future = self.services.ingest.submit(order, keyed)
        self.submitted = True
        future.add_done_callback(self._settle)
        return future

    def _settle(self, future: asyncio.Future[PlacedOrder]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.ticket.release()
        else:
            self.ticket.keep()
        if self.key is not None:
            self.services.inflight_keys.pop(self.key, None)

    def close(self) -> None:
        """The handler ended without submitting (invalid body): give everything back."""
        if not self.submitted:
            self.ticket.release()
            if self.key is not None:
                self.services.inflight_keys.pop(self.key, None)


def _check_in_flight(services: Services, key: str, digest: str) -> None:
    first = services.inflight_keys.get(key)
    if first is None:
        return
    if first != digest:
        raise IdempotencyKeyMismatch(
            "This Idempotency-Key is in use by a request with a different body; "
            "use a new key for a different order."
        )
    raise IdempotencyKeyInUse(
        "A request with this Idempotency-Key is still being processed; retry shortly "
        "to get its response."
    )


async def _gate(request: Request) -> Intake | Response:
    services: Services = request.app.state.services
    key = request.headers.get("idempotency-key")
    digest = None
    if key is not None:
        if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
            raise InvalidHeader(
                "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)."
            )
        digest = request_hash(await request.body())
        _check_in_flight(services, key, digest)
        async with services.db.read() as session:
            stored = await idempotency.find(session=session, key=key, now=services.clock.now())
        if stored is not None:
            if stored.request_hash != digest:
                raise IdempotencyKeyMismatch(
                    "This Idempotency-Key was used for a different request body; "
                    "use a new key for a different order.",
                    order_id=str(stored.order_id),
                )
            return JSONResponse(
                stored.body,
                status_code=stored.status,
                headers={"Location": f"/orders/{stored.order_id}", "Idempotent-Replayed": "true"},
            )
        _check_in_flight(services, key, digest)  # another request may have started meanwhile
    ticket = services.admission.admit()  # raises CapacityExceeded: 503, nothing written
    if key is not None and digest is not None:
        services.inflight_keys[key] = digest
    return Intake(services, ticket, key, digest)


class IntakeRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def gated(request: Request) -> Response:
            intake = await _gate(request)
            if isinstance(intake, Response):
                return intake
            request.state.intake = intake
            try:
                return await handler(request)
            finally:
                intake.close()

        return gated


intake = APIRouter(tags=["orders"], route_class=IntakeRoute)
router = APIRouter(prefix="/orders", tags=["orders"])


def _prefer_wait_s(prefer: str | None, cap_s: float) -> float | None:
    if not prefer:
        return None
    match = PREFER_WAIT.search(prefer)
    return min(float(match.group(1)), cap_s) if match else None


def _validate_items(services: Services, order_in: OrderCreate) -> tuple[tuple[str, int], ...]:
    settings = services.settings
    if len(order_in.items) > settings.max_order_lines:
        raise InvalidOrder(
            f"An order has at most {settings.max_order_lines} lines; this one has "
            f"{len(order_in.items)}. Split it into several orders.",
        )
    seen: set[str] = set()
    for index, item in enumerate(order_in.items):
        if item.quantity > settings.max_line_quantity:
            raise InvalidOrder(
                f"items.{index}.quantity: at most {settings.max_line_quantity} units of one SKU "
                f"per order; {item.quantity} were asked for.",
            )
        if item.sku in seen:
            raise InvalidOrder(
                f"items.{index}.sku: {item.sku} appears twice; list each SKU once with the "
                "total quantity.",
            )
        seen.add(item.sku)
    return tuple((item.sku, item.quantity) for item in order_in.items)


ORDER_EXAMPLE = {
    "id": "0b8f3c4e-1f2a-4c55-9a57-0c6b1f1f9d11",
    "customer_id": "alice",
    "status": "queued",
    "service_level": "full",
    "skipped_steps": [],
    "lines": [{"sku": "MUG-1", "quantity": 2, "unit_price": 1250, "line_total": 2500}],
    "total": 2500,
    "currency": "EUR",
    "created_at": "2026-11-25T10:00:00Z",
    "updated_at": "2026-11-25T10:00:00Z",
    "queue_position": 1,
    "estimated_start_at": "2026-11-25T10:00:00Z",
}


@intake.post(
    "/orders",
    status_code=202,
    summary="Place an order",
    description=(
        "Stores the order, reserves its stock and answers `202 Accepted` with `Location`. "
        "Fulfilment runs in the background; poll `Location` or read `/orders/{id}/events`.\n\n"
        "- `Idempotency-Key`: a retry with the same key and body returns the first response "
        "(header `Idempotent-Replayed: true`) and creates nothing.\n"
        "- `Prefer: wait=N` (RFC 7240): hold the response up to N seconds; if the order "
        "ends by then, `201` with the final order and `Preference-Applied`.\n"
        "- Over capacity, the overload mode decides: queue (`202`, with the queue position), "
        "degrade (`202`, `service_level: degraded`) or reject (`503` + `Retry-After`)."
    ),
    responses={
        201: {"description": "Placed and finished within `Prefer: wait`.", "model": OrderRead},
        202: {
            "description": "Accepted: stored durably, fulfilment pending.",
            "content": {"application/json": {"example": ORDER_EXAMPLE}},
        },
        **responses(400, 409, 413, 422, 503),
    },
    response_model=OrderRead,
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Makes retries safe: same key and body, same single order.",
                "schema": {"type": "string", "maxLength": 255},
            },
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "description": "`wait=N`: wait up to N s for the final order.",
                "schema": {"type": "string"},
                "example": "wait=10",
            },
        ]
    },
)
async def place_order(order_in: OrderCreate, request: Request) -> Response:
    # The headers are read from the request (and documented in `openapi_extra`), and the
    # services come with the gate: no dependency to solve on the hot path.
    gate: Intake = request.state.intake
    services = gate.services
    items = _validate_items(services, order_in)
    decision = gate.ticket.decision
    now = services.clock.now()
    estimated_start = now + timedelta(seconds=decision.estimated_start_s)
    new = NewOrder(
        id=uuid.uuid4(),
        customer_id=order_in.customer_id,
        items=items,
        service_level=decision.service_level,
        skipped_steps=services.pipeline.skipped(decision.service_level),
        queue_position=decision.queue_position,
    )

    def render(placed: PlacedOrder) -> dict[str, Any]:
        read = order_read(
            placed, queue_position=decision.queue_position, estimated_start_at=estimated_start
        )
        return read.model_dump(mode="json")

    keyed = (
        KeyedResponse(gate.key, gate.request_hash, render)
        if gate.key and gate.request_hash
        else None
    )
    wait_s = _prefer_wait_s(request.headers.get("prefer"), services.settings.prefer_wait_max_s)
    if wait_s is None:
        # Shielded: a client that hangs up does not stop its order from being stored.
        placed = await asyncio.shield(gate.submit(new, keyed))
    else:
        with services.bus.subscribe(new.id) as subscription:
            placed = await asyncio.shield(gate.submit(new, keyed))
            order = await _wait_terminal(services, subscription.queue, placed.id, wait_s)
        if order is not None:
            return _json(
                order_read(order),
                201,
                {
                    "Location": f"/orders/{placed.id}",
                    "Preference-Applied": f"wait={prefer_value(wait_s)}",
                },
            )
    read = order_read(
        placed, queue_position=decision.queue_position, estimated_start_at=estimated_start
    )
    headers = {
        "Location": f"/orders/{placed.id}",
        "Retry-After": str(max(1, math.ceil(decision.estimated_start_s))),
    }
    return _json(read, 202, headers)


def _json(order: OrderRead, status: int, headers: dict[str, str]) -> Response:
    """The order as a JSON response, serialised once (FastAPI would validate it again)."""
    return Response(
        order.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def prefer_value(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


async def _wait_terminal(
    services: Services, notices: asyncio.Queue[Any], order_id: uuid.UUID, seconds: float
) -> Order | None:
    """The order once it is terminal, or None if `seconds` pass first.

    Woken by this process's notices; also re-reads the order every second, for orders
    fulfilled by another process (`retail worker`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with services.db.read() as session:
            order = await order_repo.get_order(session=session, order_id=order_id)
        if OrderStatus(order.status).is_terminal:
            return order
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            async with asyncio.timeout(min(remaining, PREFER_WAIT_RECHECK_S)):
                while not (await notices.get()).status.is_terminal:
                    pass
        except TimeoutError:
            pass


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
    flight = services.pool.in_flight.get(order.id)
    if flight is not None:
        return flight.step
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
    if live.wants_event_stream(accept):
        return await live.order_event_stream(services, order_id, last_event_id)
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
    from retail.fulfilment.pool import notice

    async with services.db.write() as session:
        event = await order_repo.cancel_order(
            session=session, order_id=order_id, now=services.clock.now()
        )
        order = await order_repo.get_order(session=session, order_id=order_id)
    services.admission.left_queue()
    services.bus.publish(notice(event))
    return order_read(order)
