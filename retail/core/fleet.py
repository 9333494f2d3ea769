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

The view owns a `Dispatcher` (the in-flight timetable admission plans with): each
order in flight anywhere in the fleet, with its expected end estimated from the
pipeline's mean for its service level and the steps it has left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retail.core.dispatch import Dispatcher, Running
from retail.core.pipeline import Pipeline
from retail.core.types import Priority, ServiceLevel


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
        return sum(self._queued)

    def queued_by_priority(self) -> dict[Priority, int]:
        return {priority: self._queued[priority.rank] for priority in Priority}

    # --- keeping it current --------------------------------------------------------------

    def reconcile(self, state: FleetState, now: float) -> None:
        """Adopt a whole read of the fleet; `now` is the caller's timeline (seconds)."""
        before_queued = list(self._queued)
        before_running = set(self.dispatcher.running)
        self.workers = {worker.id: worker for worker in state.workers}
        running = self.dispatcher.running
        seen = {order.seq: order for order in state.processing}
        for seq in list(running):
            if seq not in seen:
                del running[seq]
        for seq, order in seen.items():
            if seq not in running:
                running[seq] = self._running(order, now)
        for priority in Priority:
            self._queued[priority.rank] = max(0, state.queued.get(priority, 0))
        self.snapshot = state.snapshot
        self.read_at = state.read_at
        self.reconciles += 1
        self.drift = sum(abs(a - b) for a, b in zip(before_queued, self._queued, strict=True))
        self.drift += len(before_running.symmetric_difference(running))

    def notice(self, notice: Mapping[str, Any], now: float) -> Applied:
        """Apply one notice (the JSON object the database sent)."""
        kind = notice.get("k")
        if kind == "r":
            return Applied(counted=True, reread=True)
        applied = Applied(sent_at=_float(notice.get("t")))
        xid = notice.get("x")
        if xid is not None and self.snapshot is not None and self.snapshot.sees(int(xid)):
            return applied  # the last reconcile counted it already
        applied.counted = True
        self.notices += 1
        if kind == "i":
            for rank, count in notice.get("q", ()):
                self._queued[int(rank)] += int(count)
            applied.work_arrived = True
        elif kind == "u":
            for entry in notice.get("s", ()):
                order = _processing(entry)
                rank = order.priority.rank
                self._queued[rank] = max(0, self._queued[rank] - 1)
                self.dispatcher.running[order.seq] = self._running(order, now)
            for entry in notice.get("m", ()):
                order = _processing(entry)
                self.dispatcher.running[order.seq] = self._running(order, now)
            for seq, customer in notice.get("e", ()):
                self.dispatcher.running.pop(int(seq), None)
                applied.ended_customers.append(str(customer))
            for _seq, rank, _customer in notice.get("l", ()):
                self._queued[int(rank)] = max(0, self._queued[int(rank)] - 1)
        return applied

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
