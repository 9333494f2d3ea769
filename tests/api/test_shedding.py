"""Over capacity, `POST /orders` is refused before routing, with the route's own answer."""

from __future__ import annotations

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


async def test_a_refusal_does_not_read_the_body(start_app: StartApp) -> None:
    # Without fair shares; with them, the customer in the body decides `429` or `503`.
    running, _ = await full_in_reject_mode(start_app, fair_share=False)
    refused = await running.client.post(
        "/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "10"
    assert len((await running.client.get("/orders")).json()["items"]) == 1


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
