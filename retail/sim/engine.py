"""The discrete-event loop: the server's own policy objects on a virtual clock.

One run drives exactly what `retail serve` runs, minus HTTP and the database:

- an arrival calls `Admission.admit(now, SIM_CUSTOMER, priority=..., start_within_s=...)`
  (every order of a run is one customer's, as with `retail load`: a customer alone has
  the whole service; its priority comes from the `--mix`, as `retail load` draws it); a
  refusal (`CapacityExceeded`) is the `503`, and a client with retries left comes back
  after its `Retry-After` (with `retry_budget`: stretched by a random 0-50 %, and only
  while the retries stay within that share of the orders sent so far, as `retail load
  --retry` does);
- an admitted order `keep()`s its ticket (it is stored) and joins the `WaitingLine` at
  its priority;
- whenever the `Dispatcher` has a free slot, the next waiting order (by priority, then
  first come first served) starts: it leaves the line (`Admission.left_queue`), the
  `Pipeline` plans it at its service level and `Dispatcher.start` holds the slot for
  the planned time;
- a waiting order whose start deadline passes ends `expired` at that instant (it leaves
  the line and the count of waiting orders, as the worker pool expires it) and never
  takes a slot;
- at the end of its plan (or at the end of the payment step, if payment is declined,
  as the worker pool does) `Dispatcher.finish` frees the slot.

Time is a float of seconds from the start of the run. Events at the same instant run
in this order: ends first (a slot freed at t is free for an order arriving at t), then
arrivals and retries in the order they were due. The run goes on after the last
arrival until every accepted order has ended.

Randomness: the arrivals come from `retail.loadgen.schedule.due_times` with `seed`, as
for `retail load`; the plans draw from one generator seeded from `seed` too (one
stream for the run, not one generator per order as the server uses: the same models
and far cheaper). So a run repeats exactly for the same seed.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import time
from array import array
from dataclasses import dataclass, field

from retail.core.admission import Admission
from retail.core.capacity import Limits
from retail.core.dispatch import WaitingLine
from retail.core.errors import CapacityExceeded
from retail.core.pipeline import PAYMENT_STEP, Pipeline
from retail.core.types import Priority, ServiceLevel
from retail.loadgen.mix import Mix, RetryBudget, retry_delay
from retail.loadgen.schedule import Arrivals, Schedule, due_times

TIMELINE_POINTS = 600  # samples of the queue over the arrivals; the drain goes on at that pace
MAX_TIMELINE_POINTS = 4 * TIMELINE_POINTS

_END = 0  # event kinds, in the order they run at the same instant
_RETRY = 1
_EXPIRE = 2  # an order that starts exactly at its deadline is in time
# Sums of delays land a rounding error either side of a deadline they meet exactly.
_DEADLINE_SLACK_S = 1e-9


@dataclass(frozen=True)
class SimConfig:
    limits: Limits
    pipeline: Pipeline
    schedule: Schedule
    arrivals: Arrivals = Arrivals.FIXED
    seed: int = 0
    max_orders: int | None = None
    retries: int = 0  # a refused order comes back after its Retry-After, up to this often
    line_count: int = 1  # lines per order (delays grow with RETAIL_DELAY_PER_EXTRA_LINE)
    mix: Mix | None = None  # priorities of the orders (None: every order standard)
    start_within_s: float | None = None  # every order's start deadline, if any
    # With a budget, retries are jittered and at most this share of the orders sent so far
    # (None: every refused order with retries left comes back after exactly Retry-After).
    retry_budget: float | None = None
    # Orders due before this are left out (their priorities still drawn, so the others keep
    # theirs): the same arrivals as a run of the whole schedule, without its first part.
    skip_before_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    in_flight: int
    queued: int


@dataclass
class PriorityCounts:
    """One priority's orders: what admission decided, then how they ended."""

    orders: int = 0
    accepted: int = 0  # degraded ones included
    degraded: int = 0
    refused: int = 0  # on their last attempt
    waits: array[float] = field(default_factory=lambda: array("d"))  # of started orders
    expired: int = 0
    fulfilled: int = 0
    ends: array[float] = field(default_factory=lambda: array("d"))  # of fulfilled orders
    sojourns: array[float] = field(default_factory=lambda: array("d"))
    # every 503 of this priority's orders (retried ones too), the Retry-After it gave (and
    # its Retry-After-Ms, in seconds), and every accepted attempt: the error per priority
    refusal_at: array[float] = field(default_factory=lambda: array("d"))
    refusal_retry_after: array[float] = field(default_factory=lambda: array("d"))
    refusal_retry_after_ms: array[float] = field(default_factory=lambda: array("d"))
    accepted_at: array[float] = field(default_factory=lambda: array("d"))


