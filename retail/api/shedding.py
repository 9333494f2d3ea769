"""Shed `POST /orders` over capacity before the request reaches the framework.

A refusal should cost less than anything the service does for an order. The intake
route already decides before it reads the body, but by then the request has been
routed, its dependencies solved and the refusal raised through the exception
handlers. This middleware asks the admission policy first, as the very first thing
after the body-size check, and answers a shed order with the same `503` problem
(the same body, `Retry-After` and counters) without going further.

Requests with an `Idempotency-Key` pass through: a retry of an order that was
already stored must get its stored answer even when the service is full.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from retail.api.orders import intake
from retail.api.problems import retail_problem

INTAKE_PATH = "/orders"


class ShedOverCapacity:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Refusals are answered for this route: the telemetry labels them with it.
        self.route = next(
            route
            for route in intake.routes
            if getattr(route, "path", None) == INTAKE_PATH
            and "POST" in getattr(route, "methods", ())
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == INTAKE_PATH
            and not any(name == b"idempotency-key" for name, _ in scope["headers"])
        ):
            services = getattr(scope["app"].state, "services", None)
            refusal = services.admission.refusal() if services is not None else None
            if refusal is not None:
                scope["route"] = self.route  # as routing would have set it
                response = retail_problem(refusal, instance=INTAKE_PATH)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
