"""Opaque list cursors: the position in the orders list, encrypted and signed.

A cursor carries the internal sequence number of the last order on a page, but a
client can neither read it nor make one up: the number is masked with a keyed
pseudo-random pad (HMAC-SHA256 of a random nonce) and the whole is authenticated.
Anything this process did not give out, including a forged number too large for
the database, is refused as `400`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from retail.core.errors import RetailError

NONCE_BYTES = 8
SEQ_BYTES = 8
TAG_BYTES = 12
MAX_SEQ = 2**63 - 1  # the database's BIGINT


class InvalidCursor(RetailError):
    status, slug, title = 400, "invalid-cursor", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "cursor: not a cursor this API gave out; pass `next_cursor` from a previous page."
        )


def _pad(key: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, b"cursor-pad" + nonce, hashlib.sha256).digest()[:SEQ_BYTES]


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"cursor-tag" + body, hashlib.sha256).digest()[:TAG_BYTES]


def encode_cursor(seq: int, key: bytes) -> str:
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number out of range: {seq}")
    nonce = os.urandom(NONCE_BYTES)
    masked = bytes(
        a ^ b for a, b in zip(seq.to_bytes(SEQ_BYTES, "big"), _pad(key, nonce), strict=True)
    )
    body = nonce + masked
    return base64.urlsafe_b64encode(body + _tag(key, body)).decode().rstrip("=")


def decode_cursor(cursor: str, key: bytes) -> int:
    """The sequence number in a cursor this service gave out; `InvalidCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error):
        raise InvalidCursor() from None
    if len(raw) != NONCE_BYTES + SEQ_BYTES + TAG_BYTES:
        raise InvalidCursor()
    body, tag = raw[: NONCE_BYTES + SEQ_BYTES], raw[NONCE_BYTES + SEQ_BYTES :]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise InvalidCursor()
    nonce, masked = body[:NONCE_BYTES], body[NONCE_BYTES:]
    seq = int.from_bytes(bytes(a ^ b for a, b in zip(masked, _pad(key, nonce), strict=True)), "big")
    if seq > MAX_SEQ:
        raise InvalidCursor()
    return seq
