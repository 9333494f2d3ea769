"""Request body limits: size, enforced before the body is read into memory, and time."""

from __future__ import annotations

import asyncio
import math
import weakref

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.core.errors import RetailError
from retail.web.middleware import HttpMiddleware
from retail.web.problems import retail_problem


class BodyTooLarge(RetailError):
    status, slug, title = 413, "body-too-large", "Request body too large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The request body exceeds {max_bytes} bytes.")


class BodyDeadlines:
    """Cancels the tasks still reading a request body when their time is up.

    One timer ticks every `TICK_S` while any request reads, for all of them, instead of
    a timer of their own: a request that reads its body in time (nearly all) costs a set
    insertion and removal, not a timer made and cancelled. A deadline is kept at most
    two ticks late. One per event loop (`for_loop`).
    """

    TICK_S = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tick = 0  # ticks so far
        self._ticking = False
        self._due: dict[int, set[asyncio.Task[object]]] = {}  # tick -> tasks reading
        self.expired: set[asyncio.Task[object]] = set()  # cancelled by a deadline

    def start(self, task: asyncio.Task[object], timeout_s: float) -> int:
        """`task` reads a body for at most `timeout_s`; the tick to give to `stop`."""
        # The next tick comes within one TICK_S: one more makes up for the part gone.
        tick = self._tick + math.ceil(timeout_s / self.TICK_S) + 1
        tasks = self._due.get(tick)
        if tasks is None:
            tasks = self._due[tick] = set()
        tasks.add(task)
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(self.TICK_S, self._advance)
        return tick

    def stop(self, task: asyncio.Task[object], tick: int) -> bool:
        """`task` is done reading; whether its deadline cancelled it first."""
        tasks = self._due.get(tick)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._due[tick]
        if self.expired and task in self.expired:
            self.expired.discard(task)
            return True
        return False

    def _advance(self) -> None:
        self._tick += 1
        for task in self._due.pop(self._tick, ()):
            self.expired.add(task)
            task.cancel()
        if self._due:
            self._loop.call_later(self.TICK_S, self._advance)
        else:
            self._ticking = False  # until the next request reads

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> BodyDeadlines:
        deadlines = _DEADLINES.get(loop)
        if deadlines is None:
            deadlines = _DEADLINES[loop] = cls(loop)
        return deadlines


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BodyDeadlines] = (
    weakref.WeakKeyDictionary()
)


def declared_too_large(content_length: str | bytes | None, max_bytes: int) -> bool:
    """Whether a `Content-Length` value announces a body over `max_bytes`."""
    if content_length is None:
        return False
    try:
        return int(content_length) > max_bytes
    except ValueError:
        return False


class BodySizeLimit(HttpMiddleware):
    """Refuse bodies over `max_bytes`: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length" and declared_too_large(value, self.max_bytes):
                await retail_problem(BodyTooLarge(self.max_bytes), instance=None)(
                    scope, receive, send
                )
                return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        replaced = False

        async def checked_send(message: Message) -> None:
            # The app may turn the aborted read into some other error: answer 413 instead.
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced:
                replaced = True
                await retail_problem(BodyTooLarge(self.max_bytes), instance=None)(
                    scope, receive, send
                )

        await self.app(scope, limited_receive, checked_send)
