"""Every error as an RFC 9457 `application/problem+json` response."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from retail.core.errors import RetailError
from retail.store.sql.outage import database_outage

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER_S = 2
# SQLSTATE classes and codes that mean "the database cannot serve now", not "this
# request is wrong": connection exceptions, insufficient resources, operator
# intervention (shutdown, cannot connect now), the database gone or not accepting.


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ProblemType(NamedTuple):
    """What a problem is, whatever the request: its status, `type` slug and title (a
    `RetailError` class carries the same three)."""

    status: int
    slug: str
    title: str


MALFORMED_JSON = ProblemType(400, "malformed-json", "Malformed JSON")
INVALID_REQUEST = ProblemType(422, "validation-error", "Invalid request")
DATABASE_UNAVAILABLE = ProblemType(503, "database-unavailable", "Database unavailable")
INTERNAL_ERROR = ProblemType(500, "internal-error", "Internal error")
NOT_READY = ProblemType(503, "not-ready", "Not ready")

Headers = dict[str, str] | None


def problem(
    kind: ProblemType, detail: str, *, instance: str | None, headers: Headers = None, **extra: Any
) -> ProblemResponse:
    """The `application/problem+json` answer; `instance` is the request's path, if any."""
    status, slug, title = kind
    body = {
        "type": f"/problems/{slug}" if slug != "about:blank" else slug,
        "title": title,
        "status": status,
        "detail": detail,
        **({"instance": instance} if instance else {}),
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def _retail_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, RetailError)
    return retail_problem(error, instance=request.url.path, method=request.method)


def retail_problem(
    error: RetailError, *, instance: str | None, method: str = "POST"
) -> ProblemResponse:
    """The problem response for a domain error, from the route's handler or the fast path.

    Server-side failures are logged; sheddings (they say when to retry) are not.
    """
    if error.status >= 500 and error.retry_after_s is None:
        log.error("%s %s: %s", method, instance, error.detail)
    headers = None
    if error.retry_after_s is not None:
        headers = {"Retry-After": str(error.retry_after_s)}
        if error.retry_after_ms is not None:
            headers["Retry-After-Ms"] = str(error.retry_after_ms)
    elif error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}  # required on every 401 (RFC 9110)
    return problem(
        ProblemType(error.status, error.slug, error.title),
        error.detail,
        instance=instance,
        headers=headers,
        **error.extra,
    )


async def _validation_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {"field": _location(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
        for e in error.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(
            MALFORMED_JSON,
            "The request body is not valid JSON: " + errors[0]["message"] + ".",
            instance=request.url.path,
        )
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        summary += f"; and {len(errors) - 5} more"
    return problem(INVALID_REQUEST, summary, instance=request.url.path, errors=errors)


async def _http_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
    headers = dict(error.headers) if error.headers else {}
    if error.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    kind = ProblemType(
        error.status_code, "about:blank", titles.get(error.status_code, "HTTP error")
    )
    return problem(
        kind,
        str(error.detail),
        instance=request.url.path,
        headers=headers or None,
    )


def outage_problem(cause: str, *, instance: str | None) -> ProblemResponse:
    """`503` + `Retry-After` for a database that is down or timing out."""
    return problem(
        DATABASE_UNAVAILABLE,
        "The database is unreachable or too slow at the moment; nothing was changed by "
        f"this request. Retry in {DATABASE_RETRY_AFTER_S} s.",
        instance=instance,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        retry_after_s=DATABASE_RETRY_AFTER_S,
    )


def log_outage(method: str, path: str, cause: str, error: BaseException) -> None:
    """One line per cause at most every few seconds (`retail.runtime.logs.RateLimit`)."""
    log.error(
        "database unavailable (%s) on %s %s: %s: %s",
        cause,
        method,
        path,
        type(error).__name__,
        error,
        extra={"cause": f"database: {cause}", "fields": {"cause": cause}},
    )


async def _database_error(request: Request, error: Exception) -> ProblemResponse:
    cause = database_outage(error)
    if cause is None:
        return await unexpected(request, error)
    log_outage(request.method, request.url.path, cause, error)
    return outage_problem(cause, instance=request.url.path)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (for `Allow` on a `405`)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in routes
            if not getattr(route, "path", "").startswith("/static")
        )
    ]


