"""The capacity policy: admit, queue, degrade or reject a new order.

Pure: no I/O, no clock, no framework. `decide(limits, load)` turns a snapshot of
the current load and the configured limits into a frozen decision value, which
`POST /orders` acts on before it touches the database.

Estimates assume every order takes the mean service time of its service level
and that waiting orders start in priority order (first come first served within a
priority), each on the slot that frees first: a new order's start is estimated among
the waiting orders that start before it.

Priorities (`decide(..., priority=...)`): `Limits.critical_reserve` holds back room
that only critical orders may take (fulfilment slots in `reject` mode, queue places
in `queue` and `degrade` modes); a sheddable order is taken only if it can start
within `Limits.sheddable_max_wait_s`; the degraded path is never given to a critical
order. A deadline (`start_within_s`) refuses an order whose estimated start is later.

`auto` mode (`auto_level`, then `decide(..., level=...)`): an order that can start at
once is admitted; otherwise the predicted wait of a new standard order (the orders
ahead each at their own level: `ahead_service_s`) picks a level: queue in full while
it is within `Limits.target_wait_s`; past it, refuse until the wait is back under
`AUTO_EXIT_FRACTION` of the target (hysteresis: the level does not flap with every
order, and a refusing spell is long enough for a whole-second Retry-After to say
when it ends); then the reduced path, while the wait stays within the target, back
to queue once the backlog is gone. Critical orders are never degraded, and
are queued while their own wait (behind critical orders only) meets the target.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

from retail.core.types import AutoLevel, OverloadMode, Priority, ServiceLevel

AUTO_EXIT_FRACTION = 0.25  # a level entered above the target is left below this share of it
DEFAULT_TARGET_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    mode: OverloadMode
    capacity: int
    queue_limit: int
    max_queue_wait_s: float | None = None
    critical_reserve: int = 0  # slots (reject mode) or queue places only critical orders take
    sheddable_max_wait_s: float = 0.0  # a sheddable order is taken if it starts within this
    target_wait_s: float = DEFAULT_TARGET_WAIT_S  # auto mode: the longest wait it plans for


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class Load:
    """What the process knows about its own load, at one instant."""

    in_flight: int
    queued: int
    # seconds until each in-flight order is expected to finish (any order)
    remaining_s: tuple[float, ...]
    full_service_s: float
    degraded_service_s: float
    # Of `queued`: the critical ones (they start before all others) and the sheddable ones
    # (they start after all others); the rest are standard.
    critical_queued: int = 0
    sheddable_queued: int = 0
    # Of `queued`: those on the reduced path (never critical), standard and sheddable.
    degraded_queued: int = 0
    degraded_sheddable_queued: int = 0
    # The waiting orders of each priority (by `Priority.rank`) in start order, as runs of
    # `(degraded, count)`. None: within a priority the full ones start first.
    runs: tuple[tuple[tuple[bool, int], ...], ...] | None = None
    # Seconds from a slot freeing until a waiting order is seen to start in it: 0 in one
    # process (its own workers claim at once); in a fleet, the claim by a worker of
    # another process and its notice (`FleetView.handoff_s`). A waiting order's start, and
    # so a queue place, comes back that much after its slot frees.
    handoff_s: float = 0.0

    def ahead_of(self, priority: Priority) -> int:
        """Waiting orders that start before a new order of `priority`."""
        if priority is Priority.CRITICAL:
            return self.critical_queued
        if priority is Priority.STANDARD:
            return self.queued - self.sheddable_queued
        return self.queued


@dataclass(frozen=True, slots=True)
class Admit:
    """A slot is free: the order starts at once, in full."""

    service_level: ServiceLevel = ServiceLevel.FULL
    queue_position: int = 1
    estimated_start_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Queue:
    """Every slot is busy: the order waits its turn, in full."""

    queue_position: int
    estimated_start_s: float
    service_level: ServiceLevel = ServiceLevel.FULL


@dataclass(frozen=True, slots=True)
class Degrade:
    """Every slot is busy: the order is accepted on the reduced-service path."""

    queue_position: int
    estimated_start_s: float
    service_level: ServiceLevel = ServiceLevel.DEGRADED


@dataclass(frozen=True, slots=True)
class Reject:
    """Shed: nothing is written. Retry after `retry_after_s` whole seconds."""

    retry_after_s: int
    reason: str
    # slots_busy, reserved, queue_full, wait_limit, sheddable, deadline, wait_target (auto)
    cause: str = "slots_busy"
    retry_in_s: float = 0.0  # the estimate `retry_after_s` rounds up: when room is back


Decision = Admit | Queue | Degrade | Reject


def slot_free_times(load: Load, capacity: int) -> list[float]:
    """When each of the `capacity` slots is next free for a waiting order, soonest first."""
    busy = sorted(load.remaining_s)  # the `Dispatcher` gives them sorted already: cheap
    if busy and busy[0] < 0.0:  # late orders (the `Dispatcher` gives 0 for those)
        busy = [r if r > 0.0 else 0.0 for r in busy]
    if len(busy) >= capacity:
        # Over capacity (it was lowered at run time): a slot frees only once enough finish.
        return busy[len(busy) - capacity :]
    return [0.0] * (capacity - len(busy)) + busy


def estimated_start_s(load: Load, capacity: int, waiting_index: int, service_s: float) -> float:
    """Seconds until the queued order with `waiting_index` queued orders ahead of it starts.

    Orders ahead include those about to take a free slot (free at 0 s in `slot_free_times`).
    """
    if waiting_index < 0:
        return 0.0
    free = slot_free_times(load, capacity)  # sorted, so already a heap
    if service_s <= 0:
        return free[0]
    free, index = _even_out(free, waiting_index, service_s)
    rounds, slot = divmod(index, capacity)
    return free[slot] + rounds * service_s


def _even_out(free: list[float], count: int, service_s: float) -> tuple[list[float], int]:
    """Hand out slots (sorted free times) one by one, to `count` orders of `service_s` at
    most, until they all free within one service time of each other; from then on they
    come round in the same order every `service_s`. The free times then (sorted) and the
    orders left to hand out."""
    latest = free[-1]
    if latest - free[0] <= service_s:  # already so (the usual case): nothing to do
        return free, count
    free = list(free)  # sorted, so already a heap
    while count > 0 and latest - free[0] > service_s:
        freed_again = free[0] + service_s
        heapq.heapreplace(free, freed_again)
        if freed_again > latest:
            latest = freed_again
        count -= 1
    free.sort()
    return free, count


def ahead_segments(load: Load, priority: Priority) -> list[tuple[int, float]]:
    """The waiting orders that start before a new order of `priority`, in start order, as
    `(count, service time)` runs: each at the level it was accepted on."""
    full_s, degraded_s = load.full_service_s, load.degraded_service_s
    ranks = priority.rank + 1
    if load.runs is not None:
        return [
            (count, degraded_s if degraded else full_s)
            for runs in load.runs[:ranks]
            for degraded, count in runs
        ]
    standard = load.queued - load.critical_queued - load.sheddable_queued
    counts = (
        (load.critical_queued, 0),
        (standard, min(load.degraded_queued, standard)),
        (load.sheddable_queued, min(load.degraded_sheddable_queued, load.sheddable_queued)),
    )
    segments = []
    for total, degraded in counts[:ranks]:
        segments += [(total - degraded, full_s), (degraded, degraded_s)]
    return segments


def start_after_s(load: Load, capacity: int, segments: list[tuple[int, float]]) -> float:
    """Seconds until an order starts that waits behind `segments` (`ahead_segments`), each
    order taking the slot that frees first for its own service time.

    Exact when every order takes its planned time: it is the start order played out, a
    run of equal service times at a time (`_hand_out`).
    """
    free = slot_free_times(load, capacity)
    for count, service_s in segments:
        if count > 0:
            free = _hand_out(free, count, service_s)
    return free[0]


def _hand_out(free: list[float], count: int, service_s: float) -> list[float]:
    """The slots' free times (sorted) after `count` more orders of `service_s` each took
    the slot that frees first, in turn."""
    if service_s <= 0:
        return free  # each order gives its slot straight back
    free, count = _even_out(free, count, service_s)
    rounds, taken = divmod(count, len(free))
    if not count:
        return free
    shift = rounds * service_s
    later = shift + service_s
    # Still sorted: the last slot frees within one service time of the first.
    return [f + shift for f in free[taken:]] + [f + later for f in free[:taken]]


def _start_behind(load: Load, capacity: int, priority: Priority, count: int) -> float:
    """`start_after_s` behind the first `count` of the orders ahead of a new order of
    `priority`; with no order waiting on the reduced path, all take the full time."""
    if not (load.degraded_queued or load.degraded_sheddable_queued):
        start_s = estimated_start_s(load, capacity, count, load.full_service_s)
    else:
        start_s = start_after_s(load, capacity, _first(ahead_segments(load, priority), count))
    return start_s + load.handoff_s


def _first(segments: list[tuple[int, float]], count: int) -> list[tuple[int, float]]:
    """The first `count` orders of `segments`."""
    kept = []
    for size, service_s in segments:
        if count <= 0:
            break
        kept.append((min(size, count), service_s))
        count -= size
    return kept


def retry_after_s(seconds: float) -> int:
    """A `Retry-After` for a wait of `seconds`: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


