"""Start the services on the first request when the server has no ASGI lifespan.

uvicorn and hypercorn run the app's lifespan before the first request and after
the last. Some servers (daphne) do not speak the lifespan protocol: there the
services start on the first request instead (a health probe is enough), and stop
when the process exits, with the same drain and shutdown timeout as a lifespan
shutdown. An order interrupted by a harder stop resumes once its lease expires,
as after a crash.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
from contextlib import AsyncExitStack

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


class StartOnFirstRequest:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._starting: asyncio.Task[None] | None = None
        self._stack = AsyncExitStack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            application: FastAPI = scope["app"]
            if not hasattr(application.state, "services"):
                await self._start(application)
        await self.app(scope, receive, send)

    async def _start(self, application: FastAPI) -> None:
        failed = (
            self._starting is not None
            and self._starting.done()
            and (self._starting.cancelled() or self._starting.exception() is not None)
        )
        if self._starting is None or failed:
            # Its own task: a client hanging up cannot leave the services half started.
            # A fresh context: the services' tasks must not inherit this request's id.
            self._starting = asyncio.create_task(
                self._enter_lifespan(application),
                name="retail-start",
                context=contextvars.Context(),
            )
        await asyncio.shield(self._starting)

    async def _enter_lifespan(self, application: FastAPI) -> None:
        log.info("the server did not run the ASGI lifespan: starting on the first request")
        await self._stack.enter_async_context(application.router.lifespan_context(application))
        atexit.register(self._stop_at_exit, asyncio.get_running_loop())

    def _stop_at_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.is_closed() or loop.is_running():
            log.warning("could not stop the services cleanly: their event loop is gone")
            return
        loop.run_until_complete(self._stack.aclose())
