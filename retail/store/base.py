"""What the service needs from persistence: the `Store` protocol and the values it speaks.

Two implementations: `retail.store.sql.SqlStore` (SQLite and PostgreSQL through
SQLAlchemy) and `retail.store.memory.MemoryStore` (a process's memory, for unit tests
and the simulator). `tests/store/` is one conformance suite run against all three.

The orders table is the record and the work queue. A worker claims the next
available order (processing under an expired lease, oldest first; else the next
queued one in start order: by priority, then oldest first, never one whose start
deadline has passed) and gets a fencing
token (`Claim.token`) that grows with every claim; every later write for that claim
is refused with `LeaseLost` once another claim has taken the order over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from retail.core.errors import RetailError
from retail.core.events import OrderEvent
from retail.core.orders import NewOrder, OrderView, Placed
from retail.core.types import OrderStatus, Priority, ServiceLevel

# The demo catalogue `prepare(seed_catalogue=True)` puts into an empty store:
# (sku, name, unit price in cents, stock), in EUR.
DEMO_CATALOGUE: tuple[tuple[str, str, int, int], ...] = (
    ("MUG-1", "Coffee mug", 1250, 1000),
    ("TEE-M", "T-shirt, size M", 1999, 500),
    ("CAP-1", "Baseball cap", 1500, 300),
    ("BAG-1", "Tote bag", 899, 800),
    ("PEN-3", "Pen, pack of 3", 450, 5000),
    ("LAMP-1", "Desk lamp", 3999, 50),
)


class LeaseLost(Exception):
    """Another worker owns the order now (or it was finished elsewhere)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first answer to a keyed `POST /orders`, kept for replay."""

    request_hash: str
    order_id: uuid.UUID
    status: int
    body: dict[str, Any]


ACCEPTED = 202  # the status stored with a key: the order's first answer


@dataclass(frozen=True, slots=True)
class Keyed:
    """An order's `Idempotency-Key` and its request's fingerprint.

    The answer stored with it is the order's `202`: `retail.core.orders.accepted_document`.
    """

    key: str
    request_hash: str


# Not frozen (built for every order; a frozen dataclass's `__init__` costs several times
# more): a value all the same, never changed once built.
@dataclass(slots=True)
class Placing:
    """One order of a batch write, with its key if it has one."""

    order: NewOrder
    keyed: Keyed | None = None


# Per order of a batch: stored, the answer stored earlier under its key (nothing written),
# or why it was refused (unknown SKU, not enough stock, mixed currencies).
Outcome = Placed | StoredResponse | RetailError


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """Which orders a listing returns: newest first, at most `limit`, only those before
    `before_seq` (the cursor of the previous page) and matching every filter given."""

    status: OrderStatus | None = None
    customer_id: str | None = None
    priority: Priority | None = None
    before_seq: int | None = None
    limit: int = 50

    def matches(self, order: OrderView) -> bool:
        """Whether `order` passes the filters (the cursor and the limit aside)."""
        return (
            (self.status is None or order.status is self.status)
            and (self.customer_id is None or order.customer_id == self.customer_id)
            and (self.priority is None or order.priority is self.priority)
        )


@dataclass(frozen=True, slots=True)
class Claim:
    order_id: uuid.UUID
    seq: int
    token: int
    step_index: int
    line_count: int
    service_level: ServiceLevel
    resumed: bool  # it had been claimed before (a crash or a shutdown interrupted it)
    event: OrderEvent  # `started` or `resumed`
    created_at: datetime
    started_at: datetime  # of its first claim
    priority: Priority = Priority.STANDARD
    customer_id: str = ""  # whose order it is


@dataclass(frozen=True, slots=True)
class Ending:
    """An order's terminal state, as `Store.finish` writes it."""

    status: OrderStatus
    reason: str | None = None
    detail: dict[str, Any] | None = None


