"""The OpenAPI document is complete: every operation described, every error it gives
documented as a problem document, and the interactive docs served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from retail.config import Settings
from retail.web.app import create_app
from tests.conftest import ADMIN, Running, StartApp, eventually, place

PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_MEDIA_TYPE = "application/problem+json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_operation_has_a_summary_and_a_tag(spec: dict[str, Any]) -> None:
    missing = [(m, p) for m, p, op in operations(spec) if not op.get("summary") or not op["tags"]]
    assert missing == []
    assert len(list(operations(spec))) >= 12


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    found = set(refs(spec))
    assert PROBLEM_REF in found
    unresolved = {ref for ref in found if ref.removeprefix("#/components/schemas/") not in schemas}
    assert unresolved == set()


def test_the_problem_schema_is_rfc_9457(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert {"type", "title", "status", "detail", "instance"} <= set(problem["properties"])
    assert problem["additionalProperties"] is True  # extension members: mode, errors, ...


def test_every_error_response_is_a_problem_document(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            assert response["description"], (method, path, status)
            content = response.get("content", {})
            assert list(content) == [PROBLEM_MEDIA_TYPE], (method, path, status, content)
            assert content[PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": PROBLEM_REF}


def test_place_order_documents_every_outcome(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/orders"]["post"]
    assert {"201", "202", "409", "422", "503"} <= set(post["responses"])
    for status in ("201", "202"):
        schema = post["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OrderRead"}, status
    assert "Retry-After" in post["responses"]["503"]["description"]
    headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
    assert {"idempotency-key", "prefer"} <= {h.lower() for h in headers}
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderCreate"
    }


def test_admin_operations_declare_the_bearer_token(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    secured = {
        (m, p)
        for m, p, op in operations(spec)
        if any("HTTPBearer" in requirement for requirement in op.get("security", []))
    }
    assert secured == {("PUT", "/admin/capacity"), ("PUT", "/products/{sku}")}
    # An order's own token (RETAIL_ORDER_ACCESS=token) is declared where it is checked.
    by_token = {
        (m, p)
        for m, p, op in operations(spec)
        if any("APIKeyHeader" in requirement for requirement in op.get("security", []))
    }
    assert by_token == {
        ("GET", "/orders/{order_id}"),
        ("GET", "/orders/{order_id}/events"),
        ("POST", "/orders/{order_id}/cancel"),
    }
    for method, path, operation in operations(spec):
        if (method, path) in secured:
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


# --- the errors the service really gives are the ones it documents ----------------------

Probe = tuple[str, str, str, dict[str, Any], int]  # method, operation path, url, request, status


async def probes(running: Running) -> AsyncIterator[Probe]:
    """Requests that fail, each with the status it must get, in order: the last ones run
    once the only fulfilment slot is taken."""
    client = running.client
    oversize = {"content": b"x" * (running.settings.max_body_bytes + 1)}
    malformed = {"content": b'{"customer_id": ', "headers": {"Content-Type": "application/json"}}
    order = {"json": {"customer_id": "eve", "items": [{"sku": "MUG-1", "quantity": 1}]}}
    unknown = "00000000-0000-4000-8000-000000000000"
    product = {"json": {"name": "Lamp", "unit_price": 100, "stock": 1}, "headers": ADMIN}
    malformed_admin = {**malformed, "headers": {**malformed["headers"], **ADMIN}}

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"customer_id": "eve",'
        await asyncio.sleep(running.settings.body_timeout_s * 5)  # the rest never comes in time
        yield b'"items": []}'

    stalled = {"content": stalled_body(), "headers": {"Content-Type": "application/json"}}
    first: list[Probe] = [
        ("POST", "/orders", "/orders", malformed, 400),
        ("POST", "/orders", "/orders", {"content": b"{}"}, 415),  # no Content-Type
        ("POST", "/orders", "/orders", stalled, 408),
        ("POST", "/orders", "/orders", {**order, "headers": {"Idempotency-Key": "a b"}}, 400),
        ("POST", "/orders", "/orders", oversize, 413),
        ("POST", "/orders", "/orders", {"json": {"customer_id": "eve", "items": []}}, 422),
        (
            "POST",
            "/orders",
            "/orders",
            {"json": {"customer_id": "eve", "items": [{"sku": "NOPE-1", "quantity": 1}]}},
            422,
        ),
        (
            "POST",
            "/orders",
            "/orders",
            {"json": {"customer_id": "eve", "items": [{"sku": "LAMP-1", "quantity": 500}]}},
            409,
        ),
        ("GET", "/orders", "/orders?limit=0", {}, 422),
        ("GET", "/orders", "/orders?cursor=not-a-cursor", {}, 400),
        ("GET", "/orders", "/orders?status=lost", {}, 422),
        ("GET", "/orders/{order_id}", f"/orders/{unknown}", {}, 404),
        ("GET", "/orders/{order_id}", "/orders/42", {}, 422),
        ("GET", "/orders/{order_id}/events", f"/orders/{unknown}/events", {}, 404),
        ("GET", "/orders/{order_id}/events", "/orders/42/events", {}, 422),
        (
            "GET",
            "/orders/{order_id}/events",
            f"/orders/{unknown}/events",
            {"headers": {"Accept": "text/event-stream", "Last-Event-ID": str(2**63)}},
            400,
        ),
        ("POST", "/orders/{order_id}/cancel", f"/orders/{unknown}/cancel", {}, 404),
        ("POST", "/orders/{order_id}/cancel", "/orders/42/cancel", {}, 422),
        ("GET", "/products/{sku}", "/products/NOPE-1", {}, 404),
        ("GET", "/products/{sku}", "/products/-bad", {}, 422),
        ("PUT", "/products/{sku}", "/products/LAMP-2", {"json": product["json"]}, 401),
        ("PUT", "/products/{sku}", "/products/LAMP-2", malformed_admin, 400),
        ("PUT", "/products/{sku}", "/products/LAMP-2", {**oversize, "headers": ADMIN}, 413),
        ("PUT", "/products/{sku}", "/products/LAMP-2", {**product, "json": {"name": ""}}, 422),
        ("PUT", "/admin/capacity", "/admin/capacity", {"json": {"mode": "queue"}}, 401),
        ("PUT", "/admin/capacity", "/admin/capacity", malformed_admin, 400),
        ("PUT", "/admin/capacity", "/admin/capacity", {**oversize, "headers": ADMIN}, 413),
        (
            "PUT",
            "/admin/capacity",
            "/admin/capacity",
            {"json": {"capacity": 0}, "headers": ADMIN},
            422,
        ),
    ]
    for probe in first:
        yield probe
    # The one slot is taken by an order that is still being fulfilled: it cannot be
    # cancelled, and in reject mode the next order is refused.
    taken = await place(client)
    assert taken.status_code == 202, taken.text
    busy = taken.headers["location"]

    async def started() -> bool:
        return (await client.get(busy)).json()["status"] == "processing"

    await eventually(started)
    yield ("POST", "/orders/{order_id}/cancel", f"{busy}/cancel", {}, 409)
    yield ("POST", "/orders", "/orders", order, 503)
    # A second slot: there is room, but Eve just asked and alice, holding one of the two
    # places, is over her fair share.
    grown = await client.put("/admin/capacity", json={"capacity": 2}, headers=ADMIN)
    assert grown.status_code == 200, grown.text
    yield ("POST", "/orders", "/orders", {"json": {**order["json"], "customer_id": "alice"}}, 429)


async def test_every_error_given_is_documented_for_its_operation(start_app: StartApp) -> None:
    running = await start_app(
        overload_mode="reject", capacity=1, fulfilment_delay="60", body_timeout_s=0.05
    )
    documented = running.app.openapi()["paths"]
    tried: set[tuple[str, str, int]] = set()
    async for method, path, url, request, status in probes(running):
        response = await running.client.request(method, url, **request)
        assert response.status_code == status, (method, url, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, (method, url)
        body = response.json()
        assert body["status"] == status
        assert all(isinstance(body[field], str) for field in ("type", "title", "detail"))
        assert str(status) in documented[path][method.lower()]["responses"], (method, path, status)
        if status in (429, 503):
            assert int(response.headers["retry-after"]) >= 1
        tried.add((method, path, status))
    # Every documented client error was given by some probe (403, no admin token
    # configured, is in test_config).
    expected = {
        (method, path, int(status))
        for method, path, operation in operations({"paths": documented})
        for status in operation["responses"]
        if 400 <= int(status) < 500 and status != "403"
    }
    assert expected <= tried, expected - tried


async def test_openapi_and_the_interactive_docs_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "retail"
    assert "Problem" in document["components"]["schemas"]

    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text
    assert "/openapi.json" in docs.text

    redoc = await client.get("/redoc")
    assert redoc.status_code == 200
    assert redoc.headers["content-type"].startswith("text/html")
    assert "redoc" in redoc.text.lower()
    assert "/openapi.json" in redoc.text


def test_the_documents_headers_examples_and_limits_are_the_services() -> None:
    settings = Settings(_env_file=None, max_order_lines=7, max_line_quantity=30)  # type: ignore[call-arg]
    document = create_app(settings).openapi()
    place = document["paths"]["/orders"]["post"]["responses"]
    assert {"Location", "Retry-After", "Idempotent-Replayed"} <= set(place["202"]["headers"])
    assert {"Location", "Preference-Applied"} <= set(place["201"]["headers"])
    assert "Retry-After" in place["503"]["headers"] and "Retry-After" in place["409"]["headers"]
    assert place["415"]["content"]["application/problem+json"]["example"]["status"] == 415
    status = document["paths"]["/orders/{order_id}"]["get"]["responses"]["200"]
    assert "Retry-After" in status["headers"]
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                assert "X-Request-ID" in response["headers"]
    models = document["components"]["schemas"]
    assert models["OrderCreate"]["properties"]["items"]["maxItems"] == 7
    assert models["OrderItemIn"]["properties"]["quantity"]["maximum"] == 30
