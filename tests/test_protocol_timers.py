"""The HTTP protocol's two time limits per connection, kept by one lazy timer: a head
must be whole within `header_timeout_s` of its first byte (else `408`), and a
keep-alive connection idle for `timeout_keep_alive` after an answer is closed; a
connection that keeps sending whole requests is never cut, however long it lives."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from retail.web.protocol import guarded_protocol
from tests.serving import serve_in_thread
from tests.test_door import read_answers
from tests.test_protocol_door import App, post

HEAD_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0  # whole seconds, as the setting takes them


@pytest.fixture
def port() -> Iterator[int]:
    protocol = guarded_protocol(max_header_bytes=16384, header_timeout_s=HEAD_TIMEOUT_S)
    with serve_in_thread(App(), http=protocol, timeout_keep_alive=KEEP_ALIVE_S) as url:
        yield int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def closed_after(sock: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it sent before."""
    started = time.monotonic()
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return time.monotonic() - started, received


def test_a_busy_connection_outlives_both_limits(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.5 * HEAD_TIMEOUT_S:
            time.sleep(KEEP_ALIVE_S / 5)  # idle, but never for the keep-alive limit
            sock.sendall(post(b"/open", b"%d" % sent))
            ((status, _, body),) = read_answers(sock, 1)
            assert (status, body) == (200, b"%d" % sent)
            sent += 1
        # Then idle: closed once the keep-alive limit has passed, not before.
        waited, received = closed_after(sock)
    assert received == b""
    assert KEEP_ALIVE_S / 2 <= waited < KEEP_ALIVE_S + 1.0


def test_a_head_in_pieces_within_its_limit_is_answered(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(post(b"/open", b"first"))  # a keep-alive connection in use
        assert [status for status, _, _ in read_answers(sock, 1)] == [200]
        request = post(b"/open", b"second")
        pieces = [request[i : i + 8] for i in range(0, len(request), 8)]
        pause = HEAD_TIMEOUT_S / 2 / len(pieces)
        for piece in pieces:  # the whole head within half its limit
            sock.sendall(piece)
            time.sleep(pause)
        assert [(s, b) for s, _, b in read_answers(sock, 1)] == [(200, b"second")]


def test_the_next_head_on_a_keep_alive_connection_has_its_limit(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(post(b"/open", b"first"))
        assert [status for status, _, _ in read_answers(sock, 1)] == [200]
        sock.sendall(b"POST /open HTTP/1.1\r\nHost: t\r\n")  # a head that never ends
        waited, received = closed_after(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert HEAD_TIMEOUT_S / 2 <= waited < HEAD_TIMEOUT_S + 1.0
