"""Request body size limit, enforced before the body is read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.core.errors import RetailError
from retail.web.middleware import HttpMiddleware
from retail.web.problems import retail_problem


class BodyTooLarge(RetailError):
    status, slug, title = 413, "body-too-large", "Request body too large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The request body exceeds {max_bytes} bytes.")


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
