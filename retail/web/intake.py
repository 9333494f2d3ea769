"""Taking an order: `POST /orders`.

`take_order()` does the work: an `Idempotency-Key` replay (or its 409/422), the
service's own checks, the admission decision, the group-committed write, and the
answer. Two doors lead to it:

- `OrderIntake`, an ASGI middleware in front of the router, takes the common case
  without the framework's generic path (routing, dependencies, exception handlers
  cost more than the order itself): over capacity it refuses before reading the
  body; otherwise a JSON body that validates as `OrderCreate` goes straight to
  `take_order()`.
- The `POST /orders` route, which documents the operation in OpenAPI, takes the
  rest: other JSON content types, and bodies that do not validate, which get the
  framework's validation problems. It calls the same `take_order()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid_utils.compat import uuid7

from retail.core.admission import Ticket
from retail.core.errors import (
    CapacityExceeded,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    RetailError,
)
from retail.core.types import OrderStatus
from retail.runtime.ingest import KeyedResponse
from retail.runtime.services import Services
from retail.store.sql import idempotency
from retail.store.sql import orders as order_repo
from retail.store.sql.idempotency import StoredResponse
from retail.store.sql.models import Order
from retail.store.sql.orders import NewOrder, PlacedOrder
from retail.web import limits
from retail.web.deps import ServicesDep
from retail.web.presenters import order_read
from retail.web.problems import responses, retail_problem
from retail.web.schemas import OrderCreate, OrderRead

log = logging.getLogger(__name__)

PATH = "/orders"
JSON = "application/json"
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)
PREFER_WAIT_RECHECK_S = 1.0


class InvalidHeader(RetailError):
    status, slug, title = 400, "invalid-header", "Invalid header"


class InvalidOrder(RetailError):
    status, slug, title = 422, "invalid-order", "Invalid order"


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one `POST /orders`: status, headers and the JSON body."""

    status: int
    headers: dict[str, str]
    body: bytes


# --- the work -------------------------------------------------------------------------


async def take_order(
    services: Services,
    order_in: OrderCreate,
    *,
    body: bytes,
    key: str | None,
    prefer: str | None,
    ticket: Ticket | None = None,
) -> Answer:
    """Store `order_in` (or replay its key's stored answer); raise a `RetailError` if not.

    `ticket`: the order's place, if admission already gave it one (an order without a
    key, admitted before its body was read); it is settled here either way.
    """
    digest = None
    if key is not None:
        if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
            raise InvalidHeader(
                "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)."
            )
        digest = request_hash(body)
        _check_in_flight(services, key, digest)
    try:
        items = validate_items(services, order_in)
    except InvalidOrder:
        if ticket is not None:
            ticket.release()
        raise
    if ticket is None:
        try:
            ticket = services.admission.admit(services.clock.seconds())
        except CapacityExceeded:
            # A retry of an order already stored gets its answer even when full.
            if key is not None and digest is not None:
                async with services.db.read() as session:
                    stored = await idempotency.find(
                        session=session, key=key, now=services.clock.now()
                    )
                if stored is not None:
                    return _replayed(stored, digest)
            raise  # 503, nothing written
    decision = ticket.decision
    estimated_start = services.clock.now() + timedelta(seconds=decision.estimated_start_s)
    new = NewOrder(
        id=uuid7(),  # time-ordered: new ids go to the end of each index on them
        customer_id=order_in.customer_id,
        items=items,
        service_level=decision.service_level,
        skipped_steps=services.pipeline.skipped(decision.service_level),
        queue_position=decision.queue_position,
    )

    def render(placed: PlacedOrder) -> OrderRead:
        # Not before the order exists (its time is the batch's, a moment after admission).
        start_at = max(estimated_start, placed.created_at)
        return order_read(
            placed, queue_position=decision.queue_position, estimated_start_at=start_at
        )

    keyed = None
    if key is not None and digest is not None:
        keyed = KeyedResponse(key, digest, lambda placed: render(placed).model_dump(mode="json"))
    # The writer also looks the key up, in the batch's transaction: an earlier request's
    # stored answer comes back instead of a new order.
    wait_s = _prefer_wait_s(prefer, services.settings.prefer_wait_max_s)
    if wait_s is None:
        # Shielded: a client that hangs up does not stop its order from being stored.
        placed = await asyncio.shield(_submit(services, ticket, key, digest, new, keyed))
        if isinstance(placed, StoredResponse):
            return _replayed(placed, digest)
    else:
        with services.bus.subscribe(new.id) as subscription:
            placed = await asyncio.shield(_submit(services, ticket, key, digest, new, keyed))
            if isinstance(placed, StoredResponse):
                return _replayed(placed, digest)
            order = await _wait_terminal(services, subscription.queue, placed.id, wait_s)
        if order is not None:
            return Answer(
                201,
                {
                    "Location": f"/orders/{placed.id}",
                    "Preference-Applied": f"wait={prefer_value(wait_s)}",
                },
                order_read(order).model_dump_json().encode(),
            )
    return Answer(
        202,
        {
            "Location": f"/orders/{placed.id}",
            "Retry-After": str(max(1, math.ceil(decision.estimated_start_s))),
        },
        render(placed).model_dump_json().encode(),
    )


