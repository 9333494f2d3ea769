"""In-process notifications of order events, published after each commit.

Used to answer `Prefer: wait` without polling, and by live streams. The store stays
the source of truth: a subscriber that misses an event (or a process that never saw
it) re-reads the order. Each subscriber has a bounded queue; a subscriber too slow
to keep up loses its oldest events, never blocks a publisher. `close()` (on
shutdown) wakes every subscriber for the last time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from retail.core.events import OrderEvent

SUBSCRIBER_QUEUE_SIZE = 256


@dataclass(eq=False)
class Subscription:
    order_id: uuid.UUID | None  # None: every order
    queue: asyncio.Queue[OrderEvent] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
    )
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each event
    closed: bool = False  # the bus is shutting down: stop waiting

    def offer(self, event: OrderEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)
        self.arrived.set()

    def drain_terminal(self) -> bool:
        """Take every waiting event; whether one of them ended its order."""
        ended = False
        while not self.queue.empty():
            ended = self.queue.get_nowait().status.is_terminal or ended
        return ended

    def close(self) -> None:
        self.closed = True
        self.arrived.set()


class EventBus:
    def __init__(self) -> None:
        self._by_order: dict[uuid.UUID, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._listeners: list[Callable[[OrderEvent], None]] = []
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_order.values())

    def listen(self, listener: Callable[[OrderEvent], None]) -> None:
        """Call `listener` with every event as it is published (logs, metrics); keep it quick."""
        self._listeners.append(listener)

    def publish(self, event: OrderEvent) -> None:
        for listener in self._listeners:
            listener(event)
        for subscription in self._by_order.get(event.order_id, ()):
            subscription.offer(event)
        for subscription in self._everything:
            subscription.offer(event)

    def close(self) -> None:
        """The service is stopping: every subscriber stops waiting, and new ones start closed."""
        self.closed = True
        for subscription in self._everything:
            subscription.close()
        for subscriptions in self._by_order.values():
            for subscription in subscriptions:
                subscription.close()

    @contextmanager
    def subscribe(self, order_id: uuid.UUID | None = None) -> Iterator[Subscription]:
        subscription = Subscription(order_id, closed=self.closed)
        if order_id is None:
            self._everything.add(subscription)
        else:
            self._by_order.setdefault(order_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            if order_id is None:
                self._everything.discard(subscription)
            else:
                subscribers = self._by_order.get(order_id, set())
                subscribers.discard(subscription)
                if not subscribers:
                    self._by_order.pop(order_id, None)
