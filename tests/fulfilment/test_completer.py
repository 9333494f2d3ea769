"""The workers' group commit: many orders' transitions per transaction, each fenced alone.

In-memory store, virtual time: the pool takes many orders through all their steps
with fewer writes than transitions, each order's events in order; a stale claim in a
batch is refused without holding back the others.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from retail.core.types import OrderStatus
from retail.runtime.clock import ManualClock
from retail.runtime.completer import Completer
from retail.runtime.services import Services, running_services
from retail.store.base import Ending, LeaseLost, Transition
from retail.store.memory import MemoryStore
from tests.unit.test_runtime import STEPS, place, run_until_idle, settings, until


@pytest.fixture
async def services() -> AsyncIterator[tuple[Services, ManualClock, MemoryStore]]:
    clock, store = ManualClock(), MemoryStore()
    async with running_services(settings(capacity=16), clock, store=store) as running:
        yield running, clock, store


async def test_many_orders_share_their_writes_and_keep_their_events_in_order(
    services: tuple[Services, ManualClock, MemoryStore],
) -> None:
    running, clock, store = services
    ids = [await place(running, customer=f"c{i}") for i in range(16)]
    await until(lambda: running.pool.in_flight == 16)
    await run_until_idle(clock, running.pool)
    completer = running.pool._completer
    # Per order: a step boundary per step and the end (the last step's end with it).
    assert completer.written == 16 * (STEPS + 1)
    assert completer.batches < completer.written / 4  # orders in step share transactions
    for order_id in ids:
        events = await store.list_events(uuid.UUID(order_id))
        kinds = [event.kind for event in events]
        assert kinds == [
            "created",
            "started",
            "step_started",
            *itertools.chain.from_iterable(
                ["step_completed", "step_started"] for _ in range(STEPS - 1)
            ),
            "step_completed",
            "fulfilled",
        ]
        assert [e.id for e in events] == sorted(e.id for e in events)
        steps = [e.step for e in events if e.kind == "step_completed"]
        assert len(steps) == len(set(steps)) == STEPS  # no step recorded twice
        assert (await store.get_order(uuid.UUID(order_id))).status is OrderStatus.FULFILLED


async def test_a_stale_claim_in_a_batch_is_refused_and_the_others_are_written() -> None:
    clock, store = ManualClock(), MemoryStore()
    async with running_services(settings(workers_enabled=False), clock, store=store) as api:
        first, second = [uuid.UUID(await place(api, customer=c)) for c in ("alice", "bob")]
        a_first, a_second = await store.claim_many(owner="a", now=clock.now(), lease_s=1.0, limit=2)
        clock.advance(2.0)  # a's leases run out; b takes the first order over
        (b_first,) = await store.claim_many(owner="b", now=clock.now(), lease_s=5.0, limit=1)
        assert b_first.order_id == first and b_first.token == a_first.token + 1
        completer = Completer(store=store, clock=clock, lease_s=5.0)
        completer.start()
        try:
            stale, kept, current = await asyncio.gather(
                completer.write(Transition(a_first, starting=("reserve", 1.0))),
                completer.write(Transition(a_second, starting=("reserve", 1.0))),
                completer.write(Transition(b_first, ending=Ending(OrderStatus.FULFILLED))),
                return_exceptions=True,
            )
        finally:
            await completer.stop()
        assert completer.batches == 1 and completer.written == 3
        assert isinstance(stale, LeaseLost)
        assert not isinstance(kept, BaseException) and [e.kind for e in kept] == ["step_started"]
        assert not isinstance(current, BaseException)
        assert [e.kind for e in current] == ["fulfilled"]
        assert (await store.get_order(first)).status is OrderStatus.FULFILLED
        assert (await store.get_order(second)).status is OrderStatus.PROCESSING
        kinds = [e.kind for e in await store.list_events(first)]
        assert kinds == ["created", "started", "resumed", "fulfilled"]  # nothing of a's
        # The step's lease runs from the write, past its planned second.
        taken = await store.claim_many(
            owner="c", now=clock.now() + timedelta(seconds=5.9), lease_s=5.0, limit=1
        )
        assert taken == []
