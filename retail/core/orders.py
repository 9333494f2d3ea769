"""Order rules: what an order may ask for, and how a batch of orders takes stock.

Plain values in and out. `allocate` decides a whole batch against the stock it
read, each order all or nothing in arrival order, so a store only has to read the
stock, call it, and write what it returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retail.core.errors import InsufficientStock, InvalidOrder, MixedCurrencies, UnknownSku
from retail.core.events import OrderEvent, iso
from retail.core.types import OrderStatus, Priority, ServiceLevel

Items = tuple[tuple[str, int], ...]  # (sku, quantity), one per SKU


def validate_items(items: Sequence[tuple[str, int]], *, max_lines: int, max_quantity: int) -> Items:
    """The service's own limits on an order's lines; `InvalidOrder` says what is wrong."""
    if len(items) > max_lines:
        raise InvalidOrder(
            f"An order has at most {max_lines} lines; this one has {len(items)}. "
            "Split it into several orders.",
        )
    seen: set[str] = set()
    for index, (sku, quantity) in enumerate(items):
        if quantity > max_quantity:
            raise InvalidOrder(
                f"items.{index}.quantity: at most {max_quantity} units of one SKU "
                f"per order; {quantity} were asked for.",
            )
        if sku in seen:
            raise InvalidOrder(
                f"items.{index}.sku: {sku} appears twice; list each SKU once with the "
                "total quantity.",
            )
        seen.add(sku)
    return tuple(items)


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class NewOrder:
    """An admitted order, before it is stored."""

    id: uuid.UUID
    customer_id: str
    items: Items
    service_level: ServiceLevel
    skipped_steps: tuple[str, ...]
    queue_position: int
    estimated_start_at: datetime | None = None  # what admission expects
    priority: Priority = Priority.STANDARD
    start_deadline: datetime | None = None  # not started by then, it expires


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class Line:
    sku: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_price


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class OrderView:
    """An order as stored: what every read and the `202` show."""

    id: uuid.UUID
    seq: int
    customer_id: str
    status: OrderStatus
    service_level: ServiceLevel
    skipped_steps: tuple[str, ...]
    lines: tuple[Line, ...]
    total: int
    currency: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure_reason: str | None = None
    step_index: int = 0  # steps completed: a resumed order continues from here
    priority: Priority = Priority.STANDARD
    start_deadline: datetime | None = None  # not started by then, it expires


def order_document(
    order: OrderView,
    *,
    queue_position: int | None = None,
    estimated_start_at: datetime | None = None,
    current_step: str | None = None,
) -> dict[str, Any]:
    """The order as JSON: the body of `GET /orders/{id}` and of the `202` that placed it."""
    return {
        "id": str(order.id),
        "customer_id": order.customer_id,
        "status": order.status.value,
        "priority": order.priority.value,
        "service_level": order.service_level.value,
        "skipped_steps": list(order.skipped_steps),
        "lines": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "line_total": line.line_total,
            }
            for line in order.lines
        ],
        "total": order.total,
        "currency": order.currency,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "started_at": iso(order.started_at),
        "finished_at": iso(order.finished_at),
        "current_step": current_step,
        "failure_reason": order.failure_reason,
        "queue_position": queue_position,
        "estimated_start_at": iso(estimated_start_at),
        "start_deadline": iso(order.start_deadline),
    }


def accepted_document(order: OrderView, new: NewOrder) -> dict[str, Any]:
    """The body of the `202` for a newly placed order, and of every replay of it."""
    estimate = new.estimated_start_at
    return order_document(
        order,
        queue_position=new.queue_position,
        # Not before the order exists (its time is its batch's, a moment after admission).
        estimated_start_at=None if estimate is None else max(estimate, order.created_at),
    )


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class Placed:
    """A stored order and its `created` event (what a batch write gives back per order)."""

    order: OrderView
    event: OrderEvent
    # PostgreSQL: the transaction that stored it (its notice to the fleet carries it too).
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Stock:
    """A product's stock and price, as a batch write read it."""

    available: int
    unit_price: int
    currency: str


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class Allocation:
    """One order of a batch that its stock allows: its priced lines, before it is written."""

    order: NewOrder
    lines: tuple[Line, ...]
    total: int
    currency: str

    def created_detail(self) -> dict[str, Any]:
        """What the order's `created` event records."""
        detail: dict[str, Any] = {
            "priority": self.order.priority.value,
            "service_level": self.order.service_level.value,
            "skipped_steps": list(self.order.skipped_steps),
            "queue_position": self.order.queue_position,
            "total": self.total,
        }
        if self.order.start_deadline is not None:
            detail["start_deadline"] = iso(self.order.start_deadline)
        return detail

    def view(self, *, seq: int, now: datetime) -> OrderView:
        order = self.order
        return OrderView(
            id=order.id,
            seq=seq,
            customer_id=order.customer_id,
            status=OrderStatus.QUEUED,
            service_level=order.service_level,
            skipped_steps=order.skipped_steps,
            lines=self.lines,
            total=self.total,
            currency=self.currency,
            created_at=now,
            updated_at=now,
            priority=order.priority,
            start_deadline=order.start_deadline,
        )


@dataclass
class _Left:
    available: int
    taken: int = field(default=0)


def allocate(
    orders: Sequence[NewOrder], stock: Mapping[str, Stock]
) -> tuple[list[Allocation | UnknownSku | InsufficientStock | MixedCurrencies], dict[str, int]]:
    """Decide each order against `stock`, in order: its allocation or why it was refused.

    Also returns the units taken per SKU (what the store subtracts from stock).
    """
    left = {sku: _Left(s.available) for sku, s in stock.items()}
    outcomes: list[Allocation | UnknownSku | InsufficientStock | MixedCurrencies] = []
    for order in orders:
        outcome = _allocate_one(order, stock, left)
        if isinstance(outcome, Allocation):
            for line in outcome.lines:
                left[line.sku].taken += line.quantity
        outcomes.append(outcome)
    taken = {sku: s.taken for sku, s in left.items() if s.taken}
    return outcomes, taken


def _allocate_one(
    order: NewOrder, stock: Mapping[str, Stock], left: Mapping[str, _Left]
) -> Allocation | UnknownSku | InsufficientStock | MixedCurrencies:
    unknown = [sku for sku, _ in order.items if sku not in stock]
    if unknown:
        return UnknownSku(
            f"Unknown SKU {', '.join(unknown)}: not in the catalogue (GET /products lists it).",
            skus=unknown,
        )
    short = [
        {"sku": sku, "requested": quantity, "available": left[sku].available - left[sku].taken}
        for sku, quantity in order.items
        if left[sku].available - left[sku].taken < quantity
    ]
    if short:
        named = ", ".join(
            f"{s['sku']} ({s['available']} left, {s['requested']} ordered)" for s in short
        )
        return InsufficientStock(f"Not enough stock for {named}.", short=short)
    currencies = {stock[sku].currency for sku, _ in order.items}
    if len(currencies) > 1:
        return MixedCurrencies(
            f"Products priced in different currencies ({', '.join(sorted(currencies))}) "
            "cannot share an order; place one order per currency.",
        )
    lines = tuple(Line(sku, quantity, stock[sku].unit_price) for sku, quantity in order.items)
    return Allocation(order, lines, sum(line.line_total for line in lines), currencies.pop())
