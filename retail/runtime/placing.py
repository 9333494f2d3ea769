"""Placing an order: the one function behind both doors of `POST /orders`.

`place_order` takes an order that is whole and well-formed (its JSON was read and
validated by the web layer) and does the rest: its key (`retail.runtime.idempotency`),
the service's own limits on its lines, the admission decision, the group-committed
write (`Ingest`), and the answer, rendered after the commit. A `RetailError` says
why not; the web layer maps it to a problem response.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

import pydantic_core
from uuid_utils.compat import uuid7

from retail.config import OrderAccess
from retail.core.access import ORDER_TOKEN_HEADER, order_token
from retail.core.admission import Ticket
from retail.core.capacity import retry_after_s
from retail.core.errors import CapacityExceeded, InvalidOrder
from retail.core.orders import (
    NewOrder,
    OrderView,
    Placed,
    accepted_document,
    order_document,
    validate_items,
)
from retail.core.types import Priority
from retail.runtime.bus import Subscription
from retail.runtime.idempotency import Claimed, check_same_request
from retail.runtime.services import Services
from retail.runtime.streams import TooManyStreams
from retail.store.base import Keyed, Placing, StoredResponse

PREFER_WAIT_RECHECK_S = 1.0  # an order fulfilled by another process is noticed this late


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one `POST /orders`: status, headers and the JSON body."""

    status: int
    headers: dict[str, str]
    body: bytes


async def place_order(
    services: Services,
    *,
    customer_id: str,
    items: Sequence[tuple[str, int]],
    body: bytes,
    key: str | None = None,
    prefer_wait_s: float | None = None,
    priority: Priority = Priority.STANDARD,
    start_within_s: float | None = None,
) -> Answer:
    """Store the order (or replay its key's stored answer); raise a `RetailError` if not.

    `body` is the request's JSON as received (an `Idempotency-Key` is bound to it);
    `prefer_wait_s`: hold the answer until the order ends, this long at most. With
    `RETAIL_ORDER_ACCESS=token` the answer carries the order's token. `priority` and
    `start_within_s` (worth fulfilling only if it starts within that many seconds of
    its acceptance) go to admission; a waiting order past that deadline expires.
    """
    settings = services.settings
    claimed = services.idempotency.claim(key, body) if key is not None else None
    try:
        lines = validate_items(
            items, max_lines=settings.max_order_lines, max_quantity=settings.max_line_quantity
        )
        try:
            ticket = services.admission.admit(
                services.clock.seconds(),
                customer_id,
                priority=priority,
                start_within_s=start_within_s,
            )
        except CapacityExceeded:
            # A retry of an order already stored gets its answer even when full.
            if claimed is not None:
                stored = await services.idempotency.stored(claimed, now=services.clock.now())
                if stored is not None:
                    return _replayed(services, stored)
            raise  # 503, nothing written
    except BaseException:
        if claimed is not None:
            services.idempotency.release(claimed)
        raise
    decision = ticket.decision
    now = services.clock.now()
    new = NewOrder(
        id=uuid7(),  # time-ordered: new ids go to the end of each index on them
        customer_id=customer_id,
        items=lines,
        service_level=decision.service_level,
        skipped_steps=services.pipeline.skipped(decision.service_level),
        queue_position=decision.queue_position,
        estimated_start_at=now + timedelta(seconds=decision.estimated_start_s),
        priority=priority,
        start_deadline=None if start_within_s is None else now + timedelta(seconds=start_within_s),
    )
    keyed = Keyed(claimed.key, claimed.request_hash) if claimed is not None else None
    if prefer_wait_s is not None:
        return await _placed_waiting(services, new, keyed, ticket, claimed, prefer_wait_s)
    outcome = await _stored(services, Placing(new, keyed), ticket, claimed)
    if isinstance(outcome, StoredResponse):
        return _replayed(services, outcome)
    return _accepted(services, outcome, new, ticket)


def refuse_order(
    services: Services,
    *,
    customer_id: str,
    items: Sequence[tuple[str, int]],
    priority: Priority = Priority.STANDARD,
    start_within_s: float | None = None,
) -> None:
    """Raise the `CapacityExceeded` `place_order` would raise now for this order without
    an `Idempotency-Key`, taking nothing; return if it would go on (to be placed, or
    refused for its items: `place_order` tells it then).

    For a request read only so that fair shares see its customer (`retail serve`'s
    door): refused there, it costs no request task.
    """
    settings = services.settings
    try:
        validate_items(
            items, max_lines=settings.max_order_lines, max_quantity=settings.max_line_quantity
        )
    except InvalidOrder:
        return
    services.admission.refuse(
        services.clock.seconds(), customer_id, priority=priority, start_within_s=start_within_s
    )


