"""Per-request telemetry: a request id, one log line, and the HTTP metrics.

`RequestTelemetry` sits outside every middleware but the `POST /orders` fast path,
which records its own answers with the same `Telemetry`: every answer is seen (413s,
503s, problems). The request id is the client's `X-Request-ID` when that is a sane
token, else a new one; it is echoed in the response and tags every log line of the
request. Metrics are labelled by route template (`/orders/{order_id}`), never by raw
path.

Refusals (`429`, `503`) come in floods when the service is full: their lines are
logged at most once per status every `RATE_LIMIT_INTERVAL_S`, the next one saying
how many were left out (the metrics count every one), so a refusal stays cheap.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from contextvars import Token

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.runtime.clock import Clock
from retail.runtime.logs import RateLimit, left_out_note, log_line, request_id
from retail.runtime.metrics import Metrics
from retail.web.middleware import HttpMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode()
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+/=@-]{0,127}$")
UNMATCHED_ROUTE = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access = logging.getLogger("retail.http")
REFUSAL_STATUSES = frozenset({429, 503})


def sane_request_id(value: str | None) -> str | None:
    """The client's request id if it is 1-128 token characters, else None."""
    if value is not None and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return None


def route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class Telemetry:
    """What every request records: its id (set for its log lines), its metrics, its line.

    Shared by `RequestTelemetry` and the `POST /orders` fast path, which records its
    requests itself (one rate limit for the refusal lines of both).
    """

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self.metrics = metrics
        self.clock = clock
        self.refusals = RateLimit()  # one line per refusal status every few seconds

    def begin(self, scope: Scope) -> tuple[str, Token[str | None], float]:
        """The request's id (now in force for its log lines), its token, its start time."""
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        rid = self.request_id(given)
        return rid, request_id.set(rid), self.clock.monotonic()

    @staticmethod
    def request_id(given: bytes | None) -> str:
        """The client's `X-Request-ID` if it is sane, else a new one."""
        rid = None if given is None else sane_request_id(given.decode("latin-1"))
        # A name to find a request's lines by, not a secret: 128 random bits without a
        # system call (the module's generator is seeded again in a forked child).
        return rid or f"{random.getrandbits(128):032x}"

    def end(
        self,
        scope: Scope,
        begun: tuple[str, Token[str | None], float],
        status: int,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Count the request and log its line; its id goes out of force."""
        rid, token, started = begun
        method = scope["method"]
        seconds = self.clock.monotonic() - started
        self.record(method, route_template(scope), scope["path"], status, seconds, rid, headers)
        request_id.reset(token)

    def record(
        self,
        method: str,
        route: str,
        path: str,
        status: int,
        seconds: float,
        rid: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Count an answered request and log its line (refusals: at most one a while)."""
        label = method if method in METHODS else "other"  # a client cannot add series
        self.metrics.http_request(label, route, status, seconds)
        if access.isEnabledFor(logging.INFO):
            self._log(method, path, status, seconds, rid, headers)

    def _log(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        rid: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        note = ""
        if status in REFUSAL_STATUSES:
            left_out = self.refusals.passes(f"refused {status}", self.clock.monotonic())
            if left_out is None:
                return
            note = left_out_note(left_out)
        order_id = None
        for name, value in headers:
            if name == b"location":
                if value.startswith(b"/orders/"):
                    order_id = value[8:].decode("latin-1")
                break
        milliseconds = seconds * 1000
        fields: dict[str, object] = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(milliseconds, 3),
        }
        if order_id:
            fields["order_id"] = order_id
        log_line(
            access,
            logging.INFO,
            "%s %s %d %.1fms%s%s",
            method,
            path,
            status,
            milliseconds,
            f" order_id={order_id}" if order_id else "",
            note,
            request_id=rid,
            fields=fields,
        )


class RequestTelemetry(HttpMiddleware):
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        super().__init__(app)
        self.telemetry = telemetry

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        begun = self.telemetry.begin(scope)
        tagged = TaggedSend(send, begun[0])
        try:
            await self.app(scope, receive, tagged)
        finally:
            self.telemetry.end(scope, begun, tagged.status, tagged.headers)


class TaggedSend:
    """`send` for a recorded request: the response's headers gain the request id (and
    what `extra` adds to them); its status and headers are kept for `Telemetry.end`."""

    __slots__ = ("_extra", "_rid", "_send", "headers", "status")

    def __init__(
        self,
        send: Send,
        rid: str,
        extra: Callable[[list[tuple[bytes, bytes]]], None] | None = None,
    ) -> None:
        self._send = send
        self._rid = rid.encode("latin-1")
        self._extra = extra
        self.status = 500  # unless a response starts: the server answers an exception with 500
        self.headers: list[tuple[bytes, bytes]] = []

    async def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response whose `headers` are complete but for the request id (so
        `extra` is not applied); kept for `Telemetry.end` as `__call__` keeps them."""
        headers.append((REQUEST_ID_RAW, self._rid))
        self.status, self.headers = status, headers
        send = self._send
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = self.headers = [*message.get("headers", ()), (REQUEST_ID_RAW, self._rid)]
            if self._extra is not None:
                self._extra(headers)
            message["headers"] = headers
        await self._send(message)
