"""`retail serve` limits each request's head: size, time; and its log lines stay lines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import Server, server_in


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with server_in(tmp_path, header_timeout_s=1, max_header_bytes=16384, fulfilment_delay=0) as s:
        yield s


def connect(server: Server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_huge_header_is_refused_at_once(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(1024):  # up to 1 MB; the server answers and closes long before
                sock.sendall(b"a" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"application/problem+json" in answer
    # Everyone else is served as usual.
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_slowloris_connections_are_dropped(server: Server) -> None:
    slow = [connect(server) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends its head
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        for sock in slow:
            answer = read_all(sock)  # the server closes it after header_timeout_s (1 s)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
    finally:
        for sock in slow:
            sock.close()
    with connect(server) as idle:  # connected, and nothing sent at all
        assert read_all(idle).startswith(b"HTTP/1.1 408 ")


def test_keep_alive_requests_are_unaffected(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.1)
        big_enough = {"X-Fill": "a" * 8000}  # under the limit
        assert client.get("/healthz", headers=big_enough).status_code == 200


def test_a_malformed_request_gets_a_problem(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"application/problem+json" in answer


def test_a_forged_log_line_stays_one_line(server: Server) -> None:
    forged = "2026-01-01 00:00:00,000 ERROR retail: forged"
    response = httpx.get(f"{server.url}/x%0A{forged.replace(' ', '%20')}", timeout=5)
    assert response.status_code == 404
    deadline = time.monotonic() + 10  # the access line is written after the response
    while "/x\\n2026-01-01" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.output().splitlines()
    assert any("/x\\n2026-01-01" in line for line in lines)
    assert not any(line.startswith(forged) for line in lines)
