"""The orders table as a work queue: FIFO claims, leases and fenced writes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retail.core.types import OrderStatus
from retail.runtime.clock import ManualClock
from retail.store.sql import queue
from tests.conftest import StartApp, place


async def test_claims_are_fifo_and_a_stale_worker_is_fenced_off(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, workers_enabled=False)
    db = running.services.db
    ids = [(await place(running.client, customer=c)).json()["id"] for c in ("a", "b")]

    async with db.write() as session:
        first = await queue.claim_next(session=session, owner="A", now=clock.now(), lease_s=5)
    assert first is not None
    assert str(first.order_id) == ids[0]  # oldest first
    assert first.token == 1 and not first.resumed

    # A stalls past its lease; B takes the order over with a newer token.
    clock.advance(6)
    async with db.write() as session:
        taken = await queue.claim_next(session=session, owner="B", now=clock.now(), lease_s=5)
    assert taken is not None
    assert taken.order_id == first.order_id  # an expired lease comes before the queue
    assert taken.token == 2 and taken.resumed

    # A wakes up and tries to record progress and to finish: both are refused.
    with pytest.raises(queue.LeaseLost):
        async with db.write() as session:
            await queue.step_boundary(
                session=session,
                claim=first,
                now=clock.now(),
                completed=("reserve", 1, 0.1),
                starting=("fraud_check", 0.2),
                lease_s=5,
            )
    with pytest.raises(queue.LeaseLost):
        async with db.write() as session:
            await queue.finish(
                session=session, claim=first, now=clock.now(), status=OrderStatus.FAILED
            )
    order = (await running.client.get(f"/orders/{ids[0]}")).json()
    assert order["status"] == "processing"
    assert (await running.client.get("/products/MUG-1")).json()["stock"] == 998

    # B's writes go through.
    async with db.write() as session:
        await queue.finish(
            session=session, claim=taken, now=clock.now(), status=OrderStatus.FULFILLED
        )
    assert (await running.client.get(f"/orders/{ids[0]}")).json()["status"] == "fulfilled"

    # The next claim is the second order; then there is nothing left.
    async with db.write() as session:
        second = await queue.claim_next(session=session, owner="B", now=clock.now(), lease_s=5)
        assert second is not None and str(second.order_id) == ids[1]
        assert (
            await queue.claim_next(session=session, owner="B", now=clock.now(), lease_s=5) is None
        )


async def test_a_live_lease_is_not_taken_over(start_app: StartApp) -> None:
    clock = ManualClock()
    running = await start_app(clock=clock, workers_enabled=False)
    db = running.services.db
    await place(running.client)
    async with db.write() as session:
        claim = await queue.claim_next(session=session, owner="A", now=clock.now(), lease_s=5)
    assert claim is not None
    clock.advance(4.9)
    async with db.write() as session:
        assert (
            await queue.claim_next(session=session, owner="B", now=clock.now(), lease_s=5) is None
        )
    # Renewing keeps it: the lease now runs 5 s from here.
    async with db.write() as session:
        await queue.renew_lease(
            session=session, claim=claim, now=clock.now(), until=clock.now() + timedelta(seconds=5)
        )
    clock.advance(4.9)
    async with db.write() as session:
        assert (
            await queue.claim_next(session=session, owner="B", now=clock.now(), lease_s=5) is None
        )
