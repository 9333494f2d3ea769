"""The one representation of an order event: every state change and step boundary.

The store returns it, the bus carries it, logs, metrics and live streams read it, and
the web layer renders it. `id` grows with every event stored, so `Last-Event-ID`
resumes a stream after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from retail.core.types import OrderStatus


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class OrderEvent:
    id: int
    order_id: uuid.UUID
    kind: str
    status: OrderStatus
    step: str | None
    at: datetime
    detail: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        """As JSON: what `GET /orders/{id}/events` lists and SSE / `/ws` carry."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "step": self.step,
            "at": iso(self.at),
            "detail": self.detail,
        }


@overload
def iso(at: datetime) -> str: ...
@overload
def iso(at: None) -> None: ...
def iso(at: datetime | None) -> str | None:
    """A UTC time as JSON gives it: ISO 8601 with `Z`."""
    return None if at is None else at.isoformat().replace("+00:00", "Z")
