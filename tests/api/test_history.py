"""`GET /capacity/history`: the recent capacity snapshots a new viewer starts from."""

from __future__ import annotations

from datetime import datetime

import pytest

from retail.runtime.history import CapacityHistory
from tests.conftest import StartApp, eventually

ORDER = {"customer_id": "hana", "items": [{"sku": "MUG-1", "quantity": 1}]}


async def test_history_keeps_recent_snapshots_and_fulfilled_orders(start_app: StartApp) -> None:
    running = await start_app(capacity=2, fulfilment_delay="0", snapshot_interval_s=0.02)
    client = running.client
    for _ in range(3):
        assert (await client.post("/orders", json=ORDER)).status_code == 202

    async def fulfilled_three() -> bool:
        points = (await client.get("/capacity/history")).json()["points"]
        return bool(points) and points[-1]["fulfilled"] == 3

    await eventually(fulfilled_three)
    body = (await client.get("/capacity/history")).json()
    assert body["interval_s"] == pytest.approx(0.02)
    points = body["points"]
    assert len(points) <= body["max_points"]
    times = [datetime.fromisoformat(p["at"]) for p in points]
    assert times == sorted(times)
    last = points[-1]
    capacity = (await client.get("/capacity")).json()
    for key in ("mode", "capacity", "queue_limit", "full_service_s"):
        assert last[key] == capacity[key]
    assert last["counters"]["accepted"] == 3
    fulfilled = [p["fulfilled"] for p in points]
    assert fulfilled == sorted(fulfilled)


async def test_history_is_in_the_openapi_document(start_app: StartApp) -> None:
    running = await start_app()
    schema = (await running.client.get("/openapi.json")).json()
    operation = schema["paths"]["/capacity/history"]["get"]
    assert operation["tags"] == ["capacity"]
    assert "200" in operation["responses"]


def test_the_ring_keeps_only_the_newest_points() -> None:
    history = CapacityHistory(maxlen=3)
    for second in range(5):
        history.record(datetime.fromtimestamp(second), {"in_flight": second})
    assert [p.snapshot["in_flight"] for p in history.points()] == [2, 3, 4]
    with pytest.raises(ValueError, match="at least one point"):
        CapacityHistory(maxlen=0)
