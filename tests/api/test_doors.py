"""`POST /orders` has two doors, the fast path and the route: both place through one
function, so the same requests give the same orders and the same problems."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

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
