"""A bound on live streams (SSE and WebSocket) open at once.

Each open stream holds a bus subscription, a database reader now and then, and a
connection: `StreamSlots` caps how many exist together, so a crowd of dashboards
cannot crowd out order intake.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from retail.core.errors import CapacityExceeded

DEFAULT_MAX_STREAMS = 100  # the default of RETAIL_MAX_STREAMS
STREAM_RETRY_AFTER_S = 5


class TooManyStreams(CapacityExceeded):
    slug, title = "too-many-streams", "Too many live streams"


class StreamSlots:
    def __init__(self, limit: int = DEFAULT_MAX_STREAMS) -> None:
        self.limit = limit
        self.open = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take a slot for the duration of the block; `TooManyStreams` if none is free."""
        if self.open >= self.limit:
            raise TooManyStreams(
                f"All {self.limit} live stream slots are taken; retry in "
                f"{STREAM_RETRY_AFTER_S} s, or poll instead.",
                retry_after_s=STREAM_RETRY_AFTER_S,
                max_streams=self.limit,
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
