"""The domain's enums: what an order can be, and what the policy can do."""

from __future__ import annotations

import enum


class OverloadMode(enum.StrEnum):
    """What `POST /orders` does when every fulfilment slot is busy."""

    QUEUE = "queue"
    REJECT = "reject"
    DEGRADE = "degrade"
    AUTO = "auto"  # queue, degrade or refuse by the predicted wait (`AutoLevel`)


class AutoLevel(enum.StrEnum):
    """What `auto` mode does now with an order that cannot start at once."""

    QUEUE = "queue"  # the predicted wait is within the target: wait in full
    DEGRADE = "degrade"  # only the reduced path meets the target: take it
    REFUSE = "refuse"  # not even the reduced path meets it: 503


class OrderStatus(enum.StrEnum):
    """Lifecycle: queued -> processing -> fulfilled | failed; queued -> cancelled | expired."""

    QUEUED = "queued"
    PROCESSING = "processing"
    FULFILLED = "fulfilled"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # its start deadline passed while it waited: never started

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FULFILLED, OrderStatus.FAILED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
)


class ServiceLevel(enum.StrEnum):
    FULL = "full"
    DEGRADED = "degraded"


class Priority(enum.StrEnum):
    """How much an order matters when there is not room for all: waiting orders start in
    this order (first come first served within one), and the least important are shed first."""

    CRITICAL = "critical"
    STANDARD = "standard"
    SHEDDABLE = "sheddable"

    # 0 starts first: the value stored with the order and sorted on. A plain attribute of
    # each member (set below), not a property: the policy reads it for every order.
    rank: int

    @classmethod
    def of_rank(cls, rank: int) -> Priority:
        return _BY_RANK[rank]


_BY_RANK = tuple(Priority)
for _rank, _priority in enumerate(_BY_RANK):
    _priority.rank = _rank
