"""`POST /orders`: two doors to one placing function.

`retail.runtime.placing.place_order` does the work. The web layer reads the request
once, here, and chooses the door:

- `OrderIntake`, in front of the framework (`retail.web.app.RetailApp`), takes every
  `POST /orders` as it arrives.
  Over capacity it refuses a request without a key before reading its body (fair
  shares on or off: with no room at all, no customer gets a place), and without
  taking a place: nothing a client does afterwards can hold one. Then it
  reads the body, bounded in size (`max_body_bytes`) and time (`body_timeout_s`); a
  JSON body that validates as `OrderCreate` is placed at once, skipping routing,
  dependency solving and the exception-handler stack, which cost more than the order.
- The `POST /orders` route, which documents the operation in OpenAPI, gets the rest
  with the body already read: bodies that do not validate (the framework's `400`/`422`
  problems). It calls the same function.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.core.errors import CapacityExceeded, RetailError
from retail.runtime import placing
from retail.runtime.logs import request_id
from retail.runtime.services import Services
from retail.web import limits
from retail.web.deps import ServicesDep
from retail.web.outage import outage_response
from retail.web.problems import responses, retail_problem, unexpected
from retail.web.protocol import READ_BODY, ReadBody
from retail.web.schemas import OrderCreate, OrderRead
from retail.web.security import DEFAULT_HEADERS, add_security_headers
from retail.web.telemetry import REQUEST_ID_RAW, TaggedSend, Telemetry

log = logging.getLogger(__name__)

PATH = "/orders"
PATH_RAW = PATH.encode()
JSON = "application/json"
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


class UnsupportedMediaType(RetailError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class BodyTimeout(RetailError):
    status, slug, title = 408, "body-timeout", "Request body too slow"


async def _place(
    services: Services, order_in: OrderCreate, body: bytes, headers: Any
) -> placing.Answer:
    """The one call both doors make."""
    return await placing.place_order(
        services,
        customer_id=order_in.customer_id,
        items=[(item.sku, item.quantity) for item in order_in.items],
        body=body,
        key=headers.get("idempotency-key"),
        prefer_wait_s=prefer_wait_s(headers.get("prefer"), services.settings.prefer_wait_max_s),
        priority=order_in.priority,
        start_within_s=order_in.start_within_s,
    )


def require_json(content_type: str | None) -> None:
    if not _is_json(content_type):
        raise UnsupportedMediaType("Send the order as JSON with `Content-Type: application/json`.")


async def json_body(request: Request) -> None:
    """The route's check, made before the framework reads the body (as the fast path does)."""
    require_json(request.headers.get("content-type"))


def prefer_wait_s(prefer: str | None, cap_s: float) -> float | None:
    """`Prefer: wait=N` (RFC 7240), capped; None when not asked."""
    if not prefer:
        return None
    match = PREFER_WAIT.search(prefer)
    return min(float(match.group(1)), cap_s) if match else None


# --- the route: OpenAPI, and what the fast path hands on --------------------------------

