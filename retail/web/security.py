"""Browser-facing protections: security headers on every response, `Origin` on `/ws`."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import Message, Receive, Scope, Send

from retail.web.middleware import HttpMiddleware

# The dashboard and the API: only this origin's scripts, styles and connections (the
# dashboard's fetch and /ws), nothing framed.
DEFAULT_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# /docs and /redoc: FastAPI's pages start Swagger UI and ReDoc with an inline script and
# load them from a CDN.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


DEFAULT_HEADERS = (*COMMON, (b"content-security-policy", DEFAULT_POLICY.encode()))
DOCS_HEADERS = (*COMMON, (b"content-security-policy", DOCS_POLICY.encode()))


def security_headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every response to `path` carries."""
    return DOCS_HEADERS if path in DOCS_PATHS else DEFAULT_HEADERS


def add_security_headers(headers: list[tuple[bytes, bytes]], path: str) -> None:
    """Add to a response's `headers` those it does not set itself."""
    present = {name.lower() for name, _ in headers}
    for name, value in security_headers(path):
        if name not in present:
            headers.append((name, value))


class SecurityHeaders(HttpMiddleware):
    """`X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options` and a
    `Content-Security-Policy` on every HTTP response (one the app set is kept)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                add_security_headers(headers, path)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def origin_allowed(headers: Iterable[tuple[bytes, bytes]], allowed: Iterable[str]) -> bool:
    """Whether a WebSocket handshake may proceed: no `Origin` (not a browser), the
    service's own host, or an origin listed in `RETAIL_ALLOWED_ORIGINS` (`*`: any)."""
    origin = host = None
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1").strip()
        elif name == b"host":
            host = value.decode("latin-1").strip().lower()
    if origin is None:
        return True
    listed = {item.rstrip("/").lower() for item in allowed}
    if "*" in listed or origin.rstrip("/").lower() in listed:
        return True
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host
