"""The slots and who holds them until when: the half of the load model that is not admission.

`Dispatcher` keeps the in-flight timetable: for each order holding a fulfilment slot,
when it started and when its plan says it ends. Admission reads it to know how long
each slot stays busy; the worker pool writes it as orders start and end; the
simulator does both on its virtual clock. Time is a float of seconds on the caller's
timeline (`now`), never read here. The planned ends are also kept in order, soonest
first, so that reading when the slots free needs neither a scan nor a sort: the
policy reads it on every order that finds the slots busy.

A slot given back with `finish(key, at=now)` remembers when it was free: at the
order's planned end, or `now` if that is sooner (`freed_at`). The worker pool starts
the next order's timetable there, so that the time spent writing one order's end
and claiming the next does not keep the slot idle: the policy (and the simulator)
hand a slot over at the instant it frees.

`WaitingLine` is the start order of waiting orders: by priority, first come first
served within a priority. The store keeps the same order for the orders it holds
(claims go by priority, then `seq`); `MemoryStore` and the simulator, which has no
store, keep their waiting orders here.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Generic, TypeVar

from retail.core.types import Priority

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item", bound=Hashable)


@dataclass(slots=True)
class Running:
    """An order holding a slot: when it started, when its plan ends, the step it is in."""

    started_at: float
    expected_end: float
    step: str | None = None
    customer: str | None = None  # whose place it holds (for fair shares), if known


class Dispatcher(Generic[Key]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Read it freely; change it through `start`, `place`, `finish` and `clear`: they
        # keep `_ends` in step with it.
        self.running: dict[Key, Running] = {}
        self._ends: list[float] = []  # the `expected_end` of each running order, sorted
        self._freed: list[float] = []  # when free slots were given back (a heap)

    @property
    def in_flight(self) -> int:
        return len(self.running)

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - len(self.running))

    def start(
        self, key: Key, *, now: float, planned_s: float, customer: str | None = None
    ) -> Running:
        """`key` (an order of `customer`) takes a slot at `now` for `planned_s` seconds."""
        running = Running(now, now + planned_s, customer=customer)
        self.place(key, running)
        return running

    def place(self, key: Key, running: Running) -> None:
        """`key` holds a slot on the timetable `running` (made elsewhere: an order of
        another process, as the fleet's notices tell it)."""
        previous = self.running.get(key)
        self.running[key] = running
        if previous is not None:  # started again: its earlier plan no longer holds the slot
            self._drop(previous.expected_end)
        insort(self._ends, running.expected_end)

    def finish(self, key: Key, *, at: float | None = None) -> Running | None:
        """`key` gives its slot back (None if it held none); with `at` (now), the slot
        counts as free since its planned end, or since `at` if that is sooner."""
        running = self.running.pop(key, None)
        if running is not None:
            self._drop(running.expected_end)
            if at is not None:
                end = running.expected_end
                heapq.heappush(self._freed, end if end < at else at)
                while len(self._freed) > self.free_slots:  # capacity was lowered
                    heapq.heappop(self._freed)
        return running

    def freed_at(self) -> float | None:
        """When the slot free the longest was given back, taken for the order starting
        now: None if a slot has been free since before any `finish(..., at=...)`."""
        freed = self._freed
        if not freed or len(freed) < self.free_slots:
            return None
        return heapq.heappop(freed)

    def _drop(self, end: float) -> None:
        ends = self._ends
        at = bisect_left(ends, end)
        if at < len(ends) and ends[at] == end:
            del ends[at]

    def clear(self) -> None:
        """Every slot free, none given back: as a process starting anew."""
        self.running.clear()
        self._ends.clear()
        self._freed.clear()

    def ends(self) -> list[float]:
        """The planned end of each in-flight order, soonest first (do not change it)."""
        return self._ends

    def busy(self, now: float) -> int:
        """Orders whose plan has not ended by `now`. One past its planned end is only
        recording its end: the policy counts its slot as free, as the simulator does
        (the next order is claimed once it is given back, and its timetable starts at
        the planned end: `freed_at`)."""
        ends = self.ends()
        return len(ends) - bisect_right(ends, now)

    def ended_by_plan(self, now: float) -> dict[str, int]:
        """Per customer, its orders still holding a slot whose plan has ended by `now`
        (only recording their end): the slots `busy` counts as free already."""
        ended: dict[str, int] = {}
        if not self.ends() or self._ends[0] > now:
            return ended
        for running in self.running.values():
            customer = running.customer
            if customer is not None and running.expected_end <= now:
                ended[customer] = ended.get(customer, 0) + 1
        return ended

    def remaining_s(self, now: float) -> tuple[float, ...]:
        """Seconds until each in-flight order is expected to end (never negative), soonest
        first."""
        return tuple([end - now if end > now else 0.0 for end in self.ends()])

    def next_free_s(self, now: float) -> float:
        """Seconds until a slot is free: 0 if one is free now."""
        if self.free_slots:
            return 0.0
        ends = self.ends()
        # Over capacity (it was lowered): a slot frees once enough orders end.
        end = ends[len(ends) - self.capacity] if ends else now
        return end - now if end > now else 0.0


class WaitingLine(Generic[Item]):
    """Waiting orders in the order they start: critical, then standard, then sheddable;
    first come, first served within a priority. Items are distinct (an order's key)."""

    def __init__(self) -> None:
        # One first-in first-out line per priority, by rank.
        self._lines: tuple[deque[Item], ...] = tuple(deque() for _ in Priority)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Item]:
        return chain.from_iterable(self._lines)

    def __contains__(self, item: object) -> bool:
        return any(item in line for line in self._lines)

    def count(self, priority: Priority) -> int:
        """Orders of `priority` waiting."""
        return len(self._lines[priority.rank])

    def push(self, item: Item, priority: Priority = Priority.STANDARD) -> None:
        self._lines[priority.rank].append(item)
        self._size += 1

    def pop(self) -> Item:
        """The next to start; `IndexError` when none waits."""
        for line in self._lines:
            if line:
                self._size -= 1
                return line.popleft()
        raise IndexError("pop from an empty waiting line")

    def first(self) -> Item | None:
        """The next to start, left in the line (None when none waits)."""
        for line in self._lines:
            if line:
                return line[0]
        return None

    def remove(self, item: Item) -> None:
        """A waiting order left before it started (cancelled, expired); `ValueError` if absent."""
        for line in self._lines:
            if item in line:
                line.remove(item)
                self._size -= 1
                return
        raise ValueError(f"{item!r} is not waiting")

    def ahead_of(self, item: Item) -> int:
        """Waiting orders that start before `item` (all of them if it does not wait)."""
        ahead = 0
        for line in self._lines:
            if item in line:
                for other in line:
                    if other == item:
                        return ahead
                    ahead += 1
            ahead += len(line)
        return ahead
