"""In-process notifications of order events, published after each commit.

Used to answer `Prefer: wait` without polling, and by live streams. The database
stays the source of truth: a subscriber that misses a notification (or a process
that never saw it) re-reads the order. Each subscriber has a bounded queue; a
subscriber too slow to keep up loses its oldest notifications, never blocks a
publisher.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retail.core.types import OrderStatus

SUBSCRIBER_QUEUE_SIZE = 256


@dataclass(frozen=True, slots=True)
class OrderNotice:
    order_id: uuid.UUID
    event_id: int
    kind: str
    status: OrderStatus
    step: str | None
    at: datetime
    detail: dict[str, Any] | None = None


@dataclass(eq=False)
class Subscription:
    order_id: uuid.UUID | None  # None: every order
    queue: asyncio.Queue[OrderNotice] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
    )
    dropped: int = 0

    def offer(self, notice: OrderNotice) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(notice)

    async def __aiter__(self) -> AsyncIterator[OrderNotice]:
        while True:
            yield await self.queue.get()


class EventBus:
    def __init__(self) -> None:
        self._by_order: dict[uuid.UUID, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._listeners: list[Callable[[OrderNotice], None]] = []

    @property
    def subscribers(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_order.values())

    def listen(self, listener: Callable[[OrderNotice], None]) -> None:
        """Call `listener` with every notice as it is published (logs, metrics); keep it quick."""
        self._listeners.append(listener)

    def publish(self, notice: OrderNotice) -> None:
        for listener in self._listeners:
            listener(notice)
        for subscription in self._by_order.get(notice.order_id, ()):
            subscription.offer(notice)
        for subscription in self._everything:
            subscription.offer(notice)

    @contextmanager
    def subscribe(self, order_id: uuid.UUID | None = None) -> Iterator[Subscription]:
        subscription = Subscription(order_id)
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