@functools.lru_cache(maxsize=1024)
def _slots_taken(capacity: int, in_flight: int, queued: int) -> str:
    # Cached: a refusal at a given load always reads the same, and overload refuses often.
    slots = (
        "the only fulfilment slot is" if capacity == 1 else f"all {capacity} fulfilment slots are"
    )
    about_to_start = queued
    if about_to_start and in_flight < capacity:
        return (
            f"{slots} taken ({in_flight} in fulfilment, {about_to_start} "
            f"{'order' if about_to_start == 1 else 'orders'} about to start)"
        )
    return f"{slots} busy"


@functools.lru_cache(maxsize=256)
def _admit(queue_position: int) -> Admit:
    return Admit(queue_position=queue_position)  # frozen, so one value per position will do


def admit_at_once(
    limits: Limits,
    in_flight: int,
    ahead: int,
    priority: Priority = Priority.STANDARD,
    *,
    waiting: int | None = None,
) -> Admit | None:
    """`decide`'s answer when a slot is free for the order (None when none is).

    `ahead`: the waiting orders that start before it; `waiting`: every waiting order
    (default `ahead`). In `reject` mode an order waits only between its admission and
    its claim, with a slot already its own, so every waiting order holds a slot,
    whatever its priority. It needs only the counts, not the timetable of
    `Load.remaining_s`, so a caller may ask it first and build the `Load` only when it
    returns None; `decide` starts with it.
    """
    taken = in_flight + ahead
    held = 0
    if limits.mode is OverloadMode.REJECT:
        taken = in_flight + (ahead if waiting is None else waiting)
        if priority is not Priority.CRITICAL:
            held = limits.critical_reserve
    if taken < limits.capacity - held:
        return _admit(ahead + 1)
    return None


