"""A database that is down or timing out answers `503` + `Retry-After`, on every path.

Routes get this from the exception handlers (`retail.web.problems`); this middleware
covers what runs in front of the router (the `POST /orders` fast path), where an
exception would otherwise reach the server as a `500` that closes the connection.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retail.store.sql.outage import database_outage
from retail.web.middleware import HttpMiddleware
from retail.web.problems import log_outage, outage_problem


def outage_response(error: Exception, scope: Scope) -> ASGIApp | None:
    """The `503` for an exception that says the database is unavailable (logged), or None."""
    cause = database_outage(error)
    if cause is None:
        return None
    log_outage(scope["method"], scope["path"], cause, error)
    return outage_problem(cause, instance=scope["path"])


class DatabaseOutage(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            response = None if started else outage_response(error, scope)
            if response is None:
                raise
            await response(scope, receive, send)