def _accepted(services: Services, placed: Placed, new: NewOrder, ticket: Ticket) -> Answer:
    """The `202` for an order just stored."""
    headers = _located(services, new.id)
    headers["Retry-After"] = str(retry_after_s(ticket.decision.estimated_start_s))
    return Answer(202, headers, _json(accepted_document(placed.order, new)))


async def _placed_waiting(
    services: Services,
    new: NewOrder,
    keyed: Keyed | None,
    ticket: Ticket,
    claimed: Claimed | None,
    prefer_wait_s: float,
) -> Answer:
    """Store the order, then hold the answer until it ends (`Prefer: wait`)."""
    with ExitStack() as held:
        waiting = _wait_for(services, held, new.id)
        outcome = await _stored(services, Placing(new, keyed), ticket, claimed)
        if isinstance(outcome, StoredResponse):
            return _replayed(services, outcome)
        if waiting is not None:
            ended = await _terminal(services, waiting, new.id, prefer_wait_s)
            if ended is not None:
                headers = _located(services, new.id)
                headers["Preference-Applied"] = f"wait={prefer_value(prefer_wait_s)}"
                return Answer(201, headers, _json(order_document(ended)))
    return _accepted(services, outcome, new, ticket)


async def _stored(
    services: Services, placing: Placing, ticket: Ticket, claimed: Claimed | None
) -> Placed | StoredResponse:
    """Hand the order to the group commit; its place and key are settled once it is written."""

    def settle(outcome: Placed | StoredResponse | BaseException) -> None:
        if isinstance(outcome, BaseException):
            ticket.release()
        elif isinstance(outcome, StoredResponse):
            ticket.withdraw()  # a retry of a stored order: no new order
        else:
            ticket.keep()
        if claimed is not None:
            services.idempotency.release(claimed)

    try:
        future = services.ingest.submit(placing, settle)
    except BaseException as error:
        settle(error)
        raise
    # A client that hangs up cancels the future, not the write: its order is stored and
    # settled all the same (see `Ingest.submit`).
    outcome = await future
    if isinstance(outcome, StoredResponse) and claimed is not None:
        check_same_request(outcome, claimed.request_hash)
    return outcome


def _wait_for(services: Services, held: ExitStack, order_id: uuid.UUID) -> Subscription | None:
    """Subscribe to the order's events before it exists, so none is missed.

    A waiter holds one of the live-stream slots: with none free, the client gets its
    `202` at once, as if it had not asked to wait.
    """
    try:
        held.enter_context(services.streams.hold())
    except TooManyStreams:
        return None
    return held.enter_context(services.bus.subscribe(order_id))


async def _terminal(
    services: Services, subscription: Subscription, order_id: uuid.UUID, seconds: float
) -> OrderView | None:
    """The order once it has ended, or None if `seconds` pass or the service stops first.

    Woken by this process's events; re-reads the order every `PREFER_WAIT_RECHECK_S`
    too, for orders fulfilled by another process (`retail worker`).
    """
    clock = services.clock
    deadline = clock.monotonic() + seconds
    while True:
        order = await services.store.get_order(order_id)
        if order.status.is_terminal:
            return order
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0 or subscription.closed:
                return None
            subscription.arrived.clear()
            woken = await clock.wait(subscription.arrived, min(remaining, PREFER_WAIT_RECHECK_S))
            if not woken or subscription.closed or subscription.drain_terminal():
                break


def _replayed(services: Services, stored: StoredResponse) -> Answer:
    return Answer(
        stored.status,
        {**_located(services, stored.order_id), "Idempotent-Replayed": "true"},
        _json(stored.body),
    )


def _located(services: Services, order_id: uuid.UUID) -> dict[str, str]:
    """Where the order is; with `RETAIL_ORDER_ACCESS=token`, the token to read it with."""
    headers = {"Location": f"/orders/{order_id}"}
    settings = services.settings
    if settings.order_access is OrderAccess.TOKEN:
        headers[ORDER_TOKEN_HEADER] = order_token(order_id, settings.signing_key())
    return headers


def _json(document: object) -> bytes:
    """Compact JSON, UTF-8 (pydantic's serializer: several times faster than `json.dumps`)."""
    return pydantic_core.to_json(document)


def prefer_value(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)
