"""The HTTP protocol's door: a request answered from its head alone never reaches the
app, its body is dropped, and the connection goes on; a door that asks for the body
gets it when it came whole with the head; anything else reaches the app, whole."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from retail.web.protocol import READ_BODY, guarded_protocol
from tests.serving import serve_in_thread
from tests.test_door import read_answers

REFUSAL = (503, b"content-type: text/plain\r\ncontent-length: 4\r\nx-door: yes\r\n", b"full")


class App:
    """Answers 200 with the body it read; remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.begun = threading.Event()  # a request reached the app (its body may not have)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.begun.set()
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


BODIES_ASKED: list[bytes] = []  # the bodies the door was given, in order


def door(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: Any) -> Any:
    if target == b"/broken":
        raise RuntimeError("a bug in the door")
    if target in (b"/read", b"/read-broken"):  # decided on the body
        if body is None:
            return READ_BODY
        BODIES_ASKED.append(body)
        if target == b"/read-broken":
            raise RuntimeError("a bug in the door, with the body")
        return REFUSAL if body == b"no" else None
    if method == b"POST" and target == b"/full" and (b"expect", b"100-continue") not in headers:
        return REFUSAL
    return None


@pytest.fixture
def served() -> Iterator[tuple[App, socket.socket]]:
    app = App()
    BODIES_ASKED.clear()
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


def test_a_door_that_asks_for_the_body_decides_on_it(served: tuple[App, socket.socket]) -> None:
    app, sock = served
    sock.sendall(post(b"/read", b"no"))
    ((status, headers, body),) = read_answers(sock, 1)
    assert (status, body, headers["x-door"]) == (503, b"full", "yes")
    sock.sendall(post(b"/read", b"yes"))  # the door lets it pass: the app reads it whole
    assert [(status, body) for status, _, body in read_answers(sock, 1)] == [(200, b"yes")]
    chunked = b"POST /read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock.sendall(chunked + b"1\r\nn\r\n1\r\no\r\n0\r\n\r\n")  # de-chunked for the door
    assert [(status, body) for status, _, body in read_answers(sock, 1)] == [(503, b"full")]
    # Pipelined: the first is refused on its body, the one behind it goes its way.
    sock.sendall(post(b"/read", b"no") + post(b"/open", b"next"))
    answers = read_answers(sock, 2)
    assert [(status, body) for status, _, body in answers] == [(503, b"full"), (200, b"next")]
    assert BODIES_ASKED == [b"no", b"yes", b"no", b"no"]
    assert app.seen == [("POST", "/read", b"yes"), ("POST", "/open", b"next")]


def test_a_body_that_comes_later_goes_to_the_app(served: tuple[App, socket.socket]) -> None:
    app, sock = served
    sock.sendall(post(b"/read", b"n", length=2))  # the head and half the body
    assert app.begun.wait(10)  # handed to the app at once, with what came
    assert not app.seen
    sock.sendall(b"o")
    assert [(status, body) for status, _, body in read_answers(sock, 1)] == [(200, b"no")]
    assert app.seen == [("POST", "/read", b"no")]
    assert BODIES_ASKED == []  # asked only of a body whole with its head


def test_a_door_that_fails_on_the_body_leaves_the_request_to_the_app(
    served: tuple[App, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    app, sock = served
    sock.sendall(post(b"/read-broken", b"no"))
    assert [(status, body) for status, _, body in read_answers(sock, 1)] == [(200, b"no")]
    assert app.seen == [("POST", "/read-broken", b"no")]
    assert "the door failed" in caplog.text