async def unexpected(request: Request, error: Exception) -> ProblemResponse:
    """A 500 problem for an error nothing else handled (logged with its traceback)."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(
        INTERNAL_ERROR,
        "The server failed to handle this request; nothing was changed by it unless a "
        "response said so. Retry, and report it if it persists.",
        instance=request.url.path,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RetailError, _retail_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for outage in (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError, TimeoutError):
        app.add_exception_handler(outage, _database_error)
    app.add_exception_handler(Exception, unexpected)
    _document_problem(app)


def _document_problem(app: FastAPI) -> None:
    """Put the `Problem` schema that `responses()` refers to into the OpenAPI components."""
    from retail.web.schemas import Problem

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        # Every answer carries X-Request-ID (retail.web.telemetry).
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {}).setdefault("X-Request-ID", REQUEST_ID_HEADER)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def responses(*statuses: int, refusals: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give; `refusals`: its 429
    and 503 are admission's refusals, which carry `Retry-After-Ms` too."""
    meaning = {
        400: "Malformed JSON or header.",
        401: "Missing or wrong admin token (`Authorization: Bearer …`).",
        403: "Admin endpoints are disabled: no `RETAIL_ADMIN_TOKEN` is set.",
        404: "No such resource.",
        408: "The request body did not arrive in time (`RETAIL_BODY_TIMEOUT_S`).",
        409: "Conflicts with the current state.",
        413: "Request body too large.",
        415: "The body is not JSON: send `Content-Type: application/json`.",
        422: "The request is well-formed but invalid; `errors` lists each field.",
        429: "The customer holds more than its fair share while others compete; retry "
        "after `Retry-After` seconds.",
        503: "Over capacity, shutting down, or the database is unavailable; retry after "
        "`Retry-After` seconds.",
    }
    examples = {
        400: ("malformed-json", "Malformed JSON", "The request body is not valid JSON: …"),
        401: ("not-authorized", "Admin token required", "Send `Authorization: Bearer …`."),
        403: ("admin-disabled", "Admin endpoints disabled", "No admin token is configured."),
        404: ("order-not-found", "Order not found", "No order with id 0b8f3c4e-…."),
        408: ("body-timeout", "Request body too slow", "The request body did not arrive …"),
        409: ("insufficient-stock", "Insufficient stock", "Not enough stock for LAMP-1 …"),
        413: ("body-too-large", "Request body too large", "The request body exceeds 65536 bytes."),
        415: ("unsupported-media-type", "Unsupported media type", "Send the order as JSON …"),
        422: ("validation-error", "Invalid request", "items: List should have at least 1 item"),
        429: ("over-fair-share", "Over fair share", "Order refused: this customer holds 6 of 8 …"),
        503: ("capacity-exceeded", "Over capacity", "Order refused: all 4 fulfilment slots …"),
    }
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        slug, title, detail = examples[status]
        entry: dict[str, Any] = {
            "description": meaning[status],
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": {
                        "type": f"/problems/{slug}",
                        "title": title,
                        "status": status,
                        "detail": detail,
                    },
                }
            },
        }
        if status in (409, 429, 503):
            entry["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
            if refusals and status != 409:
                entry["headers"]["Retry-After-Ms"] = RETRY_AFTER_MS_HEADER
        entries[status] = entry
    return entries


RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again (on `409` while a key is in flight).",
    "schema": {"type": "integer", "minimum": 1},
}
RETRY_AFTER_MS_HEADER = {
    "description": "On a refusal for capacity or fair share: the estimate `Retry-After` "
    "rounds to whole seconds, in milliseconds (room often comes back within a second).",
    "schema": {"type": "integer", "minimum": 1},
}
REQUEST_ID_HEADER = {
    "description": "This request's id: the one the client sent, or a new one. Logged with it.",
    "schema": {"type": "string"},
}