@dataclass
class SimRun:
    """What happened, order by order where it matters; `report.summarize` makes the figures."""

    config: SimConfig
    duration_s: float  # the arrivals' window: the schedule, or up to the order after the last
    orders: int = 0  # distinct orders (a retry is the same order again)
    attempts: int = 0  # requests, retries included
    accepted: int = 0
    degraded: int = 0
    refused: int = 0  # orders refused on their last attempt
    refusals: int = 0  # 503 answers, retried ones included
    fulfilled: int = 0
    failed: int = 0  # payment declined
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    first_fulfilled_s: float | None = None
    last_fulfilled_s: float | None = None
    # per started order: when it started, how long it waited (from the accepted attempt)
    # and the time its plan held the slot (the service time it drew)
    starts: array[float] = field(default_factory=lambda: array("d"))
    waits: array[float] = field(default_factory=lambda: array("d"))
    services: array[float] = field(default_factory=lambda: array("d"))
    # per fulfilled order: when it ended and its time in the system (from its first due time)
    ends: array[float] = field(default_factory=lambda: array("d"))
    sojourns: array[float] = field(default_factory=lambda: array("d"))
    refused_at: array[float] = field(default_factory=lambda: array("d"))
    # every accepted attempt (each 503's, per priority: `by_priority`)
    accepted_at: array[float] = field(default_factory=lambda: array("d"))
    timeline: list[Sample] = field(default_factory=list)
    expired: int = 0  # accepted, never started: the start deadline passed in the queue
    retries_denied: int = 0  # retries the retry budget did not allow
    # Per priority (index `Priority.rank`): orders, accepted, degraded, refused, expired,
    # fulfilled; and the waits of started orders.
    by_priority: list[PriorityCounts] = field(
        default_factory=lambda: [PriorityCounts() for _ in Priority]
    )

    @property
    def max_queued(self) -> int:
        return max((s.queued for s in self.timeline), default=0)


def arrival_times(config: SimConfig) -> tuple[list[float], float]:
    """The due times of the run's orders and the window they fall in."""
    cap = config.max_orders
    due = due_times(
        config.schedule,
        config.arrivals,
        seed=config.seed,
        max_orders=None if cap is None else cap + 1,
    )
    if cap is not None and len(due) > cap:
        # Cut short by the order count: the window ends where the next order would be due.
        return due[:cap], due[cap]
    return due, config.schedule.duration_s


SIM_CUSTOMER = "sim"
_WAITING, _STARTED, _EXPIRED = 0, 1, 2