def _reject(wait_s: float, reason: str, cause: str) -> Reject:
    return Reject(
        retry_after_s=retry_after_s(wait_s), reason=reason, cause=cause, retry_in_s=max(0.0, wait_s)
    )


def ahead_service_s(load: Load, priority: Priority) -> float:
    """The mean service time of the waiting orders that start before a new order of
    `priority`, each at the level it was accepted on."""
    ahead = load.ahead_of(priority)
    if ahead <= 0 or priority is Priority.CRITICAL:
        return load.full_service_s
    degraded = load.degraded_queued
    if priority is Priority.SHEDDABLE:
        degraded += load.degraded_sheddable_queued
    degraded = min(degraded, ahead)
    return ((ahead - degraded) * load.full_service_s + degraded * load.degraded_service_s) / ahead


@dataclass(frozen=True, slots=True)
class AutoWaits:
    """The predicted start of a new standard order, seconds from now."""

    now_s: float  # behind the orders waiting now, each at its own level
    full_s: float  # were they all in full


def auto_waits(load: Load, capacity: int) -> AutoWaits:
    index = load.ahead_of(Priority.STANDARD)
    full_s = estimated_start_s(load, capacity, index, load.full_service_s) + load.handoff_s
    if not load.degraded_queued:  # none ahead on the reduced path
        return AutoWaits(now_s=full_s, full_s=full_s)
    return AutoWaits(
        now_s=start_after_s(load, capacity, ahead_segments(load, Priority.STANDARD))
        + load.handoff_s,
        full_s=full_s,
    )


def auto_level(limits: Limits, load: Load, level: AutoLevel) -> AutoLevel:
    """The level `auto` mode moves to from `level` at `load` (hysteresis included).

    Up: to refuse when the predicted wait is over the target (whatever the path, a new
    order would not start within it). Down, only well under the target (its
    `AUTO_EXIT_FRACTION`): from refuse to degrade, the reduced path, which keeps the
    wait within the target where full service would not; from degrade to queue once
    the backlog is gone (a slot is free and no order waits).
    """
    waits = auto_waits(load, limits.capacity)
    target = limits.target_wait_s
    back = AUTO_EXIT_FRACTION * target
    if level is AutoLevel.REFUSE:
        return AutoLevel.DEGRADE if waits.now_s <= back else AutoLevel.REFUSE
    if waits.now_s > target:
        return AutoLevel.REFUSE
    if level is AutoLevel.DEGRADE and waits.full_s > 0.0:
        return AutoLevel.DEGRADE
    return AutoLevel.QUEUE


