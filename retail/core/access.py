"""Order tokens: with `RETAIL_ORDER_ACCESS=token`, the key to one order.

A token is an HMAC of the order's id under the service's secret: any process with
the secret can check it, and nothing needs storing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

ORDER_TOKEN_HEADER = "Order-Token"
TOKEN_BYTES = 18  # 144 bits, 24 characters


def order_token(order_id: uuid.UUID, secret: bytes) -> str:
    """The token that grants access to one order."""
    digest = hmac.new(secret, b"order:" + order_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:TOKEN_BYTES]).decode()


def verify_order_token(order_id: uuid.UUID, token: str | None, secret: bytes) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), order_token(order_id, secret).encode())
