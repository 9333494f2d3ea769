"""The HTTP protocol `retail serve` runs: uvicorn's httptools protocol with limits on the
request head.

uvicorn bounds neither the size of the request line and headers (its httptools parser
buffers them whole) nor the time a client may take to send them, so one client can
pin the event loop with a huge header or hold connections open forever with a few
bytes at a time (slowloris). Here a client that sends more than `max_header_bytes`
before its headers end gets `431`, and one that has not sent its whole head
`header_timeout_s` after connecting (or after starting its next request on a
keep-alive connection) gets `408`; both connections are closed. A request the parser
refuses gets a `400` problem document instead of uvicorn's plain text.

A door (`retail.web.app.RetailApp.refuse_at_door`) may answer a request from its head
alone: the answer is written as the head ends, with no request task, no ASGI
messages and one write, and the body that follows is read and dropped. Under
overload that is what most `POST /orders` get (a refusal needs no routing, no body
and no database). Only a request alone on its keep-alive HTTP/1.1 connection is
offered to the door; any other goes the usual way. The door may ask for the body
(`READ_BODY`): if the whole request arrives with its head (in the same read), the
door is asked again with it; else, or if the door does not answer then, the request
goes to the app as it would have, its body with it.

The close lingers (as Apache's does): the answer goes out, then the sending side is
shut (FIN) and whatever the client still sends is read and dropped until it closes
its side or `LINGER_S` passes. Closing at once while the client is still sending
makes the kernel reset the connection, and a reset can discard the answer before
the client has read it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = b"application/problem+json"
LINGER_S = 2.0  # how long a refused connection's late bytes are read and dropped
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class ReadBody:
    """What a door answers when it decides only with the request's body."""


READ_BODY = ReadBody()

# Given a request's method, target, headers and body (None: not read yet): None (go
# on), `READ_BODY`, or the whole answer as (status, the head's lines but the server's
# own, body).
Door = Callable[
    [bytes, bytes, list[tuple[bytes, bytes]], bytes | None],
    "tuple[int, bytes, bytes] | ReadBody | None",
]


class _NoEvent:
    @staticmethod
    def set() -> None:
        pass


class _Answered:
    """Stands for the request cycle of a request answered at the door: complete, so
    uvicorn drops the rest of its body as it arrives."""

    response_complete = True
    keep_alive = True
    message_event = _NoEvent()


ANSWERED = _Answered()
_SERVER_LINES: tuple[object, bytes] = (None, b"")


def _lines(server_state: Any) -> bytes:
    """The server's own headers (`date`, `server`) as lines of a head; the list is
    replaced when the date changes, once a second."""
    global _SERVER_LINES
    headers = server_state.default_headers
    seen, lines = _SERVER_LINES
    if headers is not seen:
        lines = b"".join(b"%s: %s\r\n" % header for header in headers)
        _SERVER_LINES = (headers, lines)
    return lines


