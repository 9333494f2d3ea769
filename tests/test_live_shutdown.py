"""Open live streams do not hold up a server that is told to stop: on SIGTERM each SSE
stream ends cleanly (a client reconnects elsewhere with Last-Event-ID) and /ws closes
with 1012 (service restart)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.serving import server_in, uvicorn_command

pytestmark = pytest.mark.slow

UVICORN_EXIT = {0, -signal.SIGTERM}


async def test_sigterm_ends_open_streams_cleanly(tmp_path: Path) -> None:
    # Orders that take a minute: the streams would stay open that long on their own.
    settings = {"capacity": 1, "fulfilment_delay": 60, "shutdown_timeout_s": 0.5}
    with server_in(tmp_path, uvicorn_command, **settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            order = {"customer_id": "a", "items": [{"sku": "MUG-1", "quantity": 1}]}
            ids = [(await client.post("/orders", json=order)).json()["id"] for _ in range(2)]
            lines: dict[str, list[str]] = {order_id: [] for order_id in ids}
            opened = asyncio.Event()

            async def follow(order_id: str) -> None:
                headers = {"Accept": "text/event-stream"}
                async with client.stream("GET", f"/orders/{order_id}/events", headers=headers) as r:
                    async for line in r.aiter_lines():
                        lines[order_id].append(line)
                        if all(lines.values()):
                            opened.set()

            readers = [asyncio.create_task(follow(order_id)) for order_id in ids]
            async with connect(server.url.replace("http", "ws") + "/ws") as ws:
                await ws.recv()
                async with asyncio.timeout(10):
                    await opened.wait()
                code, _ = await asyncio.to_thread(server.terminate)
                async with asyncio.timeout(10):
                    await ws.wait_closed()
                assert ws.close_code == 1012
            await asyncio.gather(*readers)  # each stream ended without a protocol error
    assert code in UVICORN_EXIT, server.output()
    assert "id: " in "\n".join(lines[ids[0]])
    assert "ASGI callable returned without completing response" not in server.output()
