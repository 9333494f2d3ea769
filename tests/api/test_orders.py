"""Placing, reading, listing and cancelling orders over HTTP, on a real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
import pytest

from tests.conftest import ADMIN, Running, StartApp, eventually, order_status, place


async def stock_of(client: httpx.AsyncClient, sku: str) -> int:
    response = await client.get(f"/products/{sku}")
    assert response.status_code == 200
    stock: int = response.json()["stock"]
    return stock


async def test_place_order_happy_path(client: httpx.AsyncClient) -> None:
    before = await stock_of(client, "MUG-1")
    response = await client.post(
        "/orders",
        json={"customer_id": "alice", "items": [{"sku": "MUG-1", "quantity": 2}]},
    )
    assert response.status_code == 202
    order = response.json()
    assert response.headers["location"] == f"/orders/{order['id']}"
    assert order["customer_id"] == "alice"
    assert order["status"] == "queued"
    assert order["service_level"] == "full"
    assert order["lines"] == [
        {"sku": "MUG-1", "quantity": 2, "unit_price": 1250, "line_total": 2500}
    ]
    assert order["total"] == 2500
    assert order["currency"] == "EUR"
    assert await stock_of(client, "MUG-1") == before - 2

    async def fulfilled() -> bool:
        return await order_status(client, order["id"]) == "fulfilled"

    await eventually(fulfilled)
    events = (await client.get(f"/orders/{order['id']}/events")).json()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "created" and kinds[1] == "started" and kinds[-1] == "fulfilled"
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps)
    steps = [e["step"] for e in events if e["kind"] == "step_completed"]
    assert steps == ["reserve", "fraud_check", "payment", "pick", "pack", "ship"]
    final = (await client.get(f"/orders/{order['id']}")).json()
    assert final["finished_at"] is not None
    assert "retry-after" not in (await client.get(f"/orders/{order['id']}")).headers


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/json", id="fast-path"),
        pytest.param("application/json; charset=utf-8", id="route"),
        pytest.param("application/merge-patch+json", id="route-json-suffix"),
    ],
)
async def test_every_json_content_type_places_the_same_order(
    running: Running, content_type: str
) -> None:
    client = running.client
    before = await stock_of(client, "MUG-1")
    body = b'{"customer_id": "bob", "items": [{"sku": "MUG-1", "quantity": 3}]}'
    response = await client.post(
        "/orders",
        content=body,
        headers={"Content-Type": content_type, "Prefer": "wait=0", "X-Request-ID": "same-1"},
    )
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "same-1"
    assert int(response.headers["retry-after"]) >= 1
    order = response.json()
    assert response.headers["location"] == f"/orders/{order['id']}"
    stored = (await client.get(response.headers["location"])).json()
    assert {k: order[k] for k in ("id", "customer_id", "lines", "total", "created_at")} == {
        k: stored[k] for k in ("id", "customer_id", "lines", "total", "created_at")
    }
    assert order["lines"] == [
        {"sku": "MUG-1", "quantity": 3, "unit_price": 1250, "line_total": 3750}
    ]
    created_at = datetime.fromisoformat(order["created_at"])
    assert datetime.fromisoformat(order["estimated_start_at"]) >= created_at
    assert await stock_of(client, "MUG-1") == before - 3
    metrics = (await client.get("/metrics")).text
    assert 'retail_http_requests_total{method="POST",route="/orders",status="202"} 1.0' in metrics


async def test_prices_come_from_the_catalogue(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders",
        json={"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1, "unit_price": 1}]},
    )
    assert response.status_code == 422
    assert "unit_price" in response.json()["detail"]


BAD_BODIES = [
    pytest.param(b'{"customer_id": "a", "items": [', 400, "malformed-json", id="malformed-json"),
    pytest.param(b"[]", 422, "validation-error", id="not-an-object"),
    pytest.param(
        b'{"items": [{"sku": "MUG-1", "quantity": 1}]}', 422, "validation-error", id="no-customer"
    ),
    pytest.param(b'{"customer_id": "a"}', 422, "validation-error", id="no-items"),
    pytest.param(b'{"customer_id": "a", "items": []}', 422, "validation-error", id="empty-items"),
    pytest.param(
        b'{"customer_id": "a", "items": {"sku": "MUG-1"}}',
        422,
        "validation-error",
        id="items-not-list",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": "2"}]}',
        422,
        "validation-error",
        id="quantity-string",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 0}]}',
        422,
        "validation-error",
        id="quantity-zero",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": -3}]}',
        422,
        "validation-error",
        id="quantity-negative",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1.5}]}',
        422,
        "validation-error",
        id="quantity-float",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 99999999999}]}',
        422,
        "validation-error",
        id="quantity-absurd",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1001}]}',
        422,
        "invalid-order",
        id="quantity-over-limit",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "NOPE-1", "quantity": 1}]}',
        422,
        "unknown-sku",
        id="unknown-sku",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "bad sku!", "quantity": 1}]}',
        422,
        "validation-error",
        id="sku-format",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}]}',
        422,
        "invalid-order",
        id="duplicate-sku",
    ),
    pytest.param(
        b'{"customer_id": "", "items": [{"sku": "MUG-1", "quantity": 1}]}',
        422,
        "validation-error",
        id="empty-customer",
    ),
    pytest.param(
        b'{"customer_id": 7, "items": [{"sku": "MUG-1", "quantity": 1}]}',
        422,
        "validation-error",
        id="customer-number",
    ),
    pytest.param(
        b'{"customer_id": "a", "items": [{"sku": "LAMP-1", "quantity": 51}]}',
        409,
        "insufficient-stock",
        id="insufficient-stock",
    ),
]


@pytest.mark.parametrize(("body", "status", "slug"), BAD_BODIES)
async def test_bad_input_gets_a_problem_and_writes_nothing(
    client: httpx.AsyncClient, body: bytes, status: int, slug: str
) -> None:
    stock_before = {p["sku"]: p["stock"] for p in (await client.get("/products")).json()}
    response = await client.post(
        "/orders", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert (await client.get("/orders")).json()["items"] == []
    assert {p["sku"]: p["stock"] for p in (await client.get("/products")).json()} == stock_before
    assert (await client.get("/capacity")).json()["queued"] == 0
    # and the server is still fine
    assert (await place(client)).status_code == 202


async def test_insufficient_stock_names_the_short_sku(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders",
        json={
            "customer_id": "a",
            "items": [{"sku": "MUG-1", "quantity": 1}, {"sku": "LAMP-1", "quantity": 60}],
        },
    )
    assert response.status_code == 409
    problem = response.json()
    assert "LAMP-1" in problem["detail"]
    assert problem["short"] == [{"sku": "LAMP-1", "requested": 60, "available": 50}]
    assert await stock_of(client, "MUG-1") == 1000


async def test_too_many_lines_and_oversized_body(start_app: StartApp) -> None:
    running = await start_app(max_order_lines=2, max_body_bytes=1024)
    client = running.client
    three = {
        "customer_id": "a",
        "items": [{"sku": s, "quantity": 1} for s in ("MUG-1", "TEE-M", "CAP-1")],
    }
    response = await client.post("/orders", json=three)
    assert response.status_code == 422
    assert "at most 2 lines" in response.json()["detail"]
    big = {"customer_id": "a" * 2000, "items": [{"sku": "MUG-1", "quantity": 1}]}
    response = await client.post("/orders", json=big)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    async def chunks() -> object:
        for _ in range(10):
            yield b" " * 200

    response = await client.post(
        "/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert (await client.get("/orders")).json()["items"] == []


async def test_unknown_and_malformed_order_ids(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for path in (f"/orders/{missing}", f"/orders/{missing}/events"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/order-not-found"
    response = await client.post(f"/orders/{missing}/cancel")
    assert response.status_code == 404
    response = await client.get("/orders/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.order_id"


async def test_two_hundred_concurrent_orders_never_oversell(start_app: StartApp) -> None:
    client = (await start_app(queue_limit=1000)).client
    response = await client.put(
        "/products/LIMITED-1",
        json={"name": "Limited", "unit_price": 100, "stock": 50},
        headers=ADMIN,
    )
    assert response.status_code == 201
    responses = await asyncio.gather(
        *(place(client, sku="LIMITED-1", customer=f"c{i}") for i in range(200))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 50
    assert statuses.count(409) == 150
    assert await stock_of(client, "LIMITED-1") == 0
    page = (await client.get("/orders", params={"limit": 200})).json()
    assert len(page["items"]) == 50


async def test_cancel_releases_stock_exactly_once(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    client = running.client
    order = (await place(client, sku="LAMP-1", quantity=5)).json()
    assert await stock_of(client, "LAMP-1") == 45
    results = await asyncio.gather(
        *(client.post(f"/orders/{order['id']}/cancel") for _ in range(5))
    )
    assert sorted(r.status_code for r in results) == [200, 409, 409, 409, 409]
    cancelled = next(r for r in results if r.status_code == 200).json()
    assert cancelled["status"] == "cancelled"
    assert await stock_of(client, "LAMP-1") == 50
    again = await client.post(f"/orders/{order['id']}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]
    kinds = [e["kind"] for e in (await client.get(f"/orders/{order['id']}/events")).json()]
    assert kinds == ["created", "cancelled"]


async def test_cancel_is_refused_once_fulfilment_started(running: Running) -> None:
    client = running.client
    order = (await place(client)).json()

    async def started() -> bool:
        return await order_status(client, order["id"]) != "queued"

    await eventually(started)
    response = await client.post(f"/orders/{order['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/invalid-transition"


async def test_list_filters_and_paginates_newest_first(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False)
    client = running.client
    ids = []
    for i in range(7):
        ids.append((await place(client, customer="bob" if i % 2 else "alice")).json()["id"])
    page1 = (await client.get("/orders", params={"limit": 3})).json()
    assert [o["id"] for o in page1["items"]] == ids[::-1][:3]
    page2 = (
        await client.get("/orders", params={"limit": 3, "cursor": page1["next_cursor"]})
    ).json()
    page3 = (
        await client.get("/orders", params={"limit": 3, "cursor": page2["next_cursor"]})
    ).json()
    assert [o["id"] for o in page2["items"] + page3["items"]] == ids[::-1][3:]
    assert page3["next_cursor"] is None
    bobs = (await client.get("/orders", params={"customer_id": "bob"})).json()["items"]
    assert [o["id"] for o in bobs] == [ids[5], ids[3], ids[1]]
    queued = (await client.get("/orders", params={"status": "queued", "limit": 200})).json()
    assert len(queued["items"]) == 7
    assert (await client.get("/orders", params={"status": "fulfilled"})).json()["items"] == []
    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 201}):
        response = await client.get("/orders", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    response = await client.get("/orders", params={"cursor": "!!"})
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-cursor"


async def test_pagination_sees_every_order_once_while_new_ones_arrive(
    start_app: StartApp,
) -> None:
    running = await start_app(workers_enabled=False)
    client = running.client
    first = [(await place(client, customer=f"c{i}")).json()["id"] for i in range(10)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/orders", params=params)).json()
        seen += [o["id"] for o in page["items"]]
        await place(client, customer="late")  # arrives between page reads
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(first)
    assert len(seen) == len(set(seen))


async def test_orders_survive_a_restart(start_app: StartApp) -> None:
    first = await start_app(workers_enabled=False)
    order = (await place(first.client, quantity=3)).json()
    second = await start_app()  # same database, a new process would see the same

    async def done() -> bool:
        return await order_status(second.client, order["id"]) == "fulfilled"

    await eventually(done)
    stored = (await second.client.get(f"/orders/{order['id']}")).json()
    assert stored["total"] == 3750


async def test_status_responses_carry_retry_after_until_done(start_app: StartApp) -> None:
    running = await start_app(workers_enabled=False, fulfilment_delay="4")
    response = await place(running.client)
    assert response.headers["retry-after"] == "1"
    polled = await running.client.get(response.headers["location"])
    assert int(polled.headers["retry-after"]) >= 1
    assert polled.json()["queue_position"] == 1
