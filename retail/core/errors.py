"""One error hierarchy for the domain; the web layer maps it to HTTP problems.

Each error knows its HTTP status and a problem `type` slug so the mapping stays in
one place, but nothing here imports a web framework.
"""

from __future__ import annotations

from typing import Any


class RetailError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    retry_after_s: int | None = None  # when set, the answer says when to retry
    retry_after_ms: int | None = None  # ... and, where known, the estimate itself (ms)

    def __init__(self, detail: str, *, retry_after_s: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s
            self.extra["retry_after_s"] = retry_after_s


class NotFound(RetailError):
    status, slug, title = 404, "not-found", "Not found"


class OrderNotFound(NotFound):
    slug, title = "order-not-found", "Order not found"


class ProductNotFound(NotFound):
    slug, title = "product-not-found", "Product not found"


class UnknownSku(RetailError):
    status, slug, title = 422, "unknown-sku", "Unknown SKU"


class InvalidOrder(RetailError):
    status, slug, title = 422, "invalid-order", "Invalid order"


class MixedCurrencies(RetailError):
    status, slug, title = 422, "mixed-currencies", "Mixed currencies"


class InsufficientStock(RetailError):
    status, slug, title = 409, "insufficient-stock", "Insufficient stock"


class InvalidTransition(RetailError):
    status, slug, title = 409, "invalid-transition", "Order cannot change that way"


class IdempotencyKeyInUse(RetailError):
    status, slug, title = 409, "idempotency-key-in-use", "Request with this key in progress"


class IdempotencyKeyMismatch(RetailError):
    status, slug, title = 422, "idempotency-key-mismatch", "Idempotency-Key reused"


class InvalidHeader(RetailError):
    status, slug, title = 400, "invalid-header", "Invalid header"


class CapacityExceeded(RetailError):
    """Shed for lack of capacity: `Retry-After` says when to come back (whole seconds),
    `retry_after_ms` the estimate it rounds (the `Retry-After-Ms` header)."""

    status, slug, title = 503, "capacity-exceeded", "Over capacity"
    retry_after_s: int

    def __init__(
        self, detail: str, *, retry_after_s: int, retry_after_ms: int | None = None, **extra: Any
    ) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **extra)
        self.retry_after_ms = retry_after_ms


class OverFairShare(CapacityExceeded):
    """Shed because the customer holds more than its fair share while others compete."""

    status, slug, title = 429, "over-fair-share", "Over fair share"


class Unavailable(RetailError):
    """The service cannot take the request now (shutting down, storage unreachable)."""

    status, slug, title = 503, "unavailable", "Unavailable"
