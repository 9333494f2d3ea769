"""A bounded ring of recent capacity snapshots, so a new viewer sees the last minutes.

Fed every `snapshot_interval_s` with the body of `GET /capacity` (the same figures
`/ws` sends) and told of every order that is fulfilled, it keeps the newest
`maxlen` points: with the default one-second interval, the last ten minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

DEFAULT_POINTS = 600


class Notice(Protocol):
    @property
    def kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: datetime
    snapshot: dict[str, Any]  # the body of GET /capacity at `at`
    fulfilled: int  # orders fulfilled since the history began

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "fulfilled": self.fulfilled, **self.snapshot}


class CapacityHistory:
    """The newest `maxlen` snapshots, oldest first."""

    def __init__(self, maxlen: int = DEFAULT_POINTS) -> None:
        if maxlen < 1:
            raise ValueError("the history needs room for at least one point")
        self._points: deque[HistoryPoint] = deque(maxlen=maxlen)
        self.fulfilled = 0

    @property
    def maxlen(self) -> int:
        return self._points.maxlen or 0

    def notice(self, notice: Notice) -> None:
        """A bus listener: counts fulfilled orders."""
        if notice.kind == "fulfilled":
            self.fulfilled += 1

    def record(self, at: datetime, snapshot: dict[str, Any]) -> None:
        self._points.append(HistoryPoint(at, dict(snapshot), self.fulfilled))

    def points(self) -> list[HistoryPoint]:
        return list(self._points)

    def __len__(self) -> int:
        return len(self._points)
