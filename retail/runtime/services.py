"""The services container: everything one process runs, built and stopped in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from retail.config import Settings
from retail.core.admission import Admission
from retail.core.pipeline import Pipeline
from retail.core.types import OrderStatus
from retail.runtime.bus import EventBus
from retail.runtime.clock import Clock
from retail.runtime.ingest import Ingest
from retail.runtime.logs import log_transition
from retail.runtime.metrics import Metrics
from retail.runtime.pool import WorkerPool
from retail.runtime.streams import StreamSlots
from retail.store.sql import products, queue
from retail.store.sql.engine import Database
from retail.store.sql.migrations import upgrade_to_head

log = logging.getLogger(__name__)


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
        pipeline = settings.pipeline()
        admission = Admission(settings.limits(), pipeline, on_decision=metrics.decided)
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
