"""The runtime on the in-memory store, in virtual time: no server, no database.

The worker pool takes an order through all its steps, a crashed worker's order is
resumed by another from its last durable step, and a cancel racing a claim ends in
exactly one state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import pytest

from retail.config import Settings
from retail.core.errors import InvalidTransition
from retail.core.types import OrderStatus
from retail.runtime.clock import ManualClock
from retail.runtime.idempotency import Idempotency
from retail.runtime.orders import cancel_order
from retail.runtime.placing import place_order
from retail.runtime.pool import WorkerPool
from retail.runtime.services import Services, running_services
from retail.store.base import LeaseLost, OrderQuery
from retail.store.memory import MemoryStore

STEPS = 6


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "fulfilment_delay": "6",  # 6 steps, 0.6 to 1.2 s each
        "capacity": 1,
        "poll_interval_s": 0.01,
        "shutdown_timeout_s": 0.0,
        "lease_s": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def until(check: Callable[[], bool]) -> None:
    """Let the event loop run (real time, for task switches only) until `check()` holds."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("not reached")


async def run_until_idle(clock: ManualClock, pool: WorkerPool) -> None:
    """Move virtual time on, a step at a time, until the pool has nothing in flight."""
    for _ in range(100):
        await until(lambda: pool.in_flight == 0 or clock.sleepers == pool.in_flight)
        if pool.in_flight == 0:
            return
        clock.advance(0.5)
    raise AssertionError("still busy")


async def place(services: Services, customer: str = "alice", quantity: int = 1) -> str:
    answer = await place_order(
        services, customer_id=customer, items=[("MUG-1", quantity)], body=b"{}"
    )
    assert answer.status == 202
    return answer.headers["Location"].removeprefix("/orders/")


async def kinds(store: MemoryStore, order_id: str) -> list[str]:
    return [event.kind for event in await store.list_events(uuid.UUID(order_id))]


async def test_the_pool_takes_an_order_through_every_step(stack: AsyncExitStack) -> None:
    clock, store = ManualClock(), MemoryStore()
    services = await stack.enter_async_context(running_services(settings(), clock, store=store))
    order_id = await place(services)
    await until(lambda: services.pool.in_flight == 1)
    await run_until_idle(clock, services.pool)
    history = await kinds(store, order_id)
    assert history[:2] == ["created", "started"]
    assert history.count("step_started") == history.count("step_completed") == STEPS
    assert history[-1] == "fulfilled"
    assert services.admission.queued == 0


async def test_the_next_order_keeps_to_a_timetable_from_its_slots_planned_end(
    stack: AsyncExitStack,
) -> None:
    """A slot is handed over when its order's plan ends, as the policy plans it: the next
    order is claimed once the end is written, but its steps keep to a timetable from that
    moment, so the time spent recording the end and the claim does not idle the slot."""
    clock, store = ManualClock(), MemoryStore()
    services = await stack.enter_async_context(
        running_services(settings(fulfilment_delay="fixed:6"), clock, store=store)
    )
    t0 = clock.seconds()
    first = await place(services)
    await until(lambda: services.pool.in_flight == 1 and clock.sleepers == 1)
    second = uuid.UUID(await place(services))
    assert services.admission.queued == 1
    # The worker wakes 0.3 s after the first order's plan has ended (a late wake-up, a
    # slow write): the first order's end and the second's claim both happen at 6.3 s.
    clock.advance(6.3)
    await until(lambda: services.pool.current_step(second) is not None)
    running = services.admission.dispatcher.running[second]
    assert running.started_at == pytest.approx(t0 + 6.0)  # the first one's planned end
    assert running.expected_end == pytest.approx(t0 + 12.0)
    assert (await store.get_order(uuid.UUID(first))).status is OrderStatus.FULFILLED
    # Its first step (0.6 s) is shortened by the 0.3 s: done at 6.6 s, not 6.9 s.
    clock.advance(0.3)
    await until(lambda: services.pool.current_step(second) not in (None, "reserve"))
    await run_until_idle(clock, services.pool)
    assert await kinds(store, str(second)) == await kinds(store, first)


