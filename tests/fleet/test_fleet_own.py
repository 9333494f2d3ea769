"""A fleet process plans with its own claims and cancels from their commit, not from
their notices (the real app on PostgreSQL, its `LISTEN` notices held back)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from retail.runtime.fleet import Fleet
from retail.web.app import create_app
from tests.conftest import eventually, make_settings, place, postgres_database

Start = Callable[..., Any]


class HeldNotices:
    """Notices from the database, kept from the fleet view until `deliver()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: list[tuple[Fleet, str, int | None]] = []
        received = Fleet._received

        def hold(fleet: Fleet, payload: str, pid: int | None = None) -> None:
            self.held.append((fleet, payload, pid))

        self._received = received
        monkeypatch.setattr(Fleet, "_received", hold)
        # What this process's own transactions said of themselves when they committed.
        self.own: list[Mapping[str, Any]] = []
        committed = Fleet.committed

        def record(fleet: Fleet, notice: Mapping[str, Any]) -> None:
            self.own.append(notice)
            committed(fleet, notice)

        monkeypatch.setattr(Fleet, "committed", record)

    def updates(self) -> dict[int, dict[str, list[Any]]]:
        """The held update notices, merged per transaction: its orders per part."""
        merged: dict[int, dict[str, list[Any]]] = {}
        for _, payload, _ in self.held:
            notice = json.loads(payload)
            if notice["k"] == "u":
                parts = merged.setdefault(int(notice["x"]), {})
                for part in ("s", "m", "e", "l"):
                    parts.setdefault(part, []).extend(notice.get(part, []))
        return merged

    def agree(self) -> None:
        """Each own transaction said what its notices say, entry for entry."""
        updates = self.updates()
        assert self.own
        for notice in self.own:
            parts = {part: notice.get(part, []) for part in ("s", "m", "e", "l")}
            assert updates.pop(int(notice["x"])) == parts
        assert not updates  # and no update of this process went untold

    def claimed(self) -> bool:
        """Whether this process has committed a claim (orders started), and its notice
        has come and is held: the claim counts from its commit, the notice from now on
        could only count it again. (The notice may come before the claim's own answer
        does: both are waited for.)"""
        return any(notice.get("s") for notice in self.own) and any(
            "s" in json.loads(payload) and json.loads(payload)["k"] == "u"
            for _, payload, _ in self.held
        )

    def deliver(self) -> int:
        held, self.held = self.held, []
        for fleet, payload, pid in held:
            self._received(fleet, payload, pid)
        return len(held)


@pytest.fixture
async def fleet_app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Start, HeldNotices]]:
    held = HeldNotices(monkeypatch)
    async with postgres_database() as url, AsyncExitStack() as stack:

        async def start(**overrides: Any) -> httpx.AsyncClient:
            values: dict[str, Any] = {
                "fleet": True,
                "capacity": 1,
                "fulfilment_delay": "fixed:60",
                "fleet_reconcile_s": 60,  # no read of the whole fleet during the test
                "fair_share": False,
            }
            settings = make_settings(url, **{**values, **overrides})
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://retail.test"
            )
            return await stack.enter_async_context(client)

        yield start, held


async def capacity(client: httpx.AsyncClient) -> tuple[int, int]:
    body = (await client.get("/capacity")).json()
    return body["in_flight"], body["queued"]


async def test_an_order_claimed_here_is_in_flight_at_once_not_when_its_notice_comes(
    fleet_app: tuple[Start, HeldNotices],
) -> None:
    start, held = fleet_app
    client = await start(overload_mode="reject")
    assert (await place(client)).status_code == 202
    # This process's worker claims it; its claim's notice is held back.
    await eventually(held.claimed)
    assert await capacity(client) == (1, 0)
    refused = await place(client)
    assert refused.status_code == 503, refused.text
    assert refused.json()["in_flight"] == 1
    # The notices, late (the insert's and the claim's): counted once already.
    held.agree()
    assert held.deliver() >= 2
    assert await capacity(client) == (1, 0)
    assert (await place(client)).status_code == 503


async def test_an_order_cancelled_here_frees_its_place_at_once_not_when_its_notice_comes(
    fleet_app: tuple[Start, HeldNotices],
) -> None:
    start, held = fleet_app
    client = await start(overload_mode="queue", queue_limit=1)
    assert (await place(client)).status_code == 202
    await eventually(held.claimed)
    waiting = await place(client)
    assert waiting.status_code == 202
    assert (await place(client)).status_code == 503  # the queue's one place is taken
    cancelled = await client.post(f"/orders/{waiting.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert await capacity(client) == (1, 0)
    admitted = await place(client)  # the cancelled order's place, at once
    assert admitted.status_code == 202, admitted.text
    # The notices, late: the cancel is not counted again, the new order still waits.
    held.agree()
    held.deliver()
    assert await capacity(client) == (1, 1)
    assert (await place(client)).status_code == 503


async def test_claims_and_ends_of_this_process_say_what_their_notices_say(
    fleet_app: tuple[Start, HeldNotices],
) -> None:
    start, held = fleet_app
    client = await start(overload_mode="queue", capacity=2, fulfilment_delay="0")
    placed = [await place(client, customer=f"c{n}") for n in range(5)]
    assert all(answer.status_code == 202 for answer in placed)
    ids = [answer.json()["id"] for answer in placed]

    async def all_fulfilled() -> bool:
        states = [(await client.get(f"/orders/{order_id}")).json()["status"] for order_id in ids]
        return states == ["fulfilled"] * len(ids)

    await eventually(all_fulfilled)
    # Every order ended here, known at its end's commit: none left in flight or waiting.
    assert await capacity(client) == (0, 0)
    held.agree()
    held.deliver()
    assert await capacity(client) == (0, 0)
