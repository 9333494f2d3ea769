"""The HTTP protocol's door: a request answered from its head alone never reaches the
app, its body is dropped, and the connection goes on; anything else reaches the app."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from retail.web.protocol import guarded_protocol
from tests.serving import serve_in_thread
from tests.test_door import read_answers

REFUSAL = (503, b"content-type: text/plain\r\ncontent-length: 4\r\nx-door: yes\r\n", b"full")


class App:
    """Answers 200 with the body it read; remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def door(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    if target == b"/broken":
        raise RuntimeError("a bug in the door")
    if method == b"POST" and target == b"/full" and (b"expect", b"100-continue") not in headers:
        return REFUSAL
    return None


@pytest.fixture
def served() -> Iterator[tuple[App, socket.socket]]:
    app = App()
    protocol = guarded_protocol(max_header_bytes=16384, header_timeout_s=5, door=door)
    with serve_in_thread(app, http=protocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            yield app, sock


def post(
    path: bytes, body: bytes, extra: bytes = b"", version: bytes = b"1.1", length: int = -1
) -> bytes:
    """A request with `body` (or only its head, declaring `length` bytes to come)."""
    declared = len(body) if length < 0 else length
    return b"POST %s HTTP/%s\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path,
        version,
        declared,
        extra,
        body,
    )


def test_answered_at_the_door_and_the_body_dropped(served: tuple[App, socket.socket]) -> None:
    app, sock = served
    sock.sendall(post(b"/full", b"x" * 5000) + post(b"/open", b"kept") + post(b"/full", b"y"))
    answers = read_answers(sock, 3)
    # The third arrives while the app still has the second: it waits its turn and goes
    # the usual way (answers leave in order).
    assert [(status, body) for status, _, body in answers] == [
        (503, b"full"),
        (200, b"kept"),
        (200, b"y"),
    ]
    assert answers[0][1]["x-door"] == "yes"
    assert "date" in answers[0][1] and "server" in answers[0][1]  # the server's own headers
    assert app.seen == [("POST", "/open", b"kept"), ("POST", "/full", b"y")]
    sock.sendall(post(b"/full", b"z"))  # alone again: at the door
    assert [(status, body) for status, _, body in read_answers(sock, 1)] == [(503, b"full")]
    assert len(app.seen) == 2


def test_what_the_door_declines_reaches_the_app(served: tuple[App, socket.socket]) -> None:
    app, sock = served
    sock.sendall(post(b"/full", b"", b"Expect: 100-continue\r\n", length=4))
    continued = b"HTTP/1.1 100 Continue\r\n\r\n"  # the app reads the body: asked for
    assert sock.recv(len(continued), socket.MSG_WAITALL) == continued
    sock.sendall(b"wait")
    ((status, _, body),) = read_answers(sock, 1)
    assert (status, body) == (200, b"wait")
    assert app.seen == [("POST", "/full", b"wait")]


def test_only_keep_alive_http_1_1_is_offered_to_the_door(
    served: tuple[App, socket.socket],
) -> None:
    app, sock = served
    sock.sendall(post(b"/full", b"old", version=b"1.0"))
    ((status, _, body),) = read_answers(sock, 1)
    assert (status, body) == (200, b"old")
    assert app.seen == [("POST", "/full", b"old")]
    assert sock.recv(100) == b""  # HTTP/1.0 without keep-alive: closed after the answer


def test_a_door_that_fails_leaves_the_request_to_the_app(
    served: tuple[App, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    app, sock = served
    sock.sendall(post(b"/broken", b"on"))
    ((status, _, body),) = read_answers(sock, 1)
    assert (status, body) == (200, b"on")
    assert app.seen == [("POST", "/broken", b"on")]
    assert "the door failed" in caplog.text
