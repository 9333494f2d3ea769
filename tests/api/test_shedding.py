"""Over capacity, `POST /orders` is refused before routing, with the route's own answer."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from retail.runtime.clock import ManualClock
from retail.web.app import RetailApp
from retail.web.protocol import READ_BODY, ReadBody
from tests.conftest import Running, StartApp, place, quiescent


async def full_in_reject_mode(start_app: StartApp, **settings: object) -> tuple[Running, str]:
    running = await start_app(
        clock=ManualClock(),
        capacity=1,
        fulfilment_delay="10",
        overload_mode="reject",
        **settings,
    )
    first = await place(running.client, headers={"Idempotency-Key": "first-order"})
    assert first.status_code == 202
    await quiescent(running)
    return running, first.json()["id"]


@pytest.mark.parametrize("fair_share", [True, False])
async def test_a_refusal_does_not_read_the_body(start_app: StartApp, fair_share: bool) -> None:
    # With fair shares too: with no room at all, no customer could have a place.
    running, _ = await full_in_reject_mode(start_app, fair_share=fair_share)
    refused = await running.client.post(
        "/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "10"
    assert len((await running.client.get("/orders")).json()["items"]) == 1


@pytest.mark.parametrize("fair_share", [True, False])
async def test_a_slot_given_and_not_yet_claimed_is_read_only_for_fair_shares(
    start_app: StartApp, fair_share: bool
) -> None:
    # No worker claims the one order admitted: its slot is taken, by an order waiting to
    # be claimed. With fair shares on, a request is read then (its customer is noted as
    # competing): this body does not parse, so it gets the route's problem. Off, nothing
    # learns from its body: refused unread.
    running = await start_app(
        capacity=1, overload_mode="reject", workers_enabled=False, fair_share=fair_share
    )
    assert (await place(running.client)).status_code == 202
    answer = await running.client.post(
        "/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == (400 if fair_share else 503), answer.text


async def test_refusals_with_and_without_a_key_answer_alike(start_app: StartApp) -> None:
    running, _ = await full_in_reject_mode(start_app)
    plain = await place(running.client, sku="LAMP-1")
    keyed = await place(running.client, sku="LAMP-1", headers={"Idempotency-Key": "k-2"})
    assert plain.status_code == keyed.status_code == 503
    # Alike but for when to come back: refusals at one instant get spread Retry-After values.
    answers = []
    for refused in (plain, keyed):
        body = refused.json()
        assert body["retry_after_s"] == int(refused.headers["retry-after"])
        assert body.pop("detail").endswith(f"Retry in {body.pop('retry_after_s')} s.")
        answers.append(body)
    assert answers[0] == answers[1]
    assert plain.json()["instance"] == "/orders"
    capacity = (await running.client.get("/capacity")).json()
    assert capacity["counters"]["rejected"] == 2
    assert (await running.client.get("/products/LAMP-1")).json()["stock"] == 50


async def test_a_stored_order_is_replayed_while_full(start_app: StartApp) -> None:
    running, first_id = await full_in_reject_mode(start_app)
    replay = await place(running.client, headers={"Idempotency-Key": "first-order"})
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first_id


async def test_a_flood_of_refusals_is_logged_once_and_counted_in_full(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    running, _ = await full_in_reject_mode(start_app)
    caplog.set_level(logging.INFO)
    refused = [await place(running.client, sku="LAMP-1") for _ in range(3)]
    assert [r.status_code for r in refused] == [503] * 3
    lines = [r.getMessage() for r in caplog.records if r.name == "retail.http"]
    assert [line.startswith("POST /orders 503 ") for line in lines] == [True]
    metrics = (await running.client.get("/metrics")).text
    assert 'retail_http_requests_total{method="POST",route="/orders",status="503"} 3.0' in metrics


async def test_a_request_read_for_fair_shares_is_refused_at_the_door_as_by_the_app(
    start_app: StartApp,
) -> None:
    # Both slots given to orders no worker claims: a request is read so that fair shares
    # see its customer. `retail serve`'s door asks for the body and refuses it there,
    # with the answer and the counts the app gives the same request, taking nothing.
    running = await start_app(
        capacity=2, overload_mode="reject", workers_enabled=False, fair_share=True
    )
    for _ in range(2):
        assert (await place(running.client, customer="big")).status_code == 202
    app = running.app
    assert isinstance(app, RetailApp)
    admission = running.services.admission

    def body(customer: str, quantity: int = 1) -> bytes:
        return json.dumps(
            {"customer_id": customer, "items": [{"sku": "MUG-1", "quantity": quantity}]}
        ).encode()

    def headers(content: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]

    def counts() -> tuple[int, dict[str, float]]:
        checks = running.services.metrics.fair_share_checks
        by_outcome = {
            sample.labels["outcome"]: sample.value
            for metric in checks.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        return admission.counters.rejected, by_outcome

    def at_door(content: bytes) -> Any:
        assert app.refuse_at_door(b"POST", b"/orders", headers(content)) is READ_BODY
        return app.refuse_at_door(b"POST", b"/orders", headers(content), content)

    for customer, status in (("small", 503), ("big", 429)):  # big is over its share now
        before = counts()
        answer = at_door(body(customer))
        assert answer is not None and not isinstance(answer, ReadBody)
        door_status, head, door_body = answer
        door_counts = counts()
        by_app = await running.client.post(
            "/orders", content=body(customer), headers={"Content-Type": "application/json"}
        )
        assert door_status == by_app.status_code == status, by_app.text
        door_problem, app_problem = json.loads(door_body), by_app.json()
        for problem in (door_problem, app_problem):
            assert problem.pop("detail").endswith(f"Retry in {problem.pop('retry_after_s')} s.")
        assert door_problem == app_problem
        assert b"retry-after-ms: " in head and b"x-request-id: " in head
        # The door counted what the app counted for the same request.
        rejected, checks = before
        door_rejected, door_checks = door_counts
        app_rejected, app_checks = counts()
        assert app_rejected - door_rejected == door_rejected - rejected
        assert {k: app_checks[k] - door_checks.get(k, 0) for k in app_checks} == {
            k: door_checks[k] - checks.get(k, 0) for k in app_checks
        }
    # What the app answers otherwise goes on to it: a body that is not an order, an
    # order over the service's limits, one with a key.
    assert app.refuse_at_door(b"POST", b"/orders", headers(b"{not"), b"{not") is None
    too_many = body("small", quantity=running.settings.max_line_quantity + 1)
    assert app.refuse_at_door(b"POST", b"/orders", headers(too_many), too_many) is None
    keyed = [*headers(body("small")), (b"idempotency-key", b"k")]
    assert app.refuse_at_door(b"POST", b"/orders", keyed) is None
    assert (admission.queued, admission.counters.accepted) == (2, 2)  # nothing taken
