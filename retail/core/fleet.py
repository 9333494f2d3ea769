"""The fleet's load, as one process sees it: live workers, orders in flight, queued orders.

Several processes share one PostgreSQL database. Each keeps a `FleetView`, read whole
from the database now and then (`reconcile`, a `FleetState`) and kept current in
between by the notices the database sends as transactions commit (`notice`): orders
that entered the queue, started, moved to another worker, ended or left the queue.

A notice carries its transaction's id. A reconcile reads the state and the snapshot it
was read under together, so a notice whose transaction that snapshot already saw is
not counted twice, and one it did not see is counted once, in whichever order the two
arrive. The view is then as fresh as the notices: it lags the database by their
delivery time, and by at most one reconcile interval if a notice is lost.

A reconcile read before a transaction committed and adopted after its notice was
applied would drop that transaction's orders: the notices applied since the read
began (`reading`) whose transactions its snapshot did not see are applied again on
top of it.

This process's own commits need not wait for their notices: `own` applies a
transaction as its notices would, as soon as the store says it committed, and the
notices of that transaction and kind are then skipped when they arrive. Applied the
other way round (the notices first), `own` changes nothing; with some of them first,
it applies the rest. An order stored here is then counted by the view from the
moment its ticket settles, once; an order claimed, ended, cancelled or expired here
leaves its place from the moment the store returns, not its notice.

The counts per priority may go below zero for a moment: an order this process
claimed or cancelled leaves the queue at once, while the notice of another process's
insert that put it there may still be on its way. They are read as at least zero.

The view owns a `Dispatcher` (the in-flight timetable admission plans with): each
order in flight anywhere in the fleet, with its expected end estimated from the
pipeline's mean for its service level and the steps it has left.

A slot that frees while orders wait is taken again by whichever worker claims next,
perhaps in another process, and the view sees it taken when that claim's notice comes:
a queue place comes back that long after the slot's planned end. The view learns that
hand-off (`handoff_s`, a moving average) from the slots it sees freed while orders wait
and the starts it sees next, so admission's start estimates (the queue's `Retry-After`,
estimated starts) include it.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retail.core.dispatch import Dispatcher, Running
from retail.core.pipeline import Pipeline
from retail.core.types import Priority, ServiceLevel

HANDOFF_WEIGHT = 0.2  # of each new hand-off seen, in the moving average
HANDOFF_MAX_S = 10.0  # a longer one is not a hand-off (a slot left idle): not learned

# What an update's notice lists, each entry led by its order's seq: orders that started
# (`s`), moved to another worker (`m`), ended (`e`) or left the queue unstarted (`l`).
UPDATE_PARTS = ("s", "m", "e", "l")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A PostgreSQL snapshot (`pg_current_snapshot()`): which transactions it sees."""

    xmin: int
    xmax: int
    in_progress: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """`xmin:xmax:xip1,xip2,…` as PostgreSQL writes it."""
        xmin, xmax, running = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in running.split(",") if x.strip()))

    def sees(self, xid: int) -> bool:
        """Whether the transaction `xid` (committed: it sent a notice) is in this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.in_progress)


@dataclass(frozen=True, slots=True)
class FleetWorker:
    """A live worker process: its id (lease owner), slots and last heartbeat (UTC)."""

    id: str
    slots: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class Processing:
    """An order in fulfilment: who holds it and how far it got."""

    seq: int
    priority: Priority
    service_level: ServiceLevel
    step_index: int
    owner: str | None


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet as one read of the database saw it."""

    snapshot: Snapshot
    read_at: datetime  # the database's clock, UTC
    workers: Sequence[FleetWorker]
    processing: Sequence[Processing]
    queued: Mapping[Priority, int]
    active_by_customer: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Applied:
    """What a notice changed: whether work arrived, and whose orders ended."""

    counted: bool = False  # False: the last snapshot already saw it
    work_arrived: bool = False
    reread: bool = False  # the notice could not say it all: read the fleet again
    ended_customers: list[str] = field(default_factory=list)
    sent_at: float | None = None  # when the database sent it (seconds since the epoch)


