"""Who may read and cancel an order (`RETAIL_ORDER_ACCESS`).

`open` (the default): there are no customer accounts; anyone who knows an order's
id may read, follow and cancel it, and anyone may list orders. Order ids are
random enough not to be guessed, but they are not secrets (they appear in `/ws`).

`token`: each order has a token, an HMAC of its id under `RETAIL_SECRET_KEY`
(`order_token`), for the answer to `POST /orders` to hand out as `Order-Token`.
Reading, following or cancelling the order needs that token, in the `Order-Token`
header or, for a browser's `EventSource` which cannot send headers, a `token` query
parameter. Listing orders needs the
admin token.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from retail.config import OrderAccess
from retail.core.access import ORDER_TOKEN_HEADER, verify_order_token
from retail.core.errors import RetailError
from retail.web.deps import ServicesDep
from retail.web.problems import PROBLEM_MEDIA_TYPE


class OrderTokenRequired(RetailError):
    status, slug, title = 403, "order-token-required", "Order token required"


order_token_header = APIKeyHeader(
    name=ORDER_TOKEN_HEADER,
    auto_error=False,
    description="With RETAIL_ORDER_ACCESS=token: the token returned when the order was placed.",
)


async def require_order_access(
    order_id: uuid.UUID,
    services: ServicesDep,
    header: Annotated[str | None, Depends(order_token_header)],
    token: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[A-Za-z0-9_-]+={0,2}$",
            description="The order token, for clients that cannot send `Order-Token` "
            "(a browser's EventSource). Only with RETAIL_ORDER_ACCESS=token.",
        ),
    ] = None,
) -> None:
    settings = services.settings
    if settings.order_access is OrderAccess.OPEN:
        return
    if not verify_order_token(order_id, header or token, settings.signing_key()):
        raise OrderTokenRequired(
            f"This order needs its token: send it in the `{ORDER_TOKEN_HEADER}` header."
        )


async def require_list_access(request: Request, services: ServicesDep) -> None:
    settings = services.settings
    if settings.order_access is OrderAccess.OPEN:
        return
    admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
    given = request.headers.get("authorization", "")
    if not admin or not hmac.compare_digest(given.encode(), f"Bearer {admin}".encode()):
        raise OrderTokenRequired(
            "With RETAIL_ORDER_ACCESS=token, listing orders needs "
            "`Authorization: Bearer <RETAIL_ADMIN_TOKEN>`."
        )


OrderAccessDep = Depends(require_order_access)
ListAccessDep = Depends(require_list_access)

FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "RETAIL_ORDER_ACCESS=token and the order's token (listing: the admin "
        "token) is missing or wrong.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}
