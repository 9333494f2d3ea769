"""Request body size limit, enforced before the body is read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.api.problems import problem
from retail.errors import RetailError


class BodyTooLarge(RetailError):
    status, slug, title = 413, "body-too-large", "Request body too large"


class BodySizeLimit:
    """Refuse bodies over `max_bytes`: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"The request body exceeds {self.max_bytes} bytes."
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    response = problem(413, BodyTooLarge.slug, BodyTooLarge.title, detail)
                    await response(scope, receive, send)
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
                    raise BodyTooLarge(detail)
            return message

        replaced = False

        async def checked_send(message: Message) -> None:
            # The app may turn the aborted read into some other error: answer 413 instead.
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced:
                replaced = True
                response = problem(413, BodyTooLarge.slug, BodyTooLarge.title, detail)
                await response(scope, receive, send)

        await self.app(scope, limited_receive, checked_send)
