"""`retail serve` refuses a `POST /orders` at the door: from its head alone, as the
request arrives, with the answer the app gives, and the connection stays usable."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import Server, server_in

BODY = json.dumps({"customer_id": "door", "items": [{"sku": "MUG-1", "quantity": 1}]}).encode()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Reject mode, one slot, held by an order (key `first`) for ten minutes."""
    folder: Path = tmp_path_factory.mktemp("door")
    with server_in(
        folder, overload_mode="reject", capacity=1, fulfilment_delay=600, fair_share="false"
    ) as server:
        first = httpx.post(
            f"{server.url}/orders",
            content=BODY,
            headers={"Content-Type": "application/json", "Idempotency-Key": "first"},
            timeout=10,
        )
        assert first.status_code == 202, first.text
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/capacity", timeout=5).json()["in_flight"] < 1:
            assert time.monotonic() < deadline, "the first order never started"
            time.sleep(0.05)
        yield server


def connect(server: Server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def head(extra: bytes = b"", *, length: int = len(BODY)) -> bytes:
    return (
        b"POST /orders HTTP/1.1\r\nHost: retail\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n" % (length, extra)
    )


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` whole answers from the connection: status, headers, body."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        raw_head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, value = line.split(":", 1)
            assert name.lower() not in headers, f"{name} twice"
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])
        while len(buffer) < length:
            buffer += sock.recv(65536)
        answers.append((int(status_line.split()[1]), headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_a_refusal_at_the_door_keeps_the_connection(full: Server) -> None:
    chunked = (
        b"POST /orders HTTP/1.1\r\nHost: retail\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    )
    with connect(full) as sock:
        # The head first, its body later in two pieces: refused before the body is read,
        # and the body, when it comes, is dropped.
        sock.sendall(head(b"X-Request-ID: door-1\r\n"))
        ((status, headers, body),) = read_answers(sock, 1)
        sock.sendall(BODY[:7])
        time.sleep(0.05)
        sock.sendall(BODY[7:])
        # Then a chunked one and a plain read, sent at once, answered in order.
        sock.sendall(chunked + b"GET /healthz HTTP/1.1\r\nHost: retail\r\n\r\n")
        (chunk_status, _, _), (health_status, _, health) = read_answers(sock, 2)
    assert status == chunk_status == 503
    assert health_status == 200 and json.loads(health)["status"] == "ok"
    assert headers["x-request-id"] == "door-1"
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1
    problem = json.loads(body)
    assert problem["type"] == "/problems/capacity-exceeded"
    assert (problem["status"], problem["instance"], problem["in_flight"]) == (503, "/orders", 1)
    assert problem["retry_after_s"] == int(headers["retry-after"])


def test_the_door_answers_as_the_app_does(full: Server) -> None:
    with connect(full) as sock:
        sock.sendall(head() + BODY)
        # `Expect: 100-continue` is left to the app, which refuses before asking for the body.
        sock.sendall(head(b"Expect: 100-continue\r\n"))
        (door_status, door, door_body), (app_status, app, app_body) = read_answers(sock, 2)
    assert door_status == app_status == 503
    for varying in ("date", "x-request-id", "retry-after", "retry-after-ms"):
        assert door.pop(varying) and app.pop(varying)
    assert door == app
    door_problem, app_problem = json.loads(door_body), json.loads(app_body)
    for problem in (door_problem, app_problem):
        assert problem.pop("detail").endswith(f"Retry in {problem.pop('retry_after_s')} s.")
    assert door_problem == app_problem


def test_a_keyed_retry_still_gets_its_stored_answer(full: Server) -> None:
    replayed = httpx.post(
        f"{full.url}/orders",
        content=BODY,
        headers={"Content-Type": "application/json", "Idempotency-Key": "first"},
        timeout=10,
    )
    assert replayed.status_code == 202
    assert replayed.headers["idempotent-replayed"] == "true"


def test_refusals_at_the_door_are_counted_and_logged(full: Server) -> None:
    def refused_so_far() -> float:
        metrics = httpx.get(f"{full.url}/metrics", timeout=5).text
        wanted = 'retail_http_requests_total{method="POST",route="/orders",status="503"}'
        lines = [line for line in metrics.splitlines() if line.startswith(wanted)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = refused_so_far()
    with connect(full) as sock:
        sock.sendall((head(b"X-Request-ID: counted-1\r\n") + BODY) * 3)
        assert [status for status, _, _ in read_answers(sock, 3)] == [503] * 3
    assert refused_so_far() == before + 3
    capacity = httpx.get(f"{full.url}/capacity", timeout=5).json()
    assert capacity["counters"]["rejected"] >= 3
    # Refusal lines are rate limited (one per status every few seconds): the first of
    # this module's refusals was logged, with its request id.
    deadline = time.monotonic() + 5
    while "POST /orders 503" not in full.output():
        assert time.monotonic() < deadline, full.output()[-2000:]
        time.sleep(0.05)
