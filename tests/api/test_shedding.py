"""Over capacity, `POST /orders` is refused before routing, with the route's own answer."""

from __future__ import annotations

import logging

import pytest

from retail.runtime.clock import ManualClock
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
