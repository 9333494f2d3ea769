"""`Idempotency-Key` (IETF draft), all of it: a retried `POST /orders` never makes a second order.

- The key's form, and the request's fingerprint (a hash of its JSON, keys sorted).
- Keys in flight in this process: a second request with the key while the first is
  being stored gets `409` (same body, retry shortly) or `422` (another body).
- The answer stored with the order, in the order's own transaction (the group
  commit writes it), and its replay: the same body gets it back, another body `422`.
- A lookup when the service is full: a retry of a stored order gets its answer even
  when a new order would be refused.
- Expired records are purged by the worker pool's housekeeping (`purge`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from retail.core.errors import IdempotencyKeyInUse, IdempotencyKeyMismatch, InvalidHeader
from retail.store.base import Store, StoredResponse

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_USE_RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class Claimed:
    """A key this request holds while its order is being stored."""

    key: str
    request_hash: str


class Idempotency:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._in_flight: dict[str, str] = {}  # key -> request hash

    def claim(self, key: str, body: bytes) -> Claimed:
        """Hold `key` for this request; `InvalidHeader`, 409 or 422 if it cannot be."""
        if not KEY_PATTERN.fullmatch(key):
            raise InvalidHeader(
                "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)."
            )
        digest = request_hash(body)
        first = self._in_flight.get(key)
        if first is not None:
            if first != digest:
                raise IdempotencyKeyMismatch(
                    "This Idempotency-Key is in use by a request with a different body; "
                    "use a new key for a different order."
                )
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is still being processed; retry shortly "
                "to get its response.",
                retry_after_s=IN_USE_RETRY_AFTER_S,
            )
        self._in_flight[key] = digest
        return Claimed(key, digest)

    def release(self, claimed: Claimed) -> None:
        """The request is done with its key (stored, replayed or refused)."""
        if self._in_flight.get(claimed.key) == claimed.request_hash:
            del self._in_flight[claimed.key]

    async def stored(self, claimed: Claimed, *, now: datetime) -> StoredResponse | None:
        """The answer stored under the key, if it is live (for a retry when the service is full)."""
        stored = await self._store.find_response(claimed.key, now=now)
        if stored is not None:
            check_same_request(stored, claimed.request_hash)
        return stored

    async def purge(self, *, now: datetime) -> int:
        return await self._store.purge_expired_responses(now=now)


def check_same_request(stored: StoredResponse, digest: str) -> None:
    """Refuse to replay an answer to a request with another body."""
    if stored.request_hash != digest:
        raise IdempotencyKeyMismatch(
            "This Idempotency-Key was used for a different request body; "
            "use a new key for a different order."
        )


def request_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()
