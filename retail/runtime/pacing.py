"""Pacing for periodic reads whose cost grows with the data (counting the queue).

A read that counts every waiting order takes longer as the queue deepens: at a fixed
interval it would take an ever larger share of the process. `Paced` runs such a read
at most every `interval_s`, and never more often than keeps it within `share` of the
time: a read that took 100 ms waits at least 100 ms / `share` before the next, up to
`max_interval_s`. A short queue is read every `interval_s`, as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

READ_SHARE = 0.02  # at most this share of the time goes to one paced read
MAX_INTERVAL_S = 10.0  # however long a read takes, it runs at least this often


class Monotonic(Protocol):
    def monotonic(self) -> float: ...


class Paced:
    def __init__(
        self,
        clock: Monotonic,
        interval_s: float,
        *,
        share: float = READ_SHARE,
        max_interval_s: float = MAX_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self.interval_s = interval_s
        self._share = share
        self._max_interval_s = max(interval_s, max_interval_s)
        self._next = -math.inf

    def due(self) -> bool:
        """Whether the read should run now."""
        return self._clock.monotonic() >= self._next

    @contextmanager
    def running(self) -> Iterator[None]:
        """Time one read; the next is due after `interval_s`, or later if this one was slow."""
        started = self._clock.monotonic()
        self._next = started + self.interval_s  # even if the read fails
        try:
            yield
        finally:
            took = self._clock.monotonic() - started
            wait = min(max(self.interval_s, took / self._share), self._max_interval_s)
            self._next = started + wait