def decide(
    limits: Limits,
    load: Load,
    *,
    priority: Priority = Priority.STANDARD,
    start_within_s: float | None = None,
    level: AutoLevel = AutoLevel.QUEUE,
) -> Decision:
    """The decision for one new order of `priority`, worth fulfilling only if it starts
    within `start_within_s` seconds (None: whenever). `level`: `auto` mode's level in
    force (`auto_level`); other modes ignore it."""
    capacity = limits.capacity
    critical = priority is Priority.CRITICAL
    reserve = 0 if critical else limits.critical_reserve
    waiting_index = load.ahead_of(priority)  # waiting orders that start before this one
    slot_reserve = reserve if limits.mode is OverloadMode.REJECT else 0
    at_once = admit_at_once(limits, load.in_flight, waiting_index, priority, waiting=load.queued)
    if at_once is not None:
        return at_once

    position = waiting_index + 1  # among orders with status `queued`, this one included

    if limits.mode is OverloadMode.REJECT:
        # Every waiting order holds a slot already (`admit_at_once`): a slot is back for
        # a new order once they (and the reserve) have theirs.
        room_s = estimated_start_s(load, capacity, load.queued + slot_reserve, load.full_service_s)
        held = load.in_flight + load.queued < capacity
        return _reject(
            room_s,
            (
                f"the free slots are held for critical orders ({slot_reserve} of {capacity} "
                f"reserved, {load.in_flight} in fulfilment)"
                if held
                else _slots_taken(capacity, load.in_flight, load.queued)
            ),
            "reserved" if held else "slots_busy",
        )

    auto = limits.mode is OverloadMode.AUTO
    degrading = not critical and (
        limits.mode is OverloadMode.DEGRADE or (auto and level is not AutoLevel.QUEUE)
    )
    queue_limit = max(0, limits.queue_limit - reserve)
    if load.queued >= queue_limit:
        # Room comes back when the order at the head of the excess starts.
        excess = load.queued - queue_limit
        kept = f"; {_count(reserve, 'place')} held for critical orders" if reserve else ""
        return _reject(
            _start_behind(load, capacity, Priority.SHEDDABLE, excess),
            f"the queue is full ({load.queued} of {limits.queue_limit} waiting{kept})",
            "queue_full",
        )
    # The orders ahead take their own level's time (critical ones are never degraded).
    start_s = _start_behind(load, capacity, priority, waiting_index)
    if limits.max_queue_wait_s is not None and start_s > limits.max_queue_wait_s:
        return _reject(
            start_s - limits.max_queue_wait_s,
            f"the estimated wait {start_s:.1f} s exceeds the limit {limits.max_queue_wait_s:g} s",
            "wait_limit",
        )
    if auto and (start_s > limits.target_wait_s or (level is AutoLevel.REFUSE and not critical)):
        target = limits.target_wait_s
        if critical:
            wait_s = start_s - target
            reason = f"the estimated wait {start_s:.1f} s is over the target {target:g} s"
        else:
            # Taken again once the level is back down: the wait under `back`.
            back = AUTO_EXIT_FRACTION * target
            now_s = auto_waits(load, capacity).now_s
            wait_s = now_s - back
            reason = (
                f"the estimated wait {now_s:.1f} s is over the target {target:g} s; orders "
                f"are taken again once it is under {back:g} s"
            )
        return _reject(wait_s, reason, "wait_target")
    if priority is Priority.SHEDDABLE and start_s > limits.sheddable_max_wait_s:
        return _reject(
            start_s - limits.sheddable_max_wait_s,
            (
                f"a sheddable order is taken only if it can start within "
                f"{limits.sheddable_max_wait_s:g} s; the estimated start is in {start_s:.1f} s"
            ),
            "sheddable",
        )
    if start_within_s is not None and start_s > start_within_s:
        return _reject(
            start_s - start_within_s,
            (
                f"it cannot start within {start_within_s:g} s "
                f"(start_within_s); the estimated start is in {start_s:.1f} s"
            ),
            "deadline",
        )
    if degrading:
        return Degrade(queue_position=position, estimated_start_s=start_s)
    return Queue(queue_position=position, estimated_start_s=start_s)


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