PLACED_HEADERS: dict[str, Any] = {
    "Location": {"description": "The order: `/orders/{id}`.", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` on the stored answer to an earlier request with the same "
        "`Idempotency-Key` and body: no new order was made.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Order-Token": {
        "description": "With `RETAIL_ORDER_ACCESS=token`: what reading or cancelling this "
        "order needs (`Order-Token` header).",
        "schema": {"type": "string"},
    },
}

router = APIRouter(tags=["orders"])

ORDER_EXAMPLE = {
    "id": "0b8f3c4e-1f2a-4c55-9a57-0c6b1f1f9d11",
    "customer_id": "alice",
    "status": "queued",
    "priority": "standard",
    "service_level": "full",
    "skipped_steps": [],
    "lines": [{"sku": "MUG-1", "quantity": 2, "unit_price": 1250, "line_total": 2500}],
    "total": 2500,
    "currency": "EUR",
    "created_at": "2026-11-25T10:00:00Z",
    "updated_at": "2026-11-25T10:00:00Z",
    "queue_position": 1,
    "estimated_start_at": "2026-11-25T10:00:00Z",
    "start_deadline": None,
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
        "degrade (`202`, `service_level: degraded`) or reject (`503` + `Retry-After`).\n"
        "- `priority` (`critical`, `standard`, `sheddable`): waiting orders start in that "
        "order; room may be held back for critical orders; a sheddable order is refused "
        "when it would wait.\n"
        "- `start_within_s`: refused (`503`) when the estimated start is later; a waiting "
        "order whose time runs out ends `expired`, its stock back.\n"
        "- While customers compete, one over its fair share gets `429` + `Retry-After`."
    ),
    responses={
        201: {
            "description": "Placed and finished within `Prefer: wait`.",
            "model": OrderRead,
            "headers": {
                **PLACED_HEADERS,
                "Preference-Applied": {
                    "description": "`wait=N`: the wait asked for (capped at "
                    "`RETAIL_PREFER_WAIT_MAX_S`) was honoured.",
                    "schema": {"type": "string"},
                },
            },
        },
        202: {
            "description": "Accepted: stored durably, fulfilment pending. A replay of a stored "
            "order (same `Idempotency-Key` and body) is its first answer again.",
            "content": {"application/json": {"example": ORDER_EXAMPLE}},
            "headers": {
                **PLACED_HEADERS,
                "Retry-After": {
                    "description": "Seconds until fulfilment is expected to start: when to "
                    "poll `Location` first.",
                    "schema": {"type": "integer", "minimum": 1},
                },
            },
        },
        **responses(400, 408, 409, 413, 415, 422, 429, 503, refusals=True),
    },
    response_model=OrderRead,
    dependencies=[Depends(json_body)],
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
async def place_order_route(
    order_in: OrderCreate, request: Request, services: ServicesDep
) -> Response:
    # The headers are read from the request (and documented in `openapi_extra`).
    answer = await _place(services, order_in, await request.body(), request.headers)
    return Response(answer.body, answer.status, answer.headers, media_type=JSON)


ROUTE = next(r for r in router.routes if isinstance(r, APIRoute))


# --- the fast path ----------------------------------------------------------------------


class OrderIntake:
    """Every `POST /orders`: refusals first, then the body, then one of the two doors.

    In front of the framework (`RetailApp`): for the requests it answers itself it does
    what the layers behind it do for every other request, without them (each one a
    coroutine and a wrapped `send` per request): it records the request (`Telemetry`),
    adds the security headers, answers a database outage with its `503` and any other
    error with a `500` problem (the error then goes on to the server, as the
    framework's own outermost layer lets it). It applies `BodySizeLimit`'s limit to the
    body it reads. What it hands on (a body that does not validate, or any request
    before the services have started) passes through all of them.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float, telemetry: Telemetry
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE  # as routing would have set it: telemetry labels by it
        telemetry = self.telemetry
        begun = telemetry.begin(scope)
        # For the problems: the request id and the security headers, as behind.
        finished_send = TaggedSend(send, begun[0], _SECURED)
        recorded = True
        try:
            try:
                answer = await self._answer(scope, receive, services)
            except RetailError as error:
                await _problem(error, scope, receive, finished_send)
                return
            except Exception as error:
                outage = outage_response(error, scope)  # nothing was sent yet
                if outage is None:
                    # As the framework's outermost layer answers it: a 500 problem, and
                    # the error goes on to the server.
                    failed = await unexpected(Request(scope, receive), error)
                    await failed(scope, receive, finished_send)
                    raise
                await outage(scope, receive, finished_send)
                return
            if answer is None:
                return  # the client left before its order was whole: nothing to answer
            if isinstance(answer, bytes):  # not an order: the route's 400/422 problems
                recorded = False
                request_id.reset(begun[1])  # the middlewares behind record it
                await self.app(scope, _replay(answer, receive), send)
                return
            finished_send.status = status = answer.status
            finished_send.headers = response_headers = [
                (b"content-type", JSON_RAW),
                (b"content-length", b"%d" % len(answer.body)),
                *((_raw_name(name), value.encode()) for name, value in answer.headers.items()),
                (REQUEST_ID_RAW, begun[0].encode("latin-1")),
                *DEFAULT_HEADERS,
            ]
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            if recorded:
                telemetry.end(scope, begun, finished_send.status, finished_send.headers)

    async def _answer(
        self, scope: Scope, receive: Receive, services: Services
    ) -> placing.Answer | bytes | None:
        """The order's answer; the body if it is not a valid order; None if the client left."""
        headers = _Headers(scope["headers"])
        if headers.get("idempotency-key") is None:
            # Before anything is read. A retry with a key must get its stored answer
            # even when the service is full: it is decided after the key's lookup.
            # Fair shares only ever refuse more: with no room at all, the customer
            # in the body could not change the answer from a refusal to a place.
            services.admission.refuse_early(services.clock.seconds())
        if limits.declared_too_large(headers.get("content-length"), self.max_body_bytes):
            raise limits.BodyTooLarge(self.max_body_bytes)
        require_json(headers.get("content-type"))
        body = await _read_body(receive, self.max_body_bytes, self.body_timeout_s)
        if body is None:
            return None
        try:
            order_in = OrderCreate.model_validate_json(body)
        except ValidationError:
            return body
        return await _place(services, order_in, body, headers)


JSON_RAW = JSON.encode()
_SECURED = functools.partial(add_security_headers, path=PATH)
_RAW_NAMES: dict[str, bytes] = {}


def _raw_name(name: str) -> bytes:
    """A response header's name as sent (lower case), encoded once."""
    raw = _RAW_NAMES.get(name)
    if raw is None:
        raw = _RAW_NAMES[name] = name.lower().encode()
    return raw


# Refusals rendered once per distinct answer: under overload the same few are sent over
# and over (what they say changes only with the load). Bounded: cleared when full.
_REFUSALS: dict[tuple[Any, ...], tuple[list[tuple[bytes, bytes]], bytes, bytes]] = {}
MAX_CACHED_REFUSALS = 1024


async def _problem(error: RetailError, scope: Scope, receive: Receive, send: TaggedSend) -> None:
    """The problem response for `error`; a refusal (it says when to retry) from the cache,
    with the security headers already in it."""
    if error.retry_after_s is None:
        await retail_problem(error, instance=PATH)(scope, receive, send)
        return
    cached, _, body = _refusal(error)
    headers = list(cached)
    if error.retry_after_ms is not None:  # differs from one refusal to the next: not cached
        headers.append((b"retry-after-ms", b"%d" % error.retry_after_ms))
    await send.whole(error.status, headers, body)


def _refusal(error: RetailError) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
    """A refusal's headers (security headers in, `Retry-After-Ms` out), the same as the
    lines of an HTTP head, and its body: rendered once per distinct refusal."""
    key = (error.status, error.slug, error.detail, *sorted(error.extra.items()))
    rendered = _REFUSALS.get(key)
    if rendered is None:
        response = retail_problem(error, instance=PATH)
        same = [h for h in response.raw_headers if h[0] != b"retry-after-ms"]
        add_security_headers(same, PATH)
        lines = b"".join(b"%s: %s\r\n" % header for header in same)
        rendered = (same, lines, bytes(response.body))
        if len(_REFUSALS) >= MAX_CACHED_REFUSALS:
            _REFUSALS.clear()
        _REFUSALS[key] = rendered
    return rendered


def refusal_at_door(
    services: Services,
    telemetry: Telemetry,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None = None,
    *,
    max_body_bytes: int,
) -> tuple[int, bytes, bytes] | ReadBody | None:
    """A `POST /orders` refused at the door, for the HTTP protocol to write.

    What `OrderIntake` answers, with nothing of the request read but its headers: the
    status, the head's lines (the server's own aside) and the body; recorded as the
    intake records it. `READ_BODY` when every slot is held, some by orders admitted
    and not yet claimed, and fair shares are on: the request is read only so that
    they see its customer, and the door is asked again with its `body`, to refuse it
    (`placing.refuse_order`) without a request task. None when the request may be
    placed, or must go the whole way: it has an `Idempotency-Key` (a retry gets its
    stored answer, even when full) or expects `100 Continue`, or its body is not an
    order the service would refuse now (the app gives it its answer).
    """
    given = None
    for name, value in headers:
        if name == b"idempotency-key" or name == b"expect":
            return None
        if name == b"x-request-id":
            given = value
    started = services.clock.monotonic()
    try:
        if body is None:
            return READ_BODY if services.admission.refuse_early(services.clock.seconds()) else None
        order_in = _order(_Headers(headers), body, max_body_bytes)
        if order_in is None:
            return None
        placing.refuse_order(
            services,
            customer_id=order_in.customer_id,
            items=[(item.sku, item.quantity) for item in order_in.items],
            priority=order_in.priority,
            start_within_s=order_in.start_within_s,
        )
    except CapacityExceeded as error:
        refused = error
    else:
        return None
    rid = telemetry.request_id(given)
    _, lines, answer = _refusal(refused)
    head = [lines]
    if refused.retry_after_ms is not None:
        head.append(b"retry-after-ms: %d\r\n" % refused.retry_after_ms)
    head.append(b"x-request-id: %s\r\n" % rid.encode("latin-1"))
    status = refused.status
    telemetry.record("POST", ROUTE.path, PATH, status, services.clock.monotonic() - started, rid)
    return status, b"".join(head), answer


def _order(headers: _Headers, body: bytes, max_body_bytes: int) -> OrderCreate | None:
    """The order in a body read whole, if `OrderIntake` would place it; None if the
    intake or the route would answer it otherwise (size, media type, validation)."""
    if len(body) > max_body_bytes or not _is_json(headers.get("content-type")):
        return None
    try:
        return OrderCreate.model_validate_json(body)
    except ValidationError:
        return None


class _Headers:
    """The few request headers `POST /orders` reads, by lower-case name."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in raw
            if name in (b"idempotency-key", b"prefer", b"content-type", b"content-length")
        }

    def get(self, name: str) -> str | None:
        return self._values.get(name)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _read_body(receive: Receive, max_bytes: int, timeout_s: float) -> bytes | None:
    """The whole request body, or None if the client disconnected first.

    `BodyTooLarge` past `max_bytes`; `BodyTimeout` if it is not whole within `timeout_s`
    (`limits.BodyDeadlines` cancels this task then: what `asyncio.timeout` does, without
    a timer per request, which costs more than reading a small body).
    """
    task = asyncio.current_task()
    assert task is not None
    deadlines = limits.BodyDeadlines.for_loop(task.get_loop())
    tick = deadlines.start(task, timeout_s)
    stopped = False
    chunks = []
    size = 0
    try:
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
    except asyncio.CancelledError:
        stopped = True
        # Ours only if the deadline cancelled it and nobody else did as well.
        if deadlines.stop(task, tick) and task.uncancel() == 0:
            raise BodyTimeout(
                f"The request body did not arrive within {timeout_s:g} s; send it whole and retry."
            ) from None
        raise
    finally:
        if not stopped:
            deadlines.stop(task, tick)


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
