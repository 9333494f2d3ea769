"""The composition root: `create_app(settings)` builds everything in the lifespan."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from retail.config import Settings
from retail.runtime.clock import Clock, SystemClock
from retail.runtime.metrics import Metrics
from retail.runtime.services import running_services
from retail.web import admin, dashboard, health, history, intake, live, orders, problems
from retail.web import metrics as metric_routes
from retail.web import products as product_routes
from retail.web.limits import BodySizeLimit
from retail.web.outage import DatabaseOutage
from retail.web.protocol import ReadBody
from retail.web.security import SecurityHeaders
from retail.web.startup import StartOnFirstRequest
from retail.web.telemetry import RequestTelemetry, Telemetry

log = logging.getLogger(__name__)

# Under load the event loop always has work and holds the GIL; the SQLite writer thread
# lets go of it around every statement and then waits up to a whole switch interval to
# have it back. At CPython's 5 ms, a claim of a dozen statements took 60-140 ms under a
# flood of refusals (its orders waiting meanwhile, every request read); at 0.5 ms, 30-40.
GIL_SWITCH_INTERVAL_S = 0.0005

DESCRIPTION = """
A simulated retail order-processing backend.

Place an order with `POST /orders`: it is stored, answered with `202 Accepted`
and a `Location`, and then fulfilled in the background through simulated steps
(reserve, fraud_check, payment, pick, pack, ship). Follow it with
`GET /orders/{id}` and `GET /orders/{id}/events` (JSON, or a live stream of
Server-Sent Events with `Accept: text/event-stream`).

When more orders arrive than can be fulfilled at once (`GET /capacity`), the
overload mode decides: **queue** them, **reject** them with `503`, or
**degrade** them to a cheaper path. Errors are RFC 9457 problem documents.

Watch it live: the dashboard at [`/`](/) shows load, throughput, refusals and the
latest orders as they change; the WebSocket `/ws` streams the same data as JSON.
"""


def announce_stop(app: FastAPI) -> None:
    """A stop was asked for: waiters answer now and streams end (see `retail.web.server`)."""
    services = getattr(app.state, "services", None)
    if services is not None:
        services.bus.close()


class RetailApp(FastAPI):
    """The framework's app, with `POST /orders` answered before its own layers.

    `order_intake` (the fast path) takes every `POST /orders` as the request arrives: a
    refusal needs no routing, and none of the layers the framework puts around every
    request (its error and body-limit middlewares, each a coroutine and a wrapped
    `send`). It does their work itself, and hands what it does not answer to the whole
    stack.
    """

    order_intake: intake.OrderIntake | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.order_intake
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == intake.PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self  # as the framework sets it
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def refuse_at_door(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
    ) -> tuple[int, bytes, bytes] | ReadBody | None:
        """A `POST /orders` refused on its headers (`intake.refusal_at_door`), or on its
        body when asked for it, for `retail serve`'s HTTP protocol to answer without a
        request task; None: go on."""
        fast = self.order_intake
        if fast is None or target != intake.PATH_RAW or method != b"POST":
            return None
        services = getattr(self.state, "services", None)
        if services is None:
            return None
        return intake.refusal_at_door(
            services, fast.telemetry, headers, body, max_body_bytes=fast.max_body_bytes
        )

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole stack, the fast path aside: where the intake hands a request on."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, fast_path: bool = True
) -> RetailApp:
    """The app; `fast_path=False` leaves `POST /orders` to its route alone (for comparison)."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(settings, clock, metrics=metrics) as services:
            app.state.services = services
            # What is built by now lives as long as the app: keep it out of the garbage
            # collector's full passes, which otherwise stop the event loop for 50-100 ms.
            gc.freeze()
            switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(switch_interval, GIL_SWITCH_INTERVAL_S))
            try:
                yield
            finally:
                sys.setswitchinterval(switch_interval)
                gc.unfreeze()

    app = RetailApp(
        title="retail",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The service exports its own Prometheus metrics (`/metrics`); FastAPI's built-in
        # OpenTelemetry would otherwise look for a configured provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_tags=[
            {"name": "orders", "description": "Place, follow and cancel orders."},
            {"name": "products", "description": "The catalogue and its stock."},
            {"name": "capacity", "description": "Load, limits and the overload mode."},
            {"name": "admin", "description": "Run-time changes; `Authorization: Bearer` token."},
            {"name": "health", "description": "Liveness and readiness."},
        ],
    )
    app.state.settings = settings
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(StartOnFirstRequest)  # servers without the ASGI lifespan (daphne)
    app.add_middleware(DatabaseOutage)  # 503 + Retry-After in front of the router too
    telemetry = Telemetry(metrics, clock)
    app.add_middleware(RequestTelemetry, telemetry=telemetry)  # sees every answer
    app.add_middleware(SecurityHeaders)
    # POST /orders without the framework's generic path, nor the layers above: it records
    # the request, adds the security headers and applies the body limit itself.
    if fast_path:
        app.order_intake = intake.OrderIntake(
            app.framework,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            telemetry=telemetry,
        )
    app.include_router(intake.router)
    app.include_router(orders.router)
    app.include_router(product_routes.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(history.router)
    app.include_router(metric_routes.router)
    app.include_router(live.router)
    dashboard.install(app)
    _document_limits(app, settings)
    return app


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """OpenAPI states the limits this service enforces (RETAIL_MAX_ORDER_LINES, …), not the
    hard ceilings of the request model."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        models = schema.get("components", {}).get("schemas", {})
        if "OrderCreate" in models:
            models["OrderCreate"]["properties"]["items"]["maxItems"] = settings.max_order_lines
        if "OrderItemIn" in models:
            quantity = models["OrderItemIn"]["properties"]["quantity"]
            quantity["maximum"] = settings.max_line_quantity
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
