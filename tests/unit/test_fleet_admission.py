"""Fleet admission counts this process's own orders once, whenever their notices come.

The group commit runs on an in-memory store that gives each batch a transaction id, as
PostgreSQL does; the notices those transactions would send are held back and handed to
the fleet late (or early), as a slow or quick `LISTEN` connection would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from retail.core import capacity
from retail.core.admission import Ticket
from retail.core.errors import CapacityExceeded
from retail.core.fleet import FleetState, FleetView, FleetWorker, Processing, Snapshot
from retail.core.orders import NewOrder, Placed
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority, ServiceLevel
from retail.runtime.bus import EventBus
from retail.runtime.clock import ManualClock
from retail.runtime.fleet import Fleet, FleetAdmission, FleetTiming
from retail.runtime.ingest import Ingest
from retail.store.base import Outcome, Placing, StoredResponse
from retail.store.memory import MemoryStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
QUEUE_LIMIT = 5
BACKEND = 4242  # the server process of this process's database session


class Database(MemoryStore):
    """The memory store, each batch in a transaction of its own whose notice is held back
    (`held`) or sent before the write returns (`early`)."""

    def __init__(self) -> None:
        super().__init__()
        self.xid = 100
        self.held: list[dict[str, Any]] = []
        self.early = False
        self.fleet: Fleet | None = None

    async def place_orders(
        self, batch: Sequence[Placing], *, now: datetime, keys_expire_at: datetime
    ) -> list[Outcome]:
        outcomes = await super().place_orders(batch, now=now, keys_expire_at=keys_expire_at)
        self.xid += 1
        outcomes = [
            Placed(o.order, o.event, self.xid) if isinstance(o, Placed) else o for o in outcomes
        ]
        stored = sum(isinstance(o, Placed) for o in outcomes)
        notice = {"k": "i", "x": str(self.xid), "q": [[1, stored]], "t": 0.0}
        if self.early and self.fleet is not None:
            # Before the write returns, from this process's own session: counted once.
            queued = self.fleet._admission.queued
            self.fleet._received(json.dumps(notice), BACKEND)
            assert self.fleet._admission.queued == queued
        else:
            self.held.append(notice)
        return outcomes


def fleet_state(xmin: int, *, queued: int) -> FleetState:
    """One worker with one slot, busy: every new order waits."""
    return FleetState(
        snapshot=Snapshot(xmin, xmin),
        read_at=T0,
        workers=[FleetWorker("w1", 1, T0, T0)],
        processing=[Processing(1, Priority.STANDARD, ServiceLevel.FULL, 0, "w1")],
        queued={Priority.STANDARD: queued},
    )


class Process:
    """One API process of a fleet: its admission, its view, its group commit."""

    def __init__(self, database: Database, clock: ManualClock) -> None:
        pipeline = Pipeline.build(fulfilment_delay="fixed:600")
        limits = capacity.Limits(mode=OverloadMode.QUEUE, capacity=1, queue_limit=QUEUE_LIMIT)
        self.clock = clock
        self.admission = FleetAdmission(FleetView(pipeline), limits, pipeline)
        self.fleet = Fleet(
            database_url="postgresql+asyncpg://postgres@127.0.0.1:9/unused",
            clock=clock,
            admission=self.admission,
            timing=FleetTiming(heartbeat_s=1.0, dead_after_s=5.0, reconcile_s=5.0),
            member=("api-1", 0),
            own_backends=lambda: {BACKEND},
        )
        database.fleet = self.fleet
        self.ingest = Ingest(
            store=database,
            clock=clock,
            bus=EventBus(),
            idempotency_ttl_s=60.0,
            on_placed=self.fleet.stored,
        )
        self.view = self.admission.view
        self.view.reconcile(fleet_state(100, queued=0), clock.seconds())
        self.fleet._feed()
        self.accepted = 0
        self.refused = 0

    def place(self) -> asyncio.Future[Placed | StoredResponse] | None:
        """One `POST /orders`: admitted and handed to the group commit, or refused."""
        try:
            ticket = self.admission.admit(self.clock.seconds(), priority=Priority.STANDARD)
        except CapacityExceeded:
            self.refused += 1
            return None
        self.accepted += 1
        order = NewOrder(
            id=uuid.uuid4(),
            customer_id="alice",
            items=(("MUG-1", 1),),
            service_level=ServiceLevel.FULL,
            skipped_steps=(),
            queue_position=1,
        )

        def settle(outcome: object, ticket: Ticket = ticket) -> None:
            if isinstance(outcome, Placed):
                ticket.keep()
            else:
                ticket.release()

        return self.ingest.submit(Placing(order), settle)


@pytest.fixture
async def process() -> AsyncIterator[tuple[Process, Database]]:
    clock, database = ManualClock(T0), Database()
    await database.prepare(migrate=False, seed_catalogue=True, now=T0)
    process = Process(database, clock)
    await process.ingest.start()
    try:
        yield process, database
    finally:
        await process.ingest.stop()


async def burst(process: Process, requests: int, *, left: int = 0) -> None:
    """`requests` orders arriving two at a time while the group commit writes the ones
    before; after every step of the loop the queue holds each accepted order once (but
    the `left` that have left it)."""
    futures = []
    for n in range(requests):
        future = process.place()
        if future is not None:
            futures.append(future)
        if n % 2:
            await asyncio.sleep(0)  # the group commit writes what is waiting
        assert process.admission.queued == process.accepted - left <= QUEUE_LIMIT
    await asyncio.gather(*futures)
    assert process.admission.queued == process.accepted - left


async def test_a_burst_whose_notices_come_late_fills_the_queue_to_its_limit_and_no_more(
    process: tuple[Process, Database],
) -> None:
    proc, database = process
    await burst(proc, 40)
    assert (proc.accepted, proc.refused) == (QUEUE_LIMIT, 40 - QUEUE_LIMIT)
    assert proc.view.queued == QUEUE_LIMIT  # the view has them before their notices
    for notice in database.held:  # late: counted already, not again
        proc.fleet._received(json.dumps(notice))
        assert (proc.admission.queued, proc.view.queued) == (QUEUE_LIMIT, QUEUE_LIMIT)
    assert proc.place() is None


async def test_a_notice_that_comes_before_the_write_returns_counts_once(
    process: tuple[Process, Database],
) -> None:
    proc, database = process
    database.early = True
    futures = [proc.place() for _ in range(3)]
    await asyncio.gather(*[f for f in futures if f is not None])
    assert (proc.admission.queued, proc.view.queued) == (3, 3)
    database.early = False
    await burst(proc, 10)
    assert proc.accepted == QUEUE_LIMIT
    assert (proc.admission.queued, proc.view.queued) == (QUEUE_LIMIT, QUEUE_LIMIT)


async def test_a_read_taken_before_a_batch_committed_keeps_it_when_adopted(
    process: tuple[Process, Database],
) -> None:
    proc, database = process
    proc.view.reading()  # the fleet's read begins; its snapshot sees up to transaction 100
    await burst(proc, 3)
    # Adopted after those batches committed, it does not see them: they stay counted.
    proc.view.reconcile(fleet_state(101, queued=0), proc.clock.seconds())
    proc.fleet._feed()
    assert (proc.admission.queued, proc.view.queued) == (3, 3)
    for notice in database.held:
        proc.fleet._received(json.dumps(notice))
    assert proc.admission.queued == 3
    # The next read sees them all: still counted once.
    proc.view.reading()
    proc.view.reconcile(fleet_state(200, queued=3), proc.clock.seconds())
    proc.fleet._feed()
    assert (proc.admission.queued, proc.view.drift) == (3, 0)


async def test_an_order_cancelled_here_leaves_the_count_once_whenever_its_notice_comes(
    process: tuple[Process, Database],
) -> None:
    proc, database = process
    await burst(proc, QUEUE_LIMIT)
    for notice in database.held:
        proc.fleet._received(json.dumps(notice))

    def cancelled(xid: int, seq: int) -> str:
        return json.dumps({"k": "u", "x": str(xid), "l": [[seq, 1, "alice"]], "t": 0.0})

    # The notice first, then the cancel's own bookkeeping: one place free, not two.
    proc.fleet._received(cancelled(300, seq=2))
    proc.admission.left_queue(Priority.STANDARD)
    assert proc.admission.queued == QUEUE_LIMIT - 1
    # The other way round: counted until its notice comes, then free.
    proc.admission.left_queue(Priority.STANDARD)
    assert proc.admission.queued == QUEUE_LIMIT - 1
    proc.fleet._received(cancelled(301, seq=3))
    assert proc.admission.queued == QUEUE_LIMIT - 2
    await burst(proc, 5, left=2)
    assert proc.accepted == QUEUE_LIMIT + 2


async def test_a_claim_or_cancel_committed_here_frees_a_place_at_once_and_its_notice_not_again(
    process: tuple[Process, Database],
) -> None:
    proc, database = process
    await burst(proc, 10)
    assert proc.accepted == QUEUE_LIMIT
    ended = {"k": "u", "x": 400, "e": [[1, "alice"]]}
    claimed = {"k": "u", "x": 401, "s": [[102, 1, "full", 0, "w1"]]}
    cancel = {"k": "u", "x": 402, "l": [[103, 1, "alice"]]}
    # This process's worker ends the order in flight and claims the next one; a customer
    # cancels another here: each counts from its commit, no notice yet.
    proc.fleet.committed(ended)
    proc.fleet.committed(claimed)
    assert (proc.view.in_flight, proc.admission.queued) == (1, QUEUE_LIMIT - 1)
    proc.fleet.committed(cancel)
    proc.admission.left_queue(Priority.STANDARD)  # the cancel's own bookkeeping
    assert proc.admission.queued == QUEUE_LIMIT - 2
    # Every notice, late (the inserts' too): nothing is counted again.
    for notice in [*database.held, ended, claimed, cancel]:
        proc.fleet._received(json.dumps({**notice, "x": str(notice["x"]), "t": 0.0}))
        assert (proc.view.in_flight, proc.admission.queued) == (1, QUEUE_LIMIT - 2)
    await burst(proc, 5, left=2)
    assert proc.accepted == QUEUE_LIMIT + 2
