"""uvicorn's server, telling the service the moment a stop is asked for.

uvicorn runs the app's lifespan shutdown only after open requests have finished (or
its graceful timeout has passed). A client holding a `Prefer: wait` would then be cut
off with an error although its order is stored. This server closes the service's
event bus as soon as the signal comes: every waiter answers `202` with its
`Location` at once, and live streams end, before the server waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn

from retail.runtime.logs import flush_logs


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                flush_logs()  # the last lines are out before the signal is raised again

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_stop)
        super().handle_exit(sig, frame)
