"""`GET /capacity/history`: the recent capacity snapshots, for charts that start full.

A sampler started with the app records the body of `GET /capacity` every
`RETAIL_SNAPSHOT_INTERVAL_S` into a bounded ring (`retail.runtime.history`), with a
count of the orders fulfilled so far; the dashboard fills its charts from it on open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from retail.runtime.history import DEFAULT_POINTS, CapacityHistory
from retail.web.presenters import capacity_snapshot
from retail.web.schemas import CapacityRead


class CapacityHistoryPoint(CapacityRead):
    at: datetime = Field(description="When the snapshot was taken (the service's clock).")
    fulfilled: int = Field(description="Orders fulfilled since the service started.")


class CapacityHistoryRead(BaseModel):
    interval_s: float = Field(description="Seconds between points (RETAIL_SNAPSHOT_INTERVAL_S).")
    max_points: int = Field(description="The most points kept; older ones are dropped.")
    points: list[CapacityHistoryPoint] = Field(description="Oldest first.")


async def _sample(app: FastAPI, history: CapacityHistory, stop: asyncio.Event) -> None:
    services = app.state.services
    interval = services.settings.snapshot_interval_s
    while not stop.is_set():
        snapshot = capacity_snapshot(services).model_dump(mode="json")
        history.record(services.clock.now(), snapshot)
        await services.clock.wait(stop, interval)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services = getattr(app.state, "services", None)
    if services is None:  # started without the app's lifespan: no history
        yield
        return
    history = CapacityHistory(DEFAULT_POINTS)
    services.bus.listen(history.notice)
    app.state.capacity_history = history
    stop = asyncio.Event()
    task = asyncio.create_task(_sample(app, history, stop), name="retail-capacity-history")
    try:
        yield
    finally:
        stop.set()
        await task


router = APIRouter(lifespan=_lifespan)


@router.get(
    "/capacity/history",
    tags=["capacity"],
    summary="Recent capacity snapshots, oldest first",
    response_model=CapacityHistoryRead,
)
async def get_capacity_history(request: Request) -> dict[str, Any]:
    """The body of `GET /capacity` every `RETAIL_SNAPSHOT_INTERVAL_S` over the last
    minutes (at most `max_points`), each with `at` and the orders `fulfilled` so far:
    enough to draw load and rates from before a viewer arrived."""
    history: CapacityHistory | None = getattr(request.app.state, "capacity_history", None)
    settings = request.app.state.settings
    points = history.points() if history is not None else []
    return {
        "interval_s": settings.snapshot_interval_s,
        "max_points": history.maxlen if history is not None else 0,
        "points": [point.to_json() for point in points],
    }