class FleetView:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.dispatcher: Dispatcher[int] = Dispatcher(0)
        self.workers: dict[str, FleetWorker] = {}
        self._queued = [0] * len(Priority)
        self.snapshot: Snapshot | None = None
        self.read_at: datetime | None = None
        self.reconciles = 0
        self.notices = 0
        self.drift = 0  # orders the last reconcile corrected (queued and in flight)
        # Notices applied since the read under way began: a snapshot that does not see
        # their transactions gets them applied again (by transaction id).
        self._since_read: list[tuple[int, Mapping[str, Any]]] = []
        # (transaction id, kind) of the notices applied that the snapshot does not see,
        # and the queued orders their inserts added, per transaction, by priority rank.
        self._applied: set[tuple[int, str]] = set()
        self._inserted: dict[int, list[int]] = {}
        # The orders the updates applied changed, per transaction: (part, seq).
        self._updated: dict[int, set[tuple[str, int]]] = {}
        # (transaction id, kind) applied by `own` ahead of their notices: kept until a
        # snapshot sees the transaction, so its notice is skipped however late it comes.
        self._own: set[tuple[int, str]] = set()
        # When each slot freed while orders waited (planned end, or its end's notice if
        # sooner), a heap: the next start seen takes the earliest (`handoff_s`).
        self._vacated: list[float] = []
        self._handoffs = 0  # hand-offs learned
        self.handoff_s = 0.0

    # --- what admission reads ------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The slots of the live workers, all together."""
        return sum(worker.slots for worker in self.workers.values())

    @property
    def in_flight(self) -> int:
        return self.dispatcher.in_flight

    @property
    def queued(self) -> int:
        return sum(max(0, count) for count in self._queued)

    def queued_by_priority(self) -> dict[Priority, int]:
        return {priority: max(0, self._queued[priority.rank]) for priority in Priority}

    # --- keeping it current --------------------------------------------------------------

    def reading(self) -> None:
        """A read of the fleet begins: every notice applied so far committed before its
        snapshot, so the snapshot counts it; only those applied from now on may need
        applying again on top of it (`reconcile`)."""
        self._since_read = []

    def reconcile(self, state: FleetState, now: float) -> None:
        """Adopt a whole read of the fleet; `now` is the caller's timeline (seconds).

        The notices applied since the read began (`reading`) whose transactions its
        snapshot does not see are applied again on top of it: the read was taken before
        they committed."""
        before_queued = list(self._queued)
        before_running = set(self.dispatcher.running)
        self.workers = {worker.id: worker for worker in state.workers}
        dispatcher = self.dispatcher
        seen = {order.seq: order for order in state.processing}
        for seq in [seq for seq in dispatcher.running if seq not in seen]:
            dispatcher.finish(seq)
        for seq, order in seen.items():
            if seq not in dispatcher.running:
                dispatcher.place(seq, self._running(order, now))
        for priority in Priority:
            self._queued[priority.rank] = max(0, state.queued.get(priority, 0))
        self.snapshot = state.snapshot
        self.read_at = state.read_at
        self.reconciles += 1
        self._vacated = []  # the slots freed before the read may have been taken since
        snapshot = state.snapshot
        since, self._since_read = self._since_read, []
        self._applied = set()
        self._inserted = {}
        self._updated = {}
        for xid, notice in since:
            if not snapshot.sees(xid):
                self._apply(notice, xid, now)
        self._own = {key for key in self._own if not snapshot.sees(key[0])}
        self.drift = sum(
            abs(max(0, a) - max(0, b)) for a, b in zip(before_queued, self._queued, strict=True)
        )
        self.drift += len(before_running.symmetric_difference(dispatcher.running))

    def notice(self, notice: Mapping[str, Any], now: float) -> Applied:
        """Apply one notice (the JSON object the database sent)."""
        kind = notice.get("k")
        if kind == "r":
            return Applied(counted=True, reread=True)
        applied = Applied(sent_at=_float(notice.get("t")))
        raw_xid = notice.get("x")
        xid = None if raw_xid is None else int(raw_xid)
        if xid is not None:
            if self.snapshot is not None and self.snapshot.sees(xid):
                return applied  # the last reconcile counted it already
            if (xid, kind) in self._own:
                return applied  # this process applied it when it committed
        self.notices += 1
        return self._apply(notice, xid, now, applied)

    def own(self, notice: Mapping[str, Any], now: float) -> Applied | None:
        """Apply a transaction this process just committed, as its notices will say it
        (`x` its id, `k` its kind, the orders it changed): at once, and its notices of
        that kind are skipped when they come. None if the view has it already (its
        notices came first, or a read saw it). A transaction that sent several notices
        (an insert or update in several statements), some of them here already: the
        rest is applied."""
        xid = int(notice["x"])
        kind = str(notice["k"])
        if self.snapshot is not None and self.snapshot.sees(xid):
            return None
        key = (xid, kind)
        if key in self._own or (kind not in ("i", "u") and key in self._applied):
            return None
        self._own.add(key)
        if kind == "i":
            counts = [0] * len(Priority)
            for rank, count in notice.get("q", ()):
                counts[int(rank)] += int(count)
            already = self._inserted.get(xid, [0] * len(Priority))
            pairs = enumerate(zip(counts, already, strict=True))
            rest_i = [[rank, n - a] for rank, (n, a) in pairs if n > a]
            if not rest_i:
                return None
            return self._apply({"k": "i", "x": xid, "q": rest_i}, xid, now)
        if kind == "u":
            done = self._updated.get(xid, set())
            rest_u: dict[str, Any] = {"k": "u", "x": xid}
            for part in UPDATE_PARTS:
                entries = [e for e in notice.get(part, ()) if (part, int(e[0])) not in done]
                if entries:
                    rest_u[part] = entries
            if len(rest_u) == 2:
                return None
            return self._apply(rest_u, xid, now)
        return self._apply(notice, xid, now)

    def _apply(
        self, notice: Mapping[str, Any], xid: int | None, now: float, applied: Applied | None = None
    ) -> Applied:
        applied = applied if applied is not None else Applied()
        kind = notice.get("k")
        if xid is not None:
            self._since_read.append((xid, notice))
            self._applied.add((xid, str(kind)))
        applied.counted = True
        if kind == "i":
            inserted = None
            if xid is not None:
                inserted = self._inserted.setdefault(xid, [0] * len(Priority))
            for rank, count in notice.get("q", ()):
                self._queued[int(rank)] += int(count)
                if inserted is not None:
                    inserted[int(rank)] += int(count)
            applied.work_arrived = True
        elif kind == "u":
            if xid is not None:
                updated = self._updated.setdefault(xid, set())
                for part in UPDATE_PARTS:
                    updated.update((part, int(entry[0])) for entry in notice.get(part, ()))
            for seq, customer in notice.get("e", ()):
                ended = self.dispatcher.finish(int(seq))
                applied.ended_customers.append(str(customer))
                if ended is not None:
                    self._vacate(min(ended.expected_end, now))
            for entry in notice.get("s", ()):
                order = _processing(entry)
                self._queued[order.priority.rank] -= 1
                self.dispatcher.place(order.seq, self._running(order, now))
                self._handed_over(now)
            for entry in notice.get("m", ()):
                order = _processing(entry)
                self.dispatcher.place(order.seq, self._running(order, now))
            for _seq, rank, _customer in notice.get("l", ()):
                self._queued[int(rank)] -= 1
            if not self.queued:
                self._vacated = []  # none waits: a slot free now is idle, not handed over
        return applied

    def _vacate(self, at: float) -> None:
        """A slot freed at `at`: the next order waiting takes it (if one waits)."""
        if self.queued:
            heapq.heappush(self._vacated, at)
            while len(self._vacated) > max(1, self.capacity):
                heapq.heappop(self._vacated)  # the oldest: its taker was missed

    def _handed_over(self, now: float) -> None:
        """An order started at `now` in the slot freed earliest: learn the hand-off."""
        if not self._vacated:
            return
        taken_s = now - heapq.heappop(self._vacated)
        if 0.0 <= taken_s <= HANDOFF_MAX_S:
            weight = HANDOFF_WEIGHT if self._handoffs else 1.0  # the first one, outright
            self._handoffs += 1
            self.handoff_s += weight * (taken_s - self.handoff_s)

    def _running(self, order: Processing, now: float) -> Running:
        means = [model.mean_s for _, model in self.pipeline.step_models(order.service_level)]
        share = sum(means[order.step_index :]) / sum(means) if sum(means) > 0 else 0.0
        planned_s = self.pipeline.mean_s(order.service_level) * share
        return Running(started_at=now, expected_end=now + planned_s)


def _processing(entry: Sequence[Any]) -> Processing:
    seq, rank, level, step_index, owner = entry
    return Processing(
        seq=int(seq),
        priority=Priority.of_rank(int(rank)),
        service_level=ServiceLevel(level),
        step_index=int(step_index),
        owner=owner,
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