def simulate(config: SimConfig) -> SimRun:
    """Run the arrivals of `config` through the policy until every accepted order has ended."""
    wall_start = time.perf_counter()
    due, window_s = arrival_times(config)
    run = SimRun(config=config, duration_s=window_s)
    admission = Admission(config.limits, config.pipeline)
    dispatcher = admission.dispatcher
    line: WaitingLine[tuple[int, float, float, ServiceLevel, int]] = WaitingLine()
    pipeline = config.pipeline
    rng = random.Random(f"retail-sim:{config.seed}")
    retries = config.retries
    line_count = config.line_count
    # Each order's priority (rank) as `retail load` draws it for the same seed.
    ranks = (
        [Priority(name).rank for name in config.mix.assign(len(due), config.seed)]
        if config.mix is not None
        else None
    )
    by_rank = tuple(Priority.of_rank(rank) for rank in range(len(Priority)))
    per = run.by_priority
    standard = Priority.STANDARD.rank
    within = config.start_within_s
    budget = RetryBudget(config.retry_budget) if config.retry_budget is not None else None
    jitter_rng = random.Random(f"retail-sim-retry:{config.seed}")
    expired = 0
    stale = 0  # expired orders still in `line` (taken out when they reach its head)

    # (t, kind, key, first due, attempt); for an arrival or retry the key is the order's
    # index, for an end the order's seq.
    heap: list[tuple[float, int, int, float, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    admit, left_queue, ended = admission.admit, admission.left_queue, admission.order_ended
    plan_of, start, finish = pipeline.plan, dispatcher.start, dispatcher.finish
    running = dispatcher.running
    starts_add, waits_add, services_add = run.starts.append, run.waits.append, run.services.append
    ends_add, sojourns_add = run.ends.append, run.sojourns.append
    refused_add = run.refused_at.append
    accepted_add = run.accepted_at.append
    degraded = ServiceLevel.DEGRADED

    interval = max(window_s, 1e-9) / TIMELINE_POINTS
    next_sample = 0.0
    timeline = run.timeline

    seq = 0  # accepted orders, in the order they were stored (the server's `seq`)
    accepted = degraded_count = refused = refusals = fulfilled = failed = 0
    # by seq (1-based, slot 0 unused): the rank of each accepted order
    seq_rank = array("b", [0])
    seq_state = array("b", [0])  # by seq: _WAITING, _STARTED or _EXPIRED (with deadlines)
    first_fulfilled: float | None = None
    last_fulfilled = 0.0
    now = 0.0
    count = len(due)
    index = bisect.bisect_left(due, config.skip_before_s) if config.skip_before_s > 0 else 0
    skipped = index
    inf = math.inf

    while True:
        # The next event: an end or retry from the heap, or the next new arrival.
        heap_t = heap[0][0] if heap else inf
        arrival_t = due[index] if index < count else inf
        if heap_t <= arrival_t:
            if heap_t == inf:
                break
            now, kind, key, first_due, attempt = pop(heap)
        else:
            now, kind, key, first_due, attempt = arrival_t, _RETRY, index, arrival_t, 0
            index += 1
            if budget is not None:
                budget.sent()

        while next_sample <= now:
            timeline.append(Sample(next_sample, len(running), len(line) - stale))
            next_sample += interval
            if len(timeline) >= MAX_TIMELINE_POINTS:
                del timeline[1::2]
                interval *= 2
                next_sample = timeline[-1].t_s + interval

        if kind == _EXPIRE:
            if seq_state[key] == _WAITING:  # still waiting at its deadline
                seq_state[key] = _EXPIRED
                rank = seq_rank[key]
                expired += 1
                stale += 1
                per[rank].expired += 1
                left_queue(by_rank[rank])
                ended(SIM_CUSTOMER)
            continue
        if kind == _END:
            finish(key)
            ended(SIM_CUSTOMER)
            if attempt:  # payment declined
                failed += 1
            else:
                fulfilled += 1
                if first_fulfilled is None:
                    first_fulfilled = now
                last_fulfilled = now
                ends_add(now)
                sojourns_add(now - first_due)
                counts = per[seq_rank[key]]
                counts.fulfilled += 1
                counts.ends.append(now)
                counts.sojourns.append(now - first_due)
        else:
            rank = ranks[key] if ranks is not None else standard
            priority = by_rank[rank]
            counts = per[rank]
            if not attempt:
                counts.orders += 1
            try:
                ticket = admit(now, SIM_CUSTOMER, priority=priority, start_within_s=within)
            except CapacityExceeded as refusal:
                refusals += 1
                # As `retail load` retries: after Retry-After-Ms, where given.
                fine_s = (
                    refusal.retry_after_ms / 1000.0
                    if refusal.retry_after_ms is not None
                    else float(refusal.retry_after_s)
                )
                counts.refusal_at.append(now)
                counts.refusal_retry_after.append(refusal.retry_after_s)
                counts.refusal_retry_after_ms.append(fine_s)
                if attempt < retries and (budget is None or budget.spend()):
                    delay = fine_s
                    if budget is not None:
                        delay = retry_delay(delay, jitter_rng)
                    push(heap, (now + delay, _RETRY, key, first_due, attempt + 1))
                else:
                    refused += 1
                    counts.refused += 1
                    refused_add(now)
                continue
            ticket.keep()
            accepted += 1
            counts.accepted += 1
            accepted_add(now)
            counts.accepted_at.append(now)
            level = ticket.decision.service_level
            if level is degraded:
                degraded_count += 1
                counts.degraded += 1
            seq += 1
            seq_rank.append(rank)
            line.push((seq, first_due, now, level, rank), priority)
            if within is not None:
                seq_state.append(_WAITING)
                push(heap, (now + within + _DEADLINE_SLACK_S, _EXPIRE, seq, first_due, 0))

        # Free slots take the next waiting orders, first come first served.
        while line and len(running) < dispatcher.capacity:
            order, order_due, accepted_at, level, rank = line.pop()
            if within is not None:
                if seq_state[order] == _EXPIRED:  # left already, at its deadline
                    stale -= 1
                    continue
                seq_state[order] = _STARTED
            left_queue(by_rank[rank])
            per[rank].waits.append(now - accepted_at)
            plan = plan_of(order_seq=order, line_count=line_count, level=level, rng=rng)
            delays = plan.delays_s
            planned = sum(delays)
            start(order, now=now, planned_s=planned)
            starts_add(now)
            waits_add(now - accepted_at)
            if plan.payment_declined:
                # The order ends with the payment step, as in the worker pool.
                until = 0.0
                for name, delay_s in zip(plan.names, delays, strict=True):
                    until += delay_s
                    if name == PAYMENT_STEP:
                        break
                services_add(until)
                push(heap, (now + until, _END, order, order_due, 1))
            else:
                services_add(planned)
                push(heap, (now + planned, _END, order, order_due, 0))

    run.orders = count - skipped
    run.attempts = count - skipped + refusals - refused
    run.accepted = accepted
    run.degraded = degraded_count
    run.refused = refused
    run.refusals = refusals
    run.fulfilled = fulfilled
    run.failed = failed
    run.expired = expired
    run.retries_denied = budget.denied if budget is not None else 0
    run.sim_seconds = now
    run.first_fulfilled_s = first_fulfilled
    run.last_fulfilled_s = last_fulfilled if first_fulfilled is not None else None
    timeline.append(Sample(now, len(running), len(line) - stale))
    run.wall_seconds = time.perf_counter() - wall_start
    return run