def _replayed(stored: StoredResponse, digest: str | None) -> Answer:
    """The stored answer to an earlier request with the same key (if the body is the same)."""
    if stored.request_hash != digest:
        raise IdempotencyKeyMismatch(
            "This Idempotency-Key was used for a different request body; "
            "use a new key for a different order.",
            order_id=str(stored.order_id),
        )
    return Answer(
        stored.status,
        {"Location": f"/orders/{stored.order_id}", "Idempotent-Replayed": "true"},
        json.dumps(stored.body, separators=(",", ":")).encode(),
    )


def _submit(
    services: Services,
    ticket: Ticket,
    key: str | None,
    digest: str | None,
    new: NewOrder,
    keyed: KeyedResponse | None,
) -> asyncio.Future[PlacedOrder | StoredResponse]:
    """Hand the order to the writer; its place and key are settled once it is stored."""

    def settle(future: asyncio.Future[PlacedOrder | StoredResponse] | None) -> None:
        if future is None or future.cancelled() or future.exception() is not None:
            ticket.release()
        elif isinstance(future.result(), PlacedOrder):
            ticket.keep()
        else:
            ticket.withdraw()  # a replay: no new order
        if key is not None:
            services.inflight_keys.pop(key, None)

    if key is not None and digest is not None:
        services.inflight_keys[key] = digest
    try:
        future = services.ingest.submit(new, keyed)
    except BaseException:
        settle(None)
        raise
    future.add_done_callback(settle)
    return future


def request_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


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


def validate_items(services: Services, order_in: OrderCreate) -> tuple[tuple[str, int], ...]:
    """The service's own limits on an order's lines, as (sku, quantity) pairs."""
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


def _prefer_wait_s(prefer: str | None, cap_s: float) -> float | None:
    if not prefer:
        return None
    match = PREFER_WAIT.search(prefer)
    return min(float(match.group(1)), cap_s) if match else None


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


# --- the route: OpenAPI, and what the fast path hands on --------------------------------

router = APIRouter(tags=["orders"])

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


@router.post(
    PATH,
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
async def place_order(order_in: OrderCreate, request: Request, services: ServicesDep) -> Response:
    # The headers are read from the request (and documented in `openapi_extra`).
    answer = await take_order(
        services,
        order_in,
        body=await request.body(),
        key=request.headers.get("idempotency-key"),
        prefer=request.headers.get("prefer"),
        ticket=request.scope.pop(TICKET, None),
    )
    return Response(answer.body, answer.status, answer.headers, media_type=JSON)


ROUTE = next(r for r in router.routes if isinstance(r, APIRoute))
TICKET = "retail.ticket"  # scope key: the place the fast path took for an order it hands on


# --- the fast path ----------------------------------------------------------------------


class OrderIntake:
    """`POST /orders` before the framework: refusals first, then well-formed orders.

    It sits outside `BodySizeLimit` (what it hands on still passes through it) and
    applies the same limit to the bodies it reads itself.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE  # as routing would have set it: telemetry labels by it
        key = prefer = None
        json_body = declared_too_large = False
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                key = value.decode("latin-1")
            elif name == b"prefer":
                prefer = value.decode("latin-1")
            elif name == b"content-type":
                json_body = value == b"application/json"
            elif name == b"content-length":
                declared_too_large = limits.declared_too_large(value, self.max_body_bytes)
        ticket = None
        if key is None:
            # Decided before anything is read. A retry with a key must get its stored
            # answer even when the service is full: it is decided after the key's lookup.
            try:
                ticket = services.admission.admit(services.clock.seconds())
            except CapacityExceeded as refusal:
                await retail_problem(refusal, instance=PATH)(scope, receive, send)
                return
        try:
            if not json_body or declared_too_large:
                # The route (or the body-size limit's 413) answers.
                given, ticket = ticket, None
                await self._hand_on(scope, receive, send, given)
                return
            body = await _read_body(receive, self.max_body_bytes)
            if body is None:
                return  # the client left before its order was whole: nothing to answer
            try:
                order_in = OrderCreate.model_validate_json(body)
            except ValidationError:  # the route's 400/422
                given, ticket = ticket, None
                await self._hand_on(scope, _replay(body, receive), send, given)
                return
            given, ticket = ticket, None  # from here on, take_order settles it
            answer = await take_order(
                services, order_in, body=body, key=key, prefer=prefer, ticket=given
            )
        except limits.BodyTooLarge as error:
            await retail_problem(error, instance=None)(scope, receive, send)  # as the limit's
            return
        except RetailError as error:
            if error.status >= 500 and not isinstance(error, CapacityExceeded):
                log.error("POST %s: %s", PATH, error.detail)
            await retail_problem(error, instance=PATH)(scope, receive, send)
            return
        finally:
            if ticket is not None:
                ticket.release()  # no order came of it
        headers = [
            (b"content-type", JSON.encode()),
            (b"content-length", str(len(answer.body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in answer.headers.items()),
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _hand_on(
        self, scope: Scope, receive: Receive, send: Send, ticket: Ticket | None
    ) -> None:
        """Let the route answer, with the place already taken (given back if unused)."""
        if ticket is not None:
            scope[TICKET] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            unused: Ticket | None = scope.pop(TICKET, None)  # the route takes it if it runs
            if unused is not None:
                unused.release()


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise limits.BodyTooLarge(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read once more, then the client's messages."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again