async def test_a_crashed_workers_order_is_resumed_from_its_last_step(
    stack: AsyncExitStack,
) -> None:
    clock, store = ManualClock(), MemoryStore()
    api = await stack.enter_async_context(
        running_services(settings(workers_enabled=False), clock, store=store)
    )
    order_id = await place(api)

    def pool(**changes: Any) -> WorkerPool:
        return WorkerPool(
            store=store,
            idempotency=Idempotency(store),
            clock=clock,
            pipeline=api.pipeline,
            admission=api.admission,
            bus=api.bus,
            lease_s=5.0,
            poll_interval_s=0.01,
            shutdown_timeout_s=0.0,
            **changes,
        )

    first = pool()
    await first.start()
    await until(lambda: clock.sleepers == 1)
    clock.advance(1.0)  # the first step is done and recorded
    await until(
        lambda: clock.sleepers == 1 and first.current_step(uuid.UUID(order_id)) != "reserve"
    )
    # kill -9: every task stops where it is (the writer's too), no lease is given back.
    tasks = [first._claimer, *first._tasks, *first._completer._tasks]
    for task in tasks:
        assert task is not None
        task.cancel()
    await asyncio.gather(*(t for t in tasks if t), return_exceptions=True)
    api.admission.dispatcher.clear()

    second = pool()
    await second.start()
    clock.advance(10.0)  # past the lease: the order is up for grabs
    second.notify()
    await until(lambda: second.in_flight == 1)
    await run_until_idle(clock, second)
    history = await kinds(store, order_id)
    assert "resumed" in history
    resumed_at = history.index("resumed")
    # Steps done before the crash are not done again.
    assert history[resumed_at + 1 :].count("step_completed") == STEPS - 1
    assert history.count("fulfilled") == 1
    order = await store.get_order(uuid.UUID(order_id))
    assert order.status is OrderStatus.FULFILLED
    await second.stop()


async def test_a_late_write_of_a_worker_that_lost_its_lease_is_refused() -> None:
    clock, store = ManualClock(), MemoryStore()
    async with running_services(settings(workers_enabled=False), clock, store=store) as api:
        await place(api)
        now = clock.now()
        stale = await store.claim_next(owner="a", now=now, lease_s=1.0)
        assert stale is not None
        later = now + timedelta(seconds=2)
        fresh = await store.claim_next(owner="b", now=later, lease_s=1.0)
        assert fresh is not None and fresh.resumed and fresh.token > stale.token
        with pytest.raises(LeaseLost):
            await store.step_boundary(
                stale, now=later, completed=None, starting=("reserve", 1.0), lease_s=1.0
            )
        await store.finish(fresh, now=later, status=OrderStatus.FULFILLED)
        with pytest.raises(LeaseLost):
            await store.finish(stale, now=later, status=OrderStatus.FAILED)


async def test_a_cancel_racing_a_claim_ends_in_one_state(stack: AsyncExitStack) -> None:
    clock, store = ManualClock(), MemoryStore()
    services = await stack.enter_async_context(
        running_services(settings(workers_enabled=False), clock, store=store)
    )
    before = (await store.get_product("MUG-1")).stock
    order_id = uuid.UUID(await place(services, quantity=3))
    claim, cancelled = await asyncio.gather(
        store.claim_next(owner="w", now=clock.now(), lease_s=5.0),
        cancel_order(services, order_id),
        return_exceptions=True,
    )
    order = await store.get_order(order_id)
    stock = (await store.get_product("MUG-1")).stock
    if isinstance(cancelled, InvalidTransition):  # the claim won
        assert claim is not None and order.status is OrderStatus.PROCESSING
        assert stock == before - 3
    else:  # the cancel won: no claim, stock back once
        assert claim is None and order.status is OrderStatus.CANCELLED
        assert stock == before
        with pytest.raises(InvalidTransition):
            await cancel_order(services, order_id)
        assert (await store.get_product("MUG-1")).stock == before


async def test_a_request_cancelled_while_its_order_is_written_still_stores_and_settles_it(
    stack: AsyncExitStack,
) -> None:
    clock, store = ManualClock(), MemoryStore()
    services = await stack.enter_async_context(
        running_services(settings(workers_enabled=False), clock, store=store)
    )
    body = b'{"customer_id": "alice"}'
    placing = asyncio.create_task(
        place_order(services, customer_id="alice", items=[("MUG-1", 1)], body=body, key="k-1")
    )
    await asyncio.sleep(0)  # the request runs up to its wait for the write
    assert services.admission.unsettled == 1  # admitted, handed to the writer
    placing.cancel()  # the client hangs up before the write
    results = await asyncio.gather(placing, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    await until(lambda: services.admission.unsettled == 0)
    listed, _ = await store.list_orders(OrderQuery())
    assert [order.customer_id for order in listed] == ["alice"]
    assert services.admission.queued == 1  # its place is kept: it waits for a slot
    # Its key is free again, bound to the stored answer: a retry gets that, not a 409.
    retry = await place_order(
        services, customer_id="alice", items=[("MUG-1", 1)], body=body, key="k-1"
    )
    assert retry.status == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Location"] == f"/orders/{listed[0].id}"
