"""The fleet at run time: one PostgreSQL database, many `retail serve` and `retail worker`.

`Fleet` keeps this process's `FleetView` current and feeds it to admission:

- capacity is the sum of the live workers' slots (at least 1 for the policy while none
  is live; `GET /capacity` shows the real sum under `fleet`);
- the orders in flight anywhere, with their expected ends, are admission's timetable;
- the queued orders of the whole fleet, per priority, are admission's waiting counts
  (plus the orders this process admitted and has not stored yet), so
  `RETAIL_QUEUE_LIMIT` is one limit for the fleet and a refusal reads no database.

Every process of the fleet announces itself (`workers` table) with its workers' slots
(0 for an API-only process) and beats every `RETAIL_HEARTBEAT_S`; workers are woken by
the database's notice when orders are stored (the pool's poll is only a fallback).
Every process reads the fleet whole every `RETAIL_FLEET_RECONCILE_S` and clears out
workers silent for
`RETAIL_WORKER_DEAD_AFTER_S`: their capacity leaves the fleet and their orders' leases
end, so live workers resume them at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retail.core import capacity
from retail.core.admission import Admission, DecisionObserver, LevelObserver
from retail.core.fairness import FairShare
from retail.core.fleet import Applied, FleetView, FleetWorker
from retail.core.orders import Placed
from retail.core.pipeline import Pipeline
from retail.core.types import Priority
from retail.runtime.clock import Clock
from retail.runtime.metrics import Metrics
from retail.store.sql.fleet import FleetChannel

log = logging.getLogger(__name__)

RECONNECT_S = 1.0
RANKS = range(len(Priority))


class FleetAdmission(Admission):
    """Admission on the fleet's load: the view's timetable, its queue and this process's
    orders not stored yet.

    An order admitted here counts by its ticket until it is stored, then by the view:
    the group commit hands the view the orders of each batch (`Fleet.stored`) before
    their tickets settle, and the view skips their notice when it comes. A notice that
    comes first (between the commit and the store's answer) is known for this
    process's own by its sender (`Fleet._received`): its orders count by the view from
    then on, not by their tickets too. The waiting count is taken from the view again
    whenever a ticket settles. An order leaving the queue (started, cancelled, expired)
    leaves the count when its notice comes, or at once if this process's transaction
    took it out (`Fleet.committed`).
    """

    def __init__(
        self,
        view: FleetView,
        limits: capacity.Limits,
        pipeline: Pipeline,
        *,
        on_decision: DecisionObserver | None = None,
        fairness: FairShare | None = None,
        on_level: LevelObserver | None = None,
    ) -> None:
        super().__init__(
            limits,
            pipeline,
            view.dispatcher,
            on_decision=on_decision,
            fairness=fairness,
            on_level=on_level,
        )
        self.view = view
        # Orders of this process's transactions that the view has from their notices
        # while their tickets have not settled yet (per transaction id, by priority
        # rank): counted by the view, not by their tickets too.
        self._early: dict[int, list[int]] = {}

    def noticed_own(self, xid: int, queued: Sequence[Sequence[int]]) -> None:
        """The notice of a transaction of this process came before the store said it
        committed (`Fleet.stored`): the view counts its orders already."""
        if not any(self._unsettled):
            return
        counts = self._early.setdefault(xid, [0] * len(Priority))
        for rank, count in queued:
            counts[int(rank)] += int(count)

    def stored_own(self, xid: int) -> None:
        """The store said transaction `xid` committed; its tickets settle now."""
        self._early.pop(xid, None)

    def restore(self, stored_queued: int | Mapping[Priority, int]) -> None:
        if self._early and isinstance(stored_queued, Mapping):
            if not any(self._unsettled):
                self._early.clear()  # settled (or given back) all: nothing is counted twice
            else:
                early = [sum(counts[rank] for counts in self._early.values()) for rank in RANKS]
                stored_queued = {
                    priority: max(
                        0, count - min(early[priority.rank], self._unsettled[priority.rank])
                    )
                    for priority, count in stored_queued.items()
                }
        super().restore(stored_queued)

    def _settled(self, priority: Priority, *, queued: int) -> None:
        super()._settled(priority, queued=queued)
        self.restore(self.view.queued_by_priority())

    def load(self, now: float) -> capacity.Load:
        load = super().load(now)
        load.handoff_s = self.view.handoff_s  # a slot freed is taken a while later
        return load

    def left_queue(self, priority: Priority = Priority.STANDARD) -> None:
        """An order cancelled here: the view took it off when the cancel committed
        (`Fleet.committed`), or when its notice came if that was first. Taken off here as
        well, it would be taken off twice."""
        self.changes += 1
        self.restore(self.view.queued_by_priority())


@dataclass(frozen=True)
class FleetTiming:
    heartbeat_s: float
    dead_after_s: float
    reconcile_s: float


@dataclass(frozen=True)
class FleetStatus:
    """What `GET /capacity` and `/metrics` show of the fleet."""

    capacity: int
    in_flight: int
    queued: int
    workers: list[FleetWorker]
    read_at: datetime | None
    reconcile_s: float
    dead_after_s: float
    notice_delay_max_s: float
    notices: int
    last_drift: int
    handoff_s: float = 0.0


class Fleet:
    def __init__(
        self,
        *,
        database_url: str,
        clock: Clock,
        admission: FleetAdmission,
        timing: FleetTiming,
        member: tuple[str, int],
        on_work: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        own_backends: Callable[[], Collection[int]] = frozenset,
    ) -> None:
        self._channel = FleetChannel(database_url)
        # The server processes of this process's database connections: a notice one of
        # them sent is this process's own transaction.
        self._own_backends = own_backends
        self._clock = clock
        self._admission = admission
        self.view = admission.view
        self.timing = timing
        self._member = member  # (id, slots): every process of a fleet beats, API-only with 0
        self._on_work = on_work
        self._metrics = metrics
        self._reread = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_reconcile = -math.inf
        self._last_heartbeat = -math.inf
        self.notice_delay_max_s = 0.0  # since the last reconcile

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, announce this process's workers and read the fleet once, then keep it."""
        await self._open()
        self._task = asyncio.create_task(self._keep(), name="retail-fleet")

    async def stop(self) -> None:
        self._stopping = True
        self._reread.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel.connected:
            try:
                await self._channel.leave(self._member[0])
            except Exception:
                log.exception("fleet: leaving failed; the others clear this worker out")
        await self._channel.close()

    async def _open(self) -> None:
        await self._channel.connect(self._received)
        await self._channel.announce(*self._member)
        self._last_heartbeat = self._clock.monotonic()
        await self._reconcile()

    async def _keep(self) -> None:
        tick = min(self.timing.heartbeat_s, self.timing.reconcile_s)
        while not self._stopping:
            await self._clock.wait(self._reread, tick)
            if self._stopping:
                return
            try:
                if not self._channel.connected:
                    await self._open()
                    log.info("fleet: connected again")
                await self._beat()
                if (
                    self._reread.is_set()
                    or self._clock.monotonic() - self._last_reconcile >= self.timing.reconcile_s
                ):
                    await self._clear_dead()
                    await self._reconcile()
            except Exception as error:
                log.warning("fleet: %s; connecting again", error)
                await self._channel.close()
                await self._clock.wait(asyncio.Event(), RECONNECT_S)

    async def _beat(self) -> None:
        if self._clock.monotonic() - self._last_heartbeat < self.timing.heartbeat_s:
            return
        self._last_heartbeat = self._clock.monotonic()
        if not await self._channel.heartbeat(*self._member):
            log.warning("fleet: this process had been given up for dead; announcing it again")
            await self._channel.announce(*self._member)

    async def _clear_dead(self) -> None:
        dead = await self._channel.clear_dead(self.timing.dead_after_s, self._clock.now())
        if dead:
            log.warning("fleet: workers %s stopped beating; their orders resume", dead)
            self._on_work()

    async def _reconcile(self) -> None:
        self._reread.clear()
        fairness = self._admission.fairness
        self.view.reading()
        state = await self._channel.read(
            self.timing.dead_after_s, per_customer=fairness is not None
        )
        self._last_reconcile = self._clock.monotonic()
        self.view.reconcile(state, self._clock.seconds())
        if fairness is not None:
            fairness.rebuild(state.active_by_customer)
        self.notice_delay_max_s = 0.0
        self._feed()

    # --- notices ---------------------------------------------------------------------------

    def _received(self, payload: str, pid: int | None = None) -> None:
        try:
            notice = json.loads(payload)
        except ValueError:
            log.warning("fleet: an unreadable notice: %.80s", payload)
            return
        if notice.get("k") == "w":  # a worker came or left
            self._reread.set()
            self._on_work()
            return
        applied = self.view.notice(notice, self._clock.seconds())
        if applied.reread:
            self._reread.set()
            self._on_work()
            return
        if not applied.counted:
            return
        if (
            notice.get("k") == "i"
            and "x" in notice
            and pid is not None
            and self._admission.unsettled
            and pid in self._own_backends()
        ):
            self._admission.noticed_own(int(notice["x"]), notice.get("q", ()))
        if applied.sent_at is not None:
            delay_s = max(0.0, self._clock.seconds() - applied.sent_at)
            self.notice_delay_max_s = max(self.notice_delay_max_s, delay_s)
            if self._metrics is not None:
                self._metrics.fleet_notice(delay_s)
        self._follow(applied)

    def _follow(self, applied: Applied) -> None:
        """Admission after the view changed: ended orders' places free, the load fed."""
        for customer in applied.ended_customers:
            self._admission.order_ended(customer)
        self._feed()
        if applied.work_arrived:
            self._on_work()

    # --- this process's own commits --------------------------------------------------------

    def stored(self, placed: Sequence[Placed]) -> None:
        """Orders this process just stored: in the view at once, as their notices will put
        them (those notices are then skipped), before their tickets settle, so each is
        counted once all along: by its ticket, then by the view."""
        by_xid: dict[int, list[int]] = {}
        for order in placed:
            if order.xid is not None:
                counts = by_xid.setdefault(order.xid, [0] * len(Priority))
                counts[order.order.priority.rank] += 1
        now = self._clock.seconds()
        for xid, counts in by_xid.items():
            queued = [[rank, count] for rank, count in enumerate(counts) if count]
            self.view.own({"k": "i", "x": xid, "q": queued}, now)
            self._admission.stored_own(xid)

    def committed(self, notice: Mapping[str, Any]) -> None:
        """A transaction of this process that changed orders already stored (claims, step
        ends, cancels, expiries) committed: in the view at once, as its notices will put
        it (`FleetView.own`; those notices are then skipped), so admission here plans with
        an order claimed or cancelled here from that moment, not from its notice's."""
        applied = self.view.own(notice, self._clock.seconds())
        if applied is not None:
            self._follow(applied)

    def _feed(self) -> None:
        """Admission plans with the fleet: its slots, timetable and queue."""
        capacity = max(1, self.view.capacity)
        if self._admission.limits.capacity != capacity:
            self._admission.update(capacity=capacity)
        self._admission.restore(self.view.queued_by_priority())

    def status(self) -> FleetStatus:
        view = self.view
        return FleetStatus(
            capacity=view.capacity,
            in_flight=view.in_flight,
            queued=view.queued,
            workers=sorted(view.workers.values(), key=lambda worker: worker.id),
            read_at=view.read_at,
            reconcile_s=self.timing.reconcile_s,
            dead_after_s=self.timing.dead_after_s,
            notice_delay_max_s=self.notice_delay_max_s,
            notices=view.notices,
            last_drift=view.drift,
            handoff_s=view.handoff_s,
        )
