"""The domain's enums: what an order can be, and what the policy can do."""

from __future__ import annotations

import enum


class OverloadMode(enum.StrEnum):
    """What `POST /orders` does when every fulfilment slot is busy."""

    QUEUE = "queue"
    REJECT = "reject"
    DEGRADE = "degrade"


class OrderStatus(enum.StrEnum):
    """Lifecycle: queued -> processing -> fulfilled | failed; queued -> cancelled."""

    QUEUED = "queued"
    PROCESSING = "processing"
    FULFILLED = "fulfilled"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.FULFILLED, OrderStatus.FAILED, OrderStatus.CANCELLED})


class ServiceLevel(enum.StrEnum):
    FULL = "full"
    DEGRADED = "degraded"
