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

The close lingers (as Apache's does): the answer goes out, then the sending side is
shut (FIN) and whatever the client still sends is read and dropped until it closes
its side or `LINGER_S` passes. Closing at once while the client is still sending
makes the kernel reset the connection, and a reset can discard the answer before
the client has read it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROBLEM_MEDIA_TYPE = b"application/problem+json"
LINGER_S = 2.0  # how long a refused connection's late bytes are read and dropped
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        self._stop_head_timer()
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

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._refuse(
                408,
                "request-timeout",
                "Request timeout",
                f"The request line and headers did not arrive within {self.header_timeout_s:g} s.",
            )

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a keep-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed-request", "Malformed request", msg)


def guarded_protocol(*, max_header_bytes: int, header_timeout_s: float) -> type[GuardedHttpTools]:
    """The protocol class with these limits (uvicorn takes a class, not an instance)."""
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