# One event a transition records: (kind, status, step, detail).
EventSpec = tuple[str, OrderStatus, str | None, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Transition:
    """One fenced write of a claim: a step boundary (the end of one step and/or the start
    of the next, renewing the lease past it), or the order's end (`ending`).

    `completed` is (step name, new step_index, seconds it took); `starting` is (step name,
    planned seconds). A batch of them (`Store.transition`) is one transaction.
    """

    claim: Claim
    completed: tuple[str, int, float] | None = None
    starting: tuple[str, float] | None = None
    ending: Ending | None = None

    def lease_for(self, lease_s: float) -> float:
        """Seconds the lease runs from the write: past the planned step."""
        return lease_s + (self.starting[1] if self.starting is not None else 0.0)

    def events(self) -> list[EventSpec]:
        """The events it records, in order (the same in every store)."""
        processing = OrderStatus.PROCESSING
        specs: list[EventSpec] = []
        if self.completed is not None:
            took = {"took_s": round(self.completed[2], 6)}
            specs.append(("step_completed", processing, self.completed[0], took))
        if self.starting is not None:
            planned = {"planned_s": round(self.starting[1], 6)}
            specs.append(("step_started", processing, self.starting[0], planned))
        if self.ending is not None:
            end = self.ending
            detail = {**(end.detail or {}), **({"reason": end.reason} if end.reason else {})}
            specs.append((end.status.value, end.status, None, detail))
        return specs


# Per transition of a batch: the events it recorded, or `LeaseLost` (nothing written).
Transitioned = list[OrderEvent] | LeaseLost


@dataclass(frozen=True, slots=True)
class Expired:
    """A waiting order whose start deadline passed: ended `expired`, its stock back."""

    event: OrderEvent  # `expired`
    priority: Priority


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    unit_price: int
    currency: str
    stock: int
    updated_at: datetime


class Store(Protocol):
    # --- life -------------------------------------------------------------------------
    async def prepare(self, *, migrate: bool, seed_catalogue: bool, now: datetime) -> int:
        """Migrate (if asked) and seed the demo catalogue into an empty one; products added."""
        ...

    async def close(self) -> None: ...

    def server_pids(self) -> frozenset[int]:
        """PostgreSQL: the server processes of this store's connections (a notice sent by
        one is this process's own commit); empty elsewhere."""
        ...

    def follow_changes(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """PostgreSQL: `listener(notice)` once each transaction of this store that claimed,
        ended, cancelled or expired orders has committed, with what its fleet notices
        will say (`k` "u", `x` its id, the orders it changed); never elsewhere."""
        ...

    async def problems(self) -> list[str]:
        """Why the store cannot take orders now (empty when all is well); raises if unreachable."""
        ...

    # --- placing --------------------------------------------------------------------------
    async def place_orders(
        self, batch: Sequence[Placing], *, now: datetime, keys_expire_at: datetime
    ) -> list[Outcome]:
        """Write a batch in one transaction: per order, stock taken and order, lines, first
        event and key record written, all or nothing; a live key already stored gives its
        stored answer instead. Outcomes in the batch's order."""
        ...

    async def find_response(self, key: str, *, now: datetime) -> StoredResponse | None: ...

    async def purge_expired_responses(self, *, now: datetime) -> int: ...

    # --- reading --------------------------------------------------------------------------
    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        """The order; `OrderNotFound` if there is none."""
        ...

    async def list_orders(self, query: OrderQuery) -> tuple[list[OrderView], int | None]:
        """Newest first (by `seq`), and the `before_seq` of the next page (None: last page)."""
        ...

    async def queue_position(self, order: OrderView) -> int:
        """1 + the queued orders that start before this one (higher priorities first)."""
        ...

    async def list_events(self, order_id: uuid.UUID, *, after_id: int = 0) -> list[OrderEvent]:
        """Oldest first; `OrderNotFound` if there is no such order."""
        ...

    async def count_by_status(self) -> dict[OrderStatus, int]:
        """Queued and processing orders."""
        ...

    async def queued_by_priority(self) -> dict[Priority, int]:
        """Queued orders per priority (every priority, zeros included)."""
        ...

    async def oldest_queued_at(self) -> datetime | None: ...

    async def count_active_by_customer(self) -> dict[str, int]:
        """Queued and processing orders per customer (customers with none left out)."""
        ...

    # --- changing -------------------------------------------------------------------------
    async def cancel_order(self, order_id: uuid.UUID, *, now: datetime) -> OrderEvent:
        """Cancel a queued order, its stock back exactly once; `InvalidTransition` otherwise."""
        ...

    async def expire_due(self, *, now: datetime) -> list[Expired]:
        """End every queued order whose start deadline is `now` or earlier: `expired`, with
        its event, its stock back exactly once."""
        ...

    # --- the work queue -------------------------------------------------------------------
    async def claim_next(self, *, owner: str, now: datetime, lease_s: float) -> Claim | None:
        """The next order in start order, under a lease; never a queued one whose start
        deadline is `now` or earlier (`expire_due` ends those)."""
        ...

    async def claim_many(
        self, *, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Claim]:
        """Up to `limit` orders in start order, each as `claim_next` takes one, in one
        transaction (expired leases first, then queued ones by priority and age)."""
        ...

    async def transition(
        self, batch: Sequence[Transition], *, now: datetime, lease_s: float
    ) -> list[Transitioned]:
        """Write a batch of claims' transitions in one transaction, each fenced on its own:
        one whose claim was taken over (or whose order ended) writes nothing and gives
        `LeaseLost`, the others are applied. An ending gives a failure's stock back (once).
        At most one transition per order in a batch. Results in the batch's order."""
        ...

    async def step_boundary(
        self,
        claim: Claim,
        *,
        now: datetime,
        completed: tuple[str, int, float] | None,
        starting: tuple[str, float] | None,
        lease_s: float,
    ) -> list[OrderEvent]:
        """Record the end of a step (name, new step_index, seconds it took) and/or the start of
        the next (name, planned seconds), renewing the lease past it; `LeaseLost` if fenced."""
        ...

    async def finish(
        self,
        claim: Claim,
        *,
        now: datetime,
        status: OrderStatus,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> OrderEvent:
        """The terminal state; a failure gives its stock back (once); `LeaseLost` if fenced."""
        ...

    async def release_leases(self, *, owner: str, now: datetime) -> int:
        """Give up this owner's unfinished orders so the next claim resumes them at once."""
        ...

    # --- the catalogue --------------------------------------------------------------------
    async def list_products(self) -> list[Product]: ...

    async def get_product(self, sku: str) -> Product:
        """`ProductNotFound` if there is none."""
        ...

    async def upsert_product(
        self, *, sku: str, name: str, unit_price: int, stock: int, currency: str, now: datetime
    ) -> tuple[Product, bool]:
        """Create or replace; the product and whether it was created."""
        ...
