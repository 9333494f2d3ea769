"""Order rules: line limits, how a batch takes stock, and the order's JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from retail.core.errors import InsufficientStock, InvalidOrder, MixedCurrencies, UnknownSku
from retail.core.orders import (
    Allocation,
    NewOrder,
    Stock,
    accepted_document,
    allocate,
    order_document,
    validate_items,
)
from retail.core.types import ServiceLevel
from retail.web.schemas import OrderRead

NOW = datetime(2030, 1, 1, tzinfo=UTC)
STOCK = {
    "MUG-1": Stock(available=3, unit_price=1250, currency="EUR"),
    "PEN-3": Stock(available=10, unit_price=450, currency="EUR"),
    "HAT-9": Stock(available=5, unit_price=700, currency="USD"),
}


def order(*items: tuple[str, int], position: int = 1) -> NewOrder:
    return NewOrder(
        id=uuid.uuid4(),
        customer_id="alice",
        items=tuple(items),
        service_level=ServiceLevel.FULL,
        skipped_steps=(),
        queue_position=position,
        estimated_start_at=NOW - timedelta(seconds=1),
    )


def test_line_limits_say_what_is_wrong() -> None:
    assert validate_items([("A", 1), ("B", 2)], max_lines=2, max_quantity=5) == (("A", 1), ("B", 2))
    with pytest.raises(InvalidOrder, match="at most 1 lines; this one has 2"):
        validate_items([("A", 1), ("B", 2)], max_lines=1, max_quantity=5)
    with pytest.raises(InvalidOrder, match=r"items\.0\.quantity: at most 5 units"):
        validate_items([("A", 6)], max_lines=2, max_quantity=5)
    with pytest.raises(InvalidOrder, match=r"items\.1\.sku: A appears twice"):
        validate_items([("A", 1), ("A", 1)], max_lines=2, max_quantity=5)


def test_a_batch_takes_stock_in_arrival_order_each_order_all_or_nothing() -> None:
    outcomes, taken = allocate(
        [
            order(("MUG-1", 2), ("PEN-3", 1)),
            order(("MUG-1", 2)),  # only 1 left: refused whole
            order(("MUG-1", 1), ("PEN-3", 9)),
            order(("NOPE", 1)),
            order(("MUG-1", 0), ("HAT-9", 1)),
        ],
        STOCK,
    )
    first, short, last_mug, unknown, mixed = outcomes
    assert isinstance(first, Allocation)
    assert (first.total, first.currency) == (2 * 1250 + 450, "EUR")
    assert isinstance(short, InsufficientStock)
    assert short.extra["short"] == [{"sku": "MUG-1", "requested": 2, "available": 1}]
    assert isinstance(last_mug, Allocation)
    assert isinstance(unknown, UnknownSku)
    assert isinstance(mixed, MixedCurrencies)
    assert taken == {"MUG-1": 3, "PEN-3": 10}  # never more than there is


def test_the_orders_json_is_what_the_api_documents() -> None:
    (allocation,), _ = allocate([order(("MUG-1", 2), position=3)], STOCK)
    assert isinstance(allocation, Allocation)
    view = allocation.view(seq=7, now=NOW)
    document = accepted_document(view, allocation.order)
    # The 202 is written straight from the document: it must be exactly OrderRead's JSON.
    assert OrderRead.model_validate(document).model_dump(mode="json") == document
    assert document["queue_position"] == 3
    assert document["estimated_start_at"] == "2030-01-01T00:00:00Z"  # never before creation
    assert document["lines"] == [
        {"sku": "MUG-1", "quantity": 2, "unit_price": 1250, "line_total": 2500}
    ]
    assert order_document(view)["queue_position"] is None
