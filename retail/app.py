"""The composition root: `create_app(settings)` builds everything in the lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from retail import capacity
from retail.admission import Admission
from retail.bus import EventBus
from retail.clock import Clock, SystemClock
from retail.config import OrderStatus, Settings
from retail.db import products, queue
from retail.db.engine import Database
from retail.db.migrations import upgrade_to_head
from retail.fulfilment.pipeline import Pipeline
from retail.fulfilment.pool import WorkerPool
from retail.ingest import Ingest
from retail.logs import log_transition
from retail.metrics import Metrics
from retail.streams import StreamSlots

log = logging.getLogger(__name__)

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


@dataclass
class Services:
    """What the routes need, built once per app by the lifespan."""

    settings: Settings
    clock: Clock
    db: Database
    pipeline: Pipeline
    admission: Admission
    bus: EventBus
    ingest: Ingest
    pool: WorkerPool
    inflight_keys: dict[str, str] = field(default_factory=dict)
    streams: StreamSlots = field(default_factory=StreamSlots)
    metrics: Metrics = field(default_factory=Metrics)


def limits_from(settings: Settings) -> capacity.Limits:
    return capacity.Limits(
        mode=settings.overload_mode,
        capacity=settings.capacity,
        queue_limit=settings.queue_limit,
        max_queue_wait_s=settings.max_queue_wait_s,
    )


@asynccontextmanager
async def running_services(
    settings: Settings, clock: Clock, *, metrics: Metrics | None = None
) -> AsyncIterator[Services]:
    metrics = metrics or Metrics()
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    try:
        if settings.migrate_on_start:
            await upgrade_to_head(db.writer)
        async with db.write() as session:
            if settings.seed_demo_catalogue:
                added = await products.seed_catalogue(session=session, now=clock.now())
                if added:
                    log.info("seeded the demo catalogue (%d products)", added)
            counts = await queue.count_by_status(session=session)
        db.pin_file()
        pipeline = Pipeline.from_settings(settings)
        admission = Admission(limits_from(settings), pipeline, metrics=metrics)
        admission.queued = counts.get(OrderStatus.QUEUED, 0)
        bus = EventBus()
        bus.listen(log_transition)
        bus.listen(metrics.notice)
        pool = WorkerPool(
            db=db,
            clock=clock,
            pipeline=pipeline,
            admission=admission,
            bus=bus,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            shutdown_timeout_s=settings.shutdown_timeout_s,
            claiming=settings.workers_enabled,
            metrics=metrics,
        )
        ingest = Ingest(
            db=db,
            clock=clock,
            bus=bus,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            on_committed=lambda placed: pool.notify(),
        )
        await ingest.start()
        await pool.start()
        try:
            yield Services(
                settings,
                clock,
                db,
                pipeline,
                admission,
                bus,
                ingest,
                pool,
                streams=StreamSlots(settings.max_streams),
                metrics=metrics,
            )
        finally:
            await ingest.stop()
            await pool.stop()
    finally:
        await db.dispose()
        metrics.process_exit()


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
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
            try:
                yield
            finally:
                gc.unfreeze()

    from retail.api import admin, dashboard, health, intake, live, orders, problems
    from retail.api import metrics as metric_routes
    from retail.api import products as product_routes
    from retail.api.limits import BodySizeLimit
    from retail.api.startup import StartOnFirstRequest
    from retail.api.telemetry import RequestTelemetry

    app = FastAPI(
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
    # POST /orders without the framework's generic path (it applies the body limit itself).
    app.add_middleware(intake.OrderIntake, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(StartOnFirstRequest)  # servers without the ASGI lifespan (daphne)
    app.add_middleware(RequestTelemetry, metrics=metrics)  # outermost: sees every answer
    app.include_router(intake.router)
    app.include_router(orders.router)
    app.include_router(product_routes.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(metric_routes.router)
    app.include_router(live.router)
    dashboard.install(app)
    return app
