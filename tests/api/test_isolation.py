"""Poison input, overflow, exposure and access: refused at the edge, one request at a time."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from retail.core.access import order_token, verify_order_token
from retail.runtime.logs import RateLimit, TextFormatter, escape_controls
from retail.web.cursors import InvalidCursor, decode_cursor, encode_cursor
from retail.web.security import origin_allowed
from tests.conftest import ADMIN, StartApp, place

NUL_ORDER = {"customer_id": "mallory\u0000", "items": [{"sku": "MUG-1", "quantity": 1}]}


async def test_a_nul_order_in_a_batch_fails_alone(start_app: StartApp) -> None:
    running = await start_app(capacity=100, queue_limit=1000)
    client = running.client
    good = [place(client, customer=f"c{i}") for i in range(40)]
    answers = await asyncio.gather(*good[:20], client.post("/orders", json=NUL_ORDER), *good[20:])
    poisoned = answers[20]
    assert poisoned.status_code == 422, poisoned.text
    assert poisoned.json()["errors"][0]["field"] == "customer_id"
    assert [a.status_code for a in answers[:20] + answers[21:]] == [202] * 40
    listed = (await client.get("/orders", params={"limit": 200})).json()["items"]
    assert len(listed) == 40


@pytest.mark.parametrize(
    "text", ["a\u0000b", "a\nb", "tab\there", "\u0085x", " lead", "trail ", "del\u007f"]
)
async def test_control_characters_are_refused_at_the_edge(start_app: StartApp, text: str) -> None:
    running = await start_app()
    client = running.client
    order = {"customer_id": text, "items": [{"sku": "MUG-1", "quantity": 1}]}
    assert (await client.post("/orders", json=order)).status_code == 422
    listed = await client.get("/orders", params={"customer_id": text})
    assert listed.status_code == 422
    assert listed.headers["content-type"] == "application/problem+json"
    product = {"name": text, "unit_price": 100, "stock": 1}
    assert (await client.put("/products/LAMP-9", json=product, headers=ADMIN)).status_code == 422
    # Text that is merely unusual is fine.
    fine = {"customer_id": "Zoë O'Brien 🙂", "items": [{"sku": "MUG-1", "quantity": 1}]}
    assert (await client.post("/orders", json=fine)).status_code == 202


async def test_the_rule_is_stated_in_openapi(start_app: StartApp) -> None:
    running = await start_app()
    spec = running.app.openapi()
    order = spec["components"]["schemas"]["OrderCreate"]["properties"]["customer_id"]
    assert "\\x00-\\x1f" in order["pattern"]
    params = spec["paths"]["/orders"]["get"]["parameters"]
    customer = next(p for p in params if p["name"] == "customer_id")
    assert customer["schema"]["anyOf"][0]["pattern"] == order["pattern"]


async def test_overflowing_cursor_and_last_event_id_are_400(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    client = running.client
    order_id = (await place(client)).json()["id"]
    for cursor in ("czkyMjMzNzIwMzY4NTQ3NzU4MDg", "s" + "9" * 40, "!!"):
        response = await client.get("/orders", params={"cursor": cursor})
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "/problems/invalid-cursor"
    for value in ("9223372036854775808", "-1", "1e3", "x", "9" * 50):
        response = await client.get(
            f"/orders/{order_id}/events",
            headers={"Accept": "text/event-stream", "Last-Event-ID": value},
        )
        assert response.status_code == 400, (value, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_the_cursor_hides_the_sequence_number(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    client = running.client
    for i in range(3):
        await place(client, customer=f"c{i}")
    first = (await client.get("/orders", params={"limit": 1})).json()["next_cursor"]
    again = (await client.get("/orders", params={"limit": 1})).json()["next_cursor"]
    assert first != again  # a fresh nonce each time: nothing to compare or count
    raw = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    assert b"s" not in raw[:1] and not raw.isascii()
    tampered = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
    assert (await client.get("/orders", params={"cursor": tampered})).status_code == 400
    page = (await client.get("/orders", params={"limit": 1, "cursor": first})).json()
    assert len(page["items"]) == 1


def test_cursor_round_trip_and_keys() -> None:
    key = b"k" * 32
    for seq in (0, 1, 2**40, 2**63 - 1):
        assert decode_cursor(encode_cursor(seq, key), key) == seq
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(5, key), b"other")


async def test_405_lists_every_allowed_method(start_app: StartApp) -> None:
    running = await start_app()
    response = await running.client.delete("/orders")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


async def test_security_headers_on_every_response(start_app: StartApp) -> None:
    running = await start_app()
    for path in ("/orders", "/", "/docs", "/no-such-page", "/static/dashboard.js"):
        response = await running.client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, path
    dashboard = (await running.client.get("/")).headers["content-security-policy"]
    assert "default-src 'self'" in dashboard and "unsafe-inline" not in dashboard


def test_websocket_origin_rule() -> None:
    def headers(origin: str | None, host: str = "shop.test:8000") -> list[tuple[bytes, bytes]]:
        pairs = [(b"host", host.encode())]
        return pairs + ([(b"origin", origin.encode())] if origin else [])

    assert origin_allowed(headers(None), [])
    assert origin_allowed(headers("http://shop.test:8000"), [])
    assert not origin_allowed(headers("http://evil.test"), [])
    assert not origin_allowed(headers("null"), [])
    assert origin_allowed(headers("https://admin.shop.test"), ["https://admin.shop.test"])
    assert origin_allowed(headers("http://evil.test"), ["*"])


async def test_token_mode_guards_reading_and_cancelling(start_app: StartApp) -> None:
    running = await start_app(
        order_access="token", secret_key="s" * 32, workers_enabled=False, fulfilment_delay="60"
    )
    client = running.client
    placed = await place(client)
    order_id = placed.json()["id"]
    location = placed.headers["location"]
    key = running.settings.signing_key()
    token = placed.headers["order-token"]  # handed out with the 202
    assert token == order_token(uuid.UUID(order_id), key)
    assert verify_order_token(uuid.UUID(order_id), token, key)
    for method, path in (
        ("GET", location),
        ("GET", f"{location}/events"),
        ("POST", f"{location}/cancel"),
    ):
        refused = await client.request(method, path)
        assert refused.status_code == 403, (method, path)
        assert refused.json()["type"] == "/problems/order-token-required"
        wrong = await client.request(method, path, headers={"Order-Token": "x" * 24})
        assert wrong.status_code == 403
    assert (await client.get(location, headers={"Order-Token": token})).status_code == 200
    assert (await client.get(f"{location}/events", params={"token": token})).status_code == 200
    assert (await client.get("/orders")).status_code == 403
    assert (await client.get("/orders", headers=ADMIN)).status_code == 200
    cancelled = await client.post(f"{location}/cancel", headers={"Order-Token": token})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


async def test_open_mode_needs_no_token(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    location = (await place(running.client)).headers["location"]
    assert (await running.client.get(location)).status_code == 200
    assert (await running.client.get("/orders")).status_code == 200


def test_token_mode_needs_a_secret_key() -> None:
    from pydantic import ValidationError

    from retail.config import Settings

    with pytest.raises(ValidationError, match="RETAIL_SECRET_KEY"):
        Settings(_env_file=None, order_access="token")  # type: ignore[call-arg]


# --- logs: one line stays one line; one cause, a few lines ----------------------------


def test_control_characters_in_logged_values_are_escaped() -> None:
    record = logging.LogRecord(
        "retail.http", logging.INFO, __file__, 1, "%s %s", ("GET", "/x\n2026 INFO forged"), None
    )
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "/x\\n2026 INFO forged" in line
    assert escape_controls("a\x00\r\u2028") == "a\\x00\\r\\u2028"


def test_rate_limit_lets_one_line_per_cause_through() -> None:
    limit = RateLimit(interval_s=3600)

    def record(cause: str | None) -> logging.LogRecord:
        made = logging.LogRecord("retail", logging.ERROR, __file__, 1, "down", (), None)
        if cause is not None:
            made.cause = cause
        return made

    assert [limit.filter(record("db")) for _ in range(100)].count(True) == 1
    assert limit.filter(record("other"))
    assert all(limit.filter(record(None)) for _ in range(10))
    limit.last["db"] -= 7200  # as if the interval had passed
    resumed = record("db")
    assert limit.filter(resumed)
    assert "99 more" in resumed.getMessage()


# --- the database down: 503 + Retry-After, and back -----------------------------------


async def _allow_connections(database_url: str, allow: bool) -> None:
    url = make_url(database_url)
    admin = await asyncpg.connect(
        str(url.set(drivername="postgresql", database="postgres").render_as_string(False))
    )
    try:
        await admin.execute(
            f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS {"true" if allow else "false"}'
        )
        if not allow:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                url.database,
            )
    finally:
        await admin.close()


async def test_a_database_that_refuses_connections_gets_503_then_recovers(
    start_app: StartApp, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL database of the test's own that refuses connections")
    running = await start_app(ready_timeout_s=0.2)
    client = running.client
    assert (await place(client)).status_code == 202
    await _allow_connections(database_url, False)
    try:
        for request in (
            client.get("/orders"),
            client.get("/products"),
            place(client),
            client.get("/products/MUG-1"),
        ):
            response: httpx.Response = await request
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers.get("connection") != "close"
            assert response.json()["type"] == "/problems/database-unavailable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        assert "database unreachable" in detail
        assert make_url(database_url).database not in detail  # no driver text, no name
    finally:
        await _allow_connections(database_url, True)
    from tests.conftest import eventually

    async def recovered() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(recovered)
    assert (await place(client)).status_code == 202
    assert (await client.get("/orders")).status_code == 200
