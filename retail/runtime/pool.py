"""The worker pool: claims orders from the store and runs their steps.

One dispatcher task claims orders in start order (by priority, then first come
first served), as many at once as the `Dispatcher` (the core's in-flight timetable,
shared with admission) has free slots, in one transaction, and starts one named task
per order. Each order's step boundaries and its end go through the `Completer`, which
writes the transitions of all orders waiting at that moment in one transaction. Once per poll
interval it ends the waiting orders whose start deadline has passed (`expired`,
their stock back); a claim never takes one, so no slot is spent on it. Capacity
`1` is the synchronous server (one order at a time); capacity `N` fulfils up to N
at once on the event loop. Stopping: no new claims, in-flight orders get
`shutdown_timeout_s` to finish, the rest are cancelled and their leases released
so the next start resumes them at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from datetime import datetime, timedelta

from retail.core.admission import Admission
from retail.core.pipeline import PAYMENT_STEP, Pipeline, Plan
from retail.core.types import OrderStatus
from retail.runtime.bus import EventBus
from retail.runtime.clock import Clock
from retail.runtime.completer import Completer
from retail.runtime.idempotency import Idempotency
from retail.runtime.metrics import Metrics
from retail.runtime.pacing import Paced
from retail.store.base import Claim, Ending, LeaseLost, Store, Transition

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
HOUSEKEEPING_INTERVAL_S = 600.0
EXPIRY_READ_SHARE = 0.25  # the deadline read, indexed, may take up to this share of the time


class WorkerPool:
    def __init__(
        self,
        *,
        store: Store,
        idempotency: Idempotency,
        clock: Clock,
        pipeline: Pipeline,
        admission: Admission,
        bus: EventBus,
        lease_s: float,
        poll_interval_s: float,
        shutdown_timeout_s: float,
        claiming: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._store = store
        self._idempotency = idempotency
        self._clock = clock
        self._pipeline = pipeline
        self._admission = admission
        self._bus = bus
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._claiming = claiming
        self._metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        self._stopping = False
        self._claimer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_housekeeping = -math.inf
        # The queue count reads every waiting order: paced so a deep queue does not slow
        # the intake. Expiry reads an index of the deadlines alone: every poll interval,
        # unless a read stalls (then four times its length), so an order ends `expired`
        # within about a poll interval of its deadline.
        self._resync_pace = Paced(clock, poll_interval_s)
        self._expiry_pace = Paced(clock, poll_interval_s, share=EXPIRY_READ_SHARE)
        self._dispatcher = admission.dispatcher
        self._completer = Completer(
            store=store, clock=clock, lease_s=lease_s, on_written=self._metrics.fulfilment_written
        )

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight

    def current_step(self, order_id: uuid.UUID) -> str | None:
        """The step an order fulfilled here is in (None if it is not in flight here)."""
        running = self._dispatcher.running.get(order_id)
        return running.step if running is not None else None

    @property
    def claiming(self) -> bool:
        """Whether this process fulfils orders (else it only keeps its load figures fresh)."""
        return self._claiming

    @property
    def running(self) -> bool:
        return self._claimer is not None and not self._claimer.done()

    def notify(self) -> None:
        """Something changed (new order, free slot, new capacity): look for work now."""
        self._wake.set()

    def work_arrived(self) -> None:
        """New orders are stored: look for work now if a slot is free to start one.

        With every slot taken the dispatcher is woken when one frees instead, so a busy
        intake does not wake it on every committed batch.
        """
        if self._claiming and self._dispatcher.free_slots:
            self._wake.set()

    async def start(self) -> None:
        self._completer.start()
        self._claimer = asyncio.create_task(self._dispatch(), name="retail-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._claimer is not None:
            await asyncio.gather(self._claimer, return_exceptions=True)
        unfinished: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, unfinished = await asyncio.wait(self._tasks, timeout=self._shutdown_timeout_s)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        # The transitions already handed over are written before the leases are given up,
        # so none of them renews a released lease.
        await self._completer.stop()
        if unfinished:
            released = await self._store.release_leases(owner=self.owner, now=self._clock.now())
            log.warning("shutdown: left %d unfinished orders for the next start", released)

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if not self._claiming or not self._dispatcher.free_slots:
                if self._claiming:
                    await self._expire_due()
                await self._resync()
                await self._idle()
                continue
            try:
                started = await self._claim_and_start()
            except Exception:
                log.exception("claiming an order failed; retrying")
                started = False
            if not started:
                await self._expire_due()
                await self._resync()
                await self._housekeeping()
                await self._idle()

    async def _expire_due(self) -> None:
        if not self._expiry_pace.due():
            return
        try:
            with self._expiry_pace.running():
                expired = await self._store.expire_due(now=self._clock.now())
        except Exception:
            log.exception("expiring orders past their start deadline failed")
            return
        for order in expired:
            self._admission.left_queue(order.priority)
            self._bus.publish(order.event)

    async def _resync(self) -> None:
        # Other processes' changes are looked for once per poll interval at most, and
        # less often when counting a deep queue would take a noticeable share of the time.
        if not self._resync_pace.due():
            return
        with self._resync_pace.running():
            read_at_change = self._admission.changes
            try:
                counts = await self._store.queued_by_priority()
            except Exception:
                log.exception("reading the queue length failed")
                return
            self._admission.resync(counts, read_at_change=read_at_change)
            fairness = self._admission.fairness
            if fairness is not None:  # places per customer: heals a count gone wrong
                fair_change = fairness.changes
                try:
                    held = await self._store.count_active_by_customer()
                except Exception:
                    log.exception("reading the places per customer failed")
                    return
                fairness.rebuild(held, read_at_change=fair_change)

    async def _idle(self) -> None:
        await self._clock.wait(self._wake, self._poll_interval_s)

    async def _claim_and_start(self) -> bool:
        """Claim as many orders as there are free slots, in one transaction, and start them."""
        now = self._clock.now()
        claims = await self._store.claim_many(
            owner=self.owner, now=now, lease_s=self._lease_s, limit=self._dispatcher.free_slots
        )
        for claim in claims:
            self._start(claim, now)
        return bool(claims)

    def _start(self, claim: Claim, now: datetime) -> None:
        if not claim.resumed:
            self._admission.left_queue(claim.priority)
        self._metrics.order_started(
            None if claim.resumed else (now - claim.created_at).total_seconds()
        )
        self._bus.publish(claim.event)
        plan = self._pipeline.plan(
            order_seq=claim.seq, line_count=claim.line_count, level=claim.service_level
        )
        delays = plan.delays_s[claim.step_index :]
        begin = self._handed_over(claim, now, delays[0] if delays else 0.0)
        self._dispatcher.start(
            claim.order_id,
            now=begin.timestamp(),
            planned_s=sum(delays),
            customer=claim.customer_id,
        )
        self._metrics.set_in_flight(self._dispatcher.in_flight)
        task = asyncio.create_task(
            self._fulfil(claim, plan, begin), name=f"retail-order-{claim.order_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handed_over(self, claim: Claim, now: datetime, first_step_s: float) -> datetime:
        """When the order's timetable starts: when its slot was handed over to it.

        The capacity policy hands a slot over at the instant it frees: to the order it
        admitted then, or to the next waiting order when the one holding it ends. Here
        the order was claimed a few milliseconds later (its group commit, the previous
        order's end written, the claim's transaction), so its timetable starts at the
        later of its acceptance and the moment its slot was free, as the time spent
        recording a step boundary comes out of the next step. At most its first step
        is taken back; a resumed order starts now.
        """
        freed = self._dispatcher.freed_at()
        if claim.resumed:
            return now
        begin = claim.created_at.timestamp()
        if freed is not None and freed > begin:
            begin = freed
        now_s = now.timestamp()
        earliest = now_s - first_step_s
        if begin >= now_s:
            return now
        if begin < earliest:
            begin = earliest
        return now - timedelta(seconds=now_s - begin)

    async def _fulfil(self, claim: Claim, plan: Plan, started: datetime) -> None:
        try:
            await self._run_steps(claim, plan, started)
        except LeaseLost:
            log.info("order %s: lease lost to another worker; leaving it", claim.order_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "order %s: fulfilment failed; it resumes when the lease ends", claim.order_id
            )
        finally:
            self._dispatcher.finish(claim.order_id, at=self._clock.now().timestamp())
            self._metrics.set_in_flight(self._dispatcher.in_flight)
            self.notify()

    async def _run_steps(self, claim: Claim, plan: Plan, started: datetime) -> OrderStatus:
        if claim.token > MAX_ATTEMPTS:
            return await self._finish(
                claim,
                OrderStatus.FAILED,
                reason=f"gave up after {MAX_ATTEMPTS} attempts",
                code="attempts_exhausted",
            )
        steps = plan.steps
        index = claim.step_index
        completed: tuple[str, int, float] | None = None
        # Steps keep to a timetable that starts when the order was claimed: the time spent
        # recording the claim or a step boundary, or waking up late, comes out of the next
        # step, so an order holds its slot for its planned time, not that plus the writes.
        step_start = started
        while index < len(steps):
            starting = (steps[index].name, steps[index].delay_s)
            for event in await self._completer.write(Transition(claim, completed, starting)):
                self._bus.publish(event)
            running = self._dispatcher.running.get(claim.order_id)
            if running is not None:
                running.step = starting[0]
            began = self._clock.now()
            due = step_start + timedelta(seconds=starting[1])
            await self._clock.sleep((due - began).total_seconds())
            took_s = (self._clock.now() - began).total_seconds()
            step_start = due
            self._metrics.step_done(starting[0], took_s)
            if starting[0] == PAYMENT_STEP and plan.payment_declined:
                return await self._finish(
                    claim,
                    OrderStatus.FAILED,
                    reason="payment declined",
                    code="payment_declined",
                    step=PAYMENT_STEP,
                )
            completed = (starting[0], index + 1, took_s)
            index += 1
        # The last step's end and the order's end are one write.
        return await self._finish(
            claim, OrderStatus.FULFILLED, skipped=list(plan.skipped), completed=completed
        )

    async def _finish(
        self,
        claim: Claim,
        status: OrderStatus,
        *,
        reason: str | None = None,
        code: str | None = None,
        step: str | None = None,
        skipped: list[str] | None = None,
        completed: tuple[str, int, float] | None = None,
    ) -> OrderStatus:
        """End the order; `code` names a failure's reason in metrics."""
        detail: dict[str, object] = {}
        if step:
            detail["step"] = step
        if skipped:
            detail["skipped_steps"] = skipped
        if status is OrderStatus.FAILED:
            detail["stock_released"] = True
        ending = Ending(status, reason, detail)
        *steps, event = await self._completer.write(Transition(claim, completed, ending=ending))
        for step_event in steps:
            self._bus.publish(step_event)
        self._admission.order_ended(claim.customer_id)
        self._metrics.order_done((event.at - claim.started_at).total_seconds())
        if code is not None:
            self._metrics.order_failed(code)
        self._bus.publish(event)
        return status

    async def _housekeeping(self) -> None:
        if self._clock.monotonic() - self._last_housekeeping < HOUSEKEEPING_INTERVAL_S:
            return
        self._last_housekeeping = self._clock.monotonic()
        try:
            purged = await self._idempotency.purge(now=self._clock.now())
            if purged:
                log.info("purged %d expired idempotency keys", purged)
        except Exception:
            log.exception("housekeeping failed")
