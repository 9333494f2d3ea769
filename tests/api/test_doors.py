"""`POST /orders` has two doors, the fast path and the route: both place through one
function, so the same requests give the same orders and the same problems."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from retail.runtime import placing
from retail.web.app import create_app
from tests.conftest import make_settings

VOLATILE = {"id", "created_at", "updated_at", "estimated_start_at", "instance"}

REQUESTS: list[tuple[dict[str, str], bytes]] = [
    (
        {"Content-Type": "application/json"},
        b'{"customer_id":"alice","items":[{"sku":"MUG-1","quantity":2}]}',
    ),
    (
        {"Content-Type": "application/json; charset=utf-8"},
        b'{"customer_id":"bob","items":[{"sku":"PEN-3","quantity":1}]}',
    ),
    (
        {"Content-Type": "application/json"},
        b'{"customer_id":"carol","items":[{"sku":"LAMP-1","quantity":51}]}',
    ),
    (
        {"Content-Type": "application/json"},
        b'{"customer_id":"dan","items":[{"sku":"NOPE-1","quantity":1}]}',
    ),
    (
        {"Content-Type": "application/json"},
        b'{"customer_id":"erin","items":[{"sku":"MUG-1","quantity":0}]}',
    ),
    (
        {"Content-Type": "application/json"},
        b'{"customer_id":"erin","items":[{"sku":"MUG-1","quantity":1001}]}',
    ),
    ({"Content-Type": "application/json"}, b'{"customer_id":"erin","items":'),
    (
        {"Content-Type": "text/plain"},
        b'{"customer_id":"fay","items":[{"sku":"MUG-1","quantity":1}]}',
    ),
    ({}, b'{"customer_id":"fay","items":[{"sku":"MUG-1","quantity":1}]}'),
    (
        {"Content-Type": "application/json", "Idempotency-Key": "k-1"},
        b'{"customer_id":"gus","items":[{"sku":"TEE-M","quantity":1}]}',
    ),
    (
        {"Content-Type": "application/json", "Idempotency-Key": "k-1"},
        b'{"customer_id":"gus","items":[{"sku":"TEE-M","quantity":1}]}',
    ),
    (
        {"Content-Type": "application/json", "Idempotency-Key": "k-1"},
        b'{"customer_id":"gus","items":[{"sku":"TEE-M","quantity":2}]}',
    ),
    (
        {"Content-Type": "application/json", "Idempotency-Key": "bad key"},
        b'{"customer_id":"hal","items":[{"sku":"TEE-M","quantity":1}]}',
    ),
]


def stable(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: stable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [stable(v) for v in body]
    return body


async def answers(database: Path, *, fast_path: bool) -> list[tuple[int, Any, dict[str, str]]]:
    settings = make_settings(f"sqlite+aiosqlite:///{database}", workers_enabled=False)
    app = create_app(settings, fast_path=fast_path)
    seen = []
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        )
        for headers, body in REQUESTS:
            response = await client.post("/orders", content=body, headers=headers)
            kept = {
                name: response.headers[name]
                for name in ("content-type", "retry-after", "idempotent-replayed")
                if name in response.headers
            }
            seen.append((response.status_code, stable(response.json()), kept))
    return seen


async def test_both_doors_give_the_same_orders_and_problems(tmp_path: Path) -> None:
    fast = await answers(tmp_path / "fast.db", fast_path=True)
    route = await answers(tmp_path / "route.db", fast_path=False)
    assert fast == route
    statuses = [status for status, _, _ in fast]
    assert statuses == [202, 202, 409, 422, 422, 422, 400, 415, 415, 202, 202, 422, 400]
    assert fast[9][1] == fast[10][1]  # the replay is the first answer
    assert fast[10][2]["idempotent-replayed"] == "true"


async def _failing(database: Path, *, fast_path: bool, monkeypatch: Any) -> httpx.Response:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    settings = make_settings(f"sqlite+aiosqlite:///{database}", workers_enabled=False)
    app = create_app(settings, fast_path=fast_path)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://t")
        )
        monkeypatch.setattr(placing, "place_order", broken)
        return await client.post("/orders", content=REQUESTS[0][1], headers=REQUESTS[0][0])


async def test_both_doors_answer_an_unexpected_error_with_a_500_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fast = await _failing(tmp_path / "fast.db", fast_path=True, monkeypatch=monkeypatch)
    route = await _failing(tmp_path / "route.db", fast_path=False, monkeypatch=monkeypatch)
    for response in (fast, route):
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/internal-error")
    assert stable(fast.json()) == stable(route.json())
    # The fast path's answer carries what every answer it gives does.
    assert fast.headers["x-content-type-options"] == "nosniff"
    assert fast.headers["x-request-id"]
    logged = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(logged) >= 2  # each door logged the error with its traceback
