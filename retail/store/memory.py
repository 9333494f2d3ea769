"""`MemoryStore`: the `Store` protocol in a process's memory (unit tests, the simulator).

The same rules as `SqlStore`, in dictionaries: `seq` and event ids grow, claims go
in start order (the core's `WaitingLine`: by priority, then `seq`) with expired
leases first and orders past their start deadline never, writes are fenced by the claim's token,
stock never goes negative and comes back once. No method awaits between reading and
writing its state, so each one is atomic on the event loop without a lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from retail.core.dispatch import WaitingLine
from retail.core.errors import (
    InvalidTransition,
    OrderNotFound,
    ProductNotFound,
    RetailError,
)
from retail.core.events import OrderEvent, iso
from retail.core.orders import (
    Allocation,
    NewOrder,
    OrderView,
    Placed,
    Stock,
    accepted_document,
    allocate,
)
from retail.core.types import OrderStatus, Priority, ServiceLevel
from retail.store.base import (
    ACCEPTED,
    DEMO_CATALOGUE,
    Claim,
    Ending,
    Expired,
    LeaseLost,
    OrderQuery,
    Outcome,
    Placing,
    Product,
    StoredResponse,
    Transition,
    Transitioned,
)

if TYPE_CHECKING:
    from retail.store.base import Store


@dataclass(slots=True)
class _Order:
    view: OrderView
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    events: list[OrderEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Product:
    sku: str
    name: str
    unit_price: int
    currency: str
    stock: int
    updated_at: datetime

    def public(self) -> Product:
        return Product(
            self.sku, self.name, self.unit_price, self.currency, self.stock, self.updated_at
        )


class MemoryStore:
    def __init__(self) -> None:
        self._orders: dict[uuid.UUID, _Order] = {}
        self._by_seq: list[_Order] = []  # in seq order (seq = index + 1)
        self._waiting: WaitingLine[int] = WaitingLine()  # queued orders' seqs, in start order
        self._processing: dict[int, _Order] = {}
        self._products: dict[str, _Product] = {}
        self._responses: dict[str, tuple[StoredResponse, datetime]] = {}
        self._event_id = 0

    # --- life -------------------------------------------------------------------------
    async def prepare(self, *, migrate: bool, seed_catalogue: bool, now: datetime) -> int:
        if not seed_catalogue or self._products:
            return 0
        for sku, name, price, stock in DEMO_CATALOGUE:
            self._products[sku] = _Product(sku, name, price, "EUR", stock, now)
        return len(DEMO_CATALOGUE)

    async def close(self) -> None:
        pass

    def server_pids(self) -> frozenset[int]:
        return frozenset()

    def follow_changes(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """No transactions, no fleet: nothing to tell."""

    async def problems(self) -> list[str]:
        return []

    # --- placing --------------------------------------------------------------------------
    async def place_orders(
        self, batch: Sequence[Placing], *, now: datetime, keys_expire_at: datetime
    ) -> list[Outcome]:
        # Order by order, as `SqlStore` ends up doing when one order of a batch is refused
        # by the database (a key used twice in the batch replays the first answer).
        return [self._place(placing, now, keys_expire_at) for placing in batch]

    def _place(self, placing: Placing, now: datetime, keys_expire_at: datetime) -> Outcome:
        keyed = placing.keyed
        if keyed is not None:
            stored = self._live_response(keyed.key, now)
            if stored is not None:
                return stored
        order = placing.order
        if order.id in self._orders:
            return RetailError("The order could not be stored; retry.")
        decided = self._allocate(order)
        if not isinstance(decided, Allocation):
            return decided
        for line in decided.lines:
            product = self._products[line.sku]
            product.stock -= line.quantity
            product.updated_at = now
        seq = len(self._by_seq) + 1
        record = _Order(decided.view(seq=seq, now=now))
        self._orders[order.id] = record
        self._by_seq.append(record)
        self._waiting.push(seq, order.priority)
        event = self._add_event(
            record, "created", OrderStatus.QUEUED, now, detail=decided.created_detail()
        )
        placed = Placed(record.view, event)
        if keyed is not None:
            response = StoredResponse(
                keyed.request_hash,
                order.id,
                ACCEPTED,
                accepted_document(placed.order, placing.order),
            )
            self._responses[keyed.key] = (response, keys_expire_at)
        return placed

    def _allocate(self, order: NewOrder) -> Allocation | RetailError:
        stock = {
            sku: Stock(p.stock, p.unit_price, p.currency)
            for sku, _ in order.items
            if (p := self._products.get(sku)) is not None
        }
        (decided,), _ = allocate([order], stock)
        return decided

    def _live_response(self, key: str, now: datetime) -> StoredResponse | None:
        found = self._responses.get(key)
        if found is None or found[1] <= now:
            return None
        return found[0]

    async def find_response(self, key: str, *, now: datetime) -> StoredResponse | None:
        return self._live_response(key, now)

    async def purge_expired_responses(self, *, now: datetime) -> int:
        expired = [key for key, (_, expires_at) in self._responses.items() if expires_at <= now]
        for key in expired:
            del self._responses[key]
        return len(expired)

    # --- reading --------------------------------------------------------------------------
    def _order(self, order_id: uuid.UUID) -> _Order:
        record = self._orders.get(order_id)
        if record is None:
            raise OrderNotFound(f"No order with id {order_id}.", order_id=str(order_id))
        return record

    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        return self._order(order_id).view

    async def list_orders(self, query: OrderQuery) -> tuple[list[OrderView], int | None]:
        before_seq = query.before_seq
        end = (
            len(self._by_seq)
            if before_seq is None
            else max(0, min(before_seq - 1, len(self._by_seq)))
        )
        page: list[OrderView] = []
        for index in range(end - 1, -1, -1):
            view = self._by_seq[index].view
            if not query.matches(view):
                continue
            if len(page) == query.limit:
                return page, page[-1].seq
            page.append(view)
        return page, None

    async def queue_position(self, order: OrderView) -> int:
        return self._waiting.ahead_of(order.seq) + 1

    async def list_events(self, order_id: uuid.UUID, *, after_id: int = 0) -> list[OrderEvent]:
        return [event for event in self._order(order_id).events if event.id > after_id]

    async def count_by_status(self) -> dict[OrderStatus, int]:
        return {
            OrderStatus.QUEUED: len(self._waiting),
            OrderStatus.PROCESSING: len(self._processing),
        }

    async def queued_by_priority(self) -> dict[Priority, int]:
        return {priority: self._waiting.count(priority) for priority in Priority}

    async def count_active_by_customer(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        waiting = (self._by_seq[seq - 1] for seq in self._waiting)
        for record in (*waiting, *self._processing.values()):
            customer = record.view.customer_id
            counts[customer] = counts.get(customer, 0) + 1
        return counts

    async def oldest_queued_at(self) -> datetime | None:
        oldest = min(self._waiting, default=None)
        return None if oldest is None else self._by_seq[oldest - 1].view.created_at

    # --- changing -------------------------------------------------------------------------
    async def cancel_order(self, order_id: uuid.UUID, *, now: datetime) -> OrderEvent:
        record = self._order(order_id)
        status = record.view.status
        if status is not OrderStatus.QUEUED:
            raise InvalidTransition(
                f"Order {order_id} is {status.value}: only a queued order can be cancelled, "
                "before fulfilment starts.",
                order_status=status.value,
            )
        self._waiting.remove(record.view.seq)
        record.view = replace(
            record.view, status=OrderStatus.CANCELLED, finished_at=now, updated_at=now
        )
        self._restock(record, now)
        return self._add_event(
            record, "cancelled", OrderStatus.CANCELLED, now, detail={"stock_released": True}
        )

    async def expire_due(self, *, now: datetime) -> list[Expired]:
        due = [seq for seq in self._waiting if _past_deadline(self._by_seq[seq - 1], now)]
        expired = []
        for seq in due:
            self._waiting.remove(seq)
            record = self._by_seq[seq - 1]
            record.view = replace(
                record.view, status=OrderStatus.EXPIRED, finished_at=now, updated_at=now
            )
            self._restock(record, now)
            event = self._add_event(
                record, "expired", OrderStatus.EXPIRED, now, detail=_expired_detail(record.view)
            )
            expired.append(Expired(event, record.view.priority))
        return expired

    # --- the work queue -------------------------------------------------------------------
    async def claim_next(self, *, owner: str, now: datetime, lease_s: float) -> Claim | None:
        record = self._next_claimable(now)
        if record is None:
            return None
        view = record.view
        if view.status is OrderStatus.QUEUED:
            self._waiting.remove(view.seq)
        self._processing[view.seq] = record
        record.lease_owner = owner
        record.lease_token += 1
        record.lease_expires_at = now + timedelta(seconds=lease_s)
        at = max(now, view.created_at)  # never before the order was created
        started_at = view.started_at or at
        record.view = replace(
            view, status=OrderStatus.PROCESSING, started_at=started_at, updated_at=now
        )
        resumed = record.lease_token > 1
        event = self._add_event(
            record,
            "resumed" if resumed else "started",
            OrderStatus.PROCESSING,
            at,
            detail={"worker": owner, "attempt": record.lease_token, "from_step": view.step_index},
        )
        return Claim(
            order_id=view.id,
            seq=view.seq,
            token=record.lease_token,
            step_index=view.step_index,
            line_count=len(view.lines),
            service_level=ServiceLevel(view.service_level),
            resumed=resumed,
            event=event,
            created_at=view.created_at,
            started_at=started_at,
            priority=view.priority,
            customer_id=view.customer_id,
        )

    def _next_claimable(self, now: datetime) -> _Order | None:
        # Orders whose worker vanished come first: they are older than anything queued.
        expired = [
            seq
            for seq, record in self._processing.items()
            if record.lease_expires_at is not None and record.lease_expires_at <= now
        ]
        if expired:
            return self._processing[min(expired)]
        for seq in self._waiting:
            record = self._by_seq[seq - 1]
            if not _past_deadline(record, now):
                return record
        return None

    def _fenced(self, claim: Claim) -> _Order:
        record = self._orders.get(claim.order_id)
        if (
            record is None
            or record.lease_token != claim.token
            or record.view.status is not OrderStatus.PROCESSING
        ):
            raise LeaseLost(str(claim.order_id))
        return record

    async def claim_many(
        self, *, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Claim]:
        claims: list[Claim] = []
        while len(claims) < limit:
            claim = await self.claim_next(owner=owner, now=now, lease_s=lease_s)
            if claim is None:
                break
            claims.append(claim)
        return claims

    async def transition(
        self, batch: Sequence[Transition], *, now: datetime, lease_s: float
    ) -> list[Transitioned]:
        results: list[Transitioned] = []
        for change in batch:
            try:
                results.append(self._transition(change, now, lease_s))
            except LeaseLost as lost:
                results.append(lost)
        return results

    def _transition(self, change: Transition, now: datetime, lease_s: float) -> list[OrderEvent]:
        record = self._fenced(change.claim)
        view = record.view
        if change.completed is not None:
            view = replace(view, step_index=change.completed[1])
        ending = change.ending
        if ending is None:
            record.lease_expires_at = now + timedelta(seconds=change.lease_for(lease_s))
            record.view = replace(view, updated_at=now)
        else:
            del self._processing[view.seq]
            record.lease_owner = None
            record.lease_expires_at = None
            record.view = replace(
                view,
                status=ending.status,
                finished_at=now,
                updated_at=now,
                failure_reason=ending.reason,
            )
            if ending.status is OrderStatus.FAILED:
                self._restock(record, now)
        return [
            self._add_event(record, kind, status, now, step, detail)
            for kind, status, step, detail in change.events()
        ]

    async def step_boundary(
        self,
        claim: Claim,
        *,
        now: datetime,
        completed: tuple[str, int, float] | None,
        starting: tuple[str, float] | None,
        lease_s: float,
    ) -> list[OrderEvent]:
        return self._transition(Transition(claim, completed, starting), now, lease_s)

    async def finish(
        self,
        claim: Claim,
        *,
        now: datetime,
        status: OrderStatus,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> OrderEvent:
        ending = Ending(status, reason, detail)
        return self._transition(Transition(claim, ending=ending), now, 0.0)[-1]

    async def release_leases(self, *, owner: str, now: datetime) -> int:
        released = [r for r in self._processing.values() if r.lease_owner == owner]
        for record in released:
            record.lease_expires_at = now
            record.view = replace(record.view, updated_at=now)
            self._add_event(
                record, "lease_released", OrderStatus.PROCESSING, now, detail={"worker": owner}
            )
        return len(released)

    # --- the catalogue --------------------------------------------------------------------
    async def list_products(self) -> list[Product]:
        return [self._products[sku].public() for sku in sorted(self._products)]

    async def get_product(self, sku: str) -> Product:
        product = self._products.get(sku)
        if product is None:
            raise ProductNotFound(f"No product with SKU {sku!r}.", sku=sku)
        return product.public()

    async def upsert_product(
        self, *, sku: str, name: str, unit_price: int, stock: int, currency: str, now: datetime
    ) -> tuple[Product, bool]:
        created = sku not in self._products
        product = _Product(sku, name, unit_price, currency, stock, now)
        self._products[sku] = product
        return product.public(), created

    # --- helpers --------------------------------------------------------------------------
    def _restock(self, record: _Order, now: datetime) -> None:
        for line in record.view.lines:
            product = self._products.get(line.sku)
            if product is not None:
                product.stock += line.quantity
                product.updated_at = now

    def _add_event(
        self,
        record: _Order,
        kind: str,
        status: OrderStatus,
        at: datetime,
        step: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> OrderEvent:
        self._event_id += 1
        event = OrderEvent(self._event_id, record.view.id, kind, status, step, at, detail)
        record.events.append(event)
        return event


def _past_deadline(record: _Order, now: datetime) -> bool:
    deadline = record.view.start_deadline
    return deadline is not None and deadline < now  # one that starts at it is in time


def _expired_detail(view: OrderView) -> dict[str, Any]:
    """What an `expired` event records (the same in every store)."""
    return {"start_deadline": iso(view.start_deadline), "stock_released": True}


if TYPE_CHECKING:  # mypy checks the class against the protocol

    def _conforms(store: MemoryStore) -> Store:
        return store