def problem_bytes(status: int, slug: str, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 problem response that closes the connection."""
    body = json.dumps(
        {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    ).encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status]),
            b"content-type: " + PROBLEM_MEDIA_TYPE + b"\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpTools(HttpToolsProtocol):
    """httptools with a size and a time limit on each request's head."""

    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    door: Door | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._lingering = False
        self._body: list[bytes] | None = None  # a request's body read for the door
        # One timer per connection for both of its time limits, moved lazily: a request
        # only notes its deadlines (a float each), and the timer, when it fires, acts on
        # a deadline passed or sets itself for the next. Armed and cancelled for every
        # request (as uvicorn does for keep-alive), two timers cost more than a refusal's
        # whole decision.
        self._head_deadline: float | None = None  # the head must be whole by then
        self._idle_since: float | None = None  # answered, and nothing received since
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        self._wake_by(self._head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_deadline = self.loop.time() + self.header_timeout_s

    def _wake_by(self, deadline: float | None) -> None:
        """Make the timer fire at `deadline` at the latest."""
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._timed_out)
        self._timer_at = deadline

    def _stop_timer(self) -> None:
        self._head_deadline = self._idle_since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        now = self.loop.time()
        head = self._head_deadline
        if head is not None and now >= head:
            self._head_deadline = None
            if self._in_head and (self.cycle is None or self.cycle.response_complete):
                self._refuse(
                    408,
                    "request-timeout",
                    "Request timeout",
                    "The request line and headers did not arrive within "
                    f"{self.header_timeout_s:g} s.",
                )
                return
        idle = self._idle_since
        if idle is not None and now >= idle + self.timeout_keep_alive:
            self.timeout_keep_alive_handler()  # as uvicorn's keep-alive timer: closed
            return
        self._wake_by(self._head_deadline)
        if idle is not None:
            self._wake_by(idle + self.timeout_keep_alive)

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls it when data arrives (and as the connection is lost): no longer idle.
        self._idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timeout noted rather than a timer armed.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = idle = self.loop.time()
            self._wake_by(idle + self.timeout_keep_alive)  # as a rule, set already

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        self._stop_timer()
        if self._lingering or self.transport.is_closing():
            return
        self.transport.write(problem_bytes(status, slug, title, detail))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(min(LINGER_S, self.header_timeout_s), self.transport.close)

    def eof_received(self) -> None:
        if self._lingering:  # the client has read the answer and closed its side
            self.transport.close()
        else:
            super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a refusal: read and dropped until the client closes
        while data and self._in_head and not self.transport.is_closing():
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(
                    431,
                    "headers-too-large",
                    "Request header fields too large",
                    f"The request line and headers exceed {self.max_header_bytes} bytes.",
                )
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)
        if self._body is not None:
            # The door asked for a body that did not come whole with the head: the app
            # reads it (bounded in time and size) as any other.
            read, self._body = self._body, None
            self._hand_on(b"".join(read), complete=False)
        if self._in_head and self._head_deadline is not None:
            self._wake_by(self._head_deadline)  # a head not whole yet: its limit holds

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a keep-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = None
        if self.door is None or not self._at_door(self.door):
            super().on_headers_complete()

    def _at_door(self, door: Door) -> bool:
        """Whether the door answered the request, or waits for its body."""
        if (
            self.pipeline
            or not (self.cycle is None or self.cycle.response_complete)
            or self.flow.write_paused
            or self.root_path
            or self.parser.get_http_version() != "1.1"
            or not self.parser.should_keep_alive()
        ):
            return False
        answer = self._ask(door, None)
        if answer is READ_BODY:
            self._body = []
            return True
        return self._answered(answer)

    def _ask(self, door: Door, body: bytes | None) -> tuple[int, bytes, bytes] | ReadBody | None:
        try:
            return door(self.parser.get_method(), self.url, self.headers, body)
        except Exception:  # the app, behind, answers the request as it would any other
            log.exception("the door failed; the request goes on to the app")
            return None

    def _answered(self, answer: tuple[int, bytes, bytes] | ReadBody | None) -> bool:
        if not isinstance(answer, tuple):
            return False
        status, head, body = answer
        self.transport.write(
            b"".join((STATUS_LINE[status], _lines(self.server_state), head, b"\r\n", body))
        )
        self.cycle = ANSWERED  # type: ignore[assignment]
        self.on_response_complete()
        return True

    def _hand_on(self, body: bytes, *, complete: bool) -> None:
        """The request the door read part or all of goes to the app, as if just parsed."""
        super().on_headers_complete()
        if body:
            super().on_body(body)
        if complete:
            super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.append(body)  # for the door: at most what one read brought
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        if self._body is None:
            super().on_message_complete()
            return
        read, self._body = b"".join(self._body), None
        door = self.door
        assert door is not None
        if not self._answered(self._ask(door, read)):
            self._hand_on(read, complete=True)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed-request", "Malformed request", msg)


def guarded_protocol(
    *, max_header_bytes: int, header_timeout_s: float, door: Door | None = None
) -> type[GuardedHttpTools]:
    """The protocol class with these limits and this door (uvicorn takes a class, not
    an instance)."""
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "door": staticmethod(door) if door is not None else None,
        },
    )
