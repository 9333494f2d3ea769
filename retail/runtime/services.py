"""The services container: everything one process runs, built and stopped in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from retail.config import Settings
from retail.core.admission import Admission, LevelObserver
from retail.core.fairness import FairShare
from retail.core.fleet import FleetView
from retail.core.pipeline import Pipeline
from retail.core.types import AutoLevel
from retail.runtime.bus import EventBus
from retail.runtime.clock import Clock
from retail.runtime.fleet import Fleet, FleetAdmission, FleetTiming
from retail.runtime.idempotency import Idempotency
from retail.runtime.ingest import Ingest
from retail.runtime.logs import log_level_switch, log_transition
from retail.runtime.metrics import Metrics
from retail.runtime.pool import WorkerPool
from retail.runtime.streams import StreamSlots
from retail.store.base import Store
from retail.store.sql.store import SqlStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the use cases and the routes need, built once per process."""

    settings: Settings
    clock: Clock
    store: Store
    pipeline: Pipeline
    admission: Admission
    bus: EventBus
    ingest: Ingest
    pool: WorkerPool
    idempotency: Idempotency
    streams: StreamSlots
    metrics: Metrics
    fleet: Fleet | None = None  # on a fleet (RETAIL_FLEET): admission plans with its load


def _level_observer(metrics: Metrics) -> LevelObserver:
    """An `auto` mode switch: logged, and shown in the `/metrics` gauge."""

    def switched(before: AutoLevel, after: AutoLevel, wait_s: float) -> None:
        log_level_switch(before, after, wait_s)
        metrics.level_switched(after)

    return switched


def sql_store(settings: Settings) -> SqlStore:
    return SqlStore(settings.database_url, pool_size=settings.db_pool_size)


@asynccontextmanager
async def running_services(
    settings: Settings,
    clock: Clock,
    *,
    metrics: Metrics | None = None,
    store: Store | None = None,
) -> AsyncIterator[Services]:
    """Start everything on `store` (the settings' database if not given); stop it all after."""
    metrics = metrics or Metrics()
    store = store or sql_store(settings)
    try:
        added = await store.prepare(
            migrate=settings.migrate_on_start,
            seed_catalogue=settings.seed_demo_catalogue,
            now=clock.now(),
        )
        if added:
            log.info("seeded the demo catalogue (%d products)", added)
        counts = await store.queued_by_priority()
        pipeline = settings.pipeline()
        fair_limits = settings.fair_limits()
        fairness = None
        if fair_limits is not None:
            fairness = FairShare(fair_limits, on_outcome=metrics.fair_checked)
            fairness.rebuild(await store.count_active_by_customer())
        admission: Admission
        fleet_admission = None
        if settings.fleet:
            admission = fleet_admission = FleetAdmission(
                FleetView(pipeline),
                settings.limits(),
                pipeline,
                on_decision=metrics.decided,
                fairness=fairness,
                on_level=_level_observer(metrics),
            )
        else:
            admission = Admission(
                settings.limits(),
                pipeline,
                on_decision=metrics.decided,
                fairness=fairness,
                on_level=_level_observer(metrics),
            )
        admission.restore(counts)
        # On a fleet admission plans with every process's load; this process's workers
        # keep their own slots (`--capacity`) and timetable.
        pool_admission = admission
        if fleet_admission is not None:
            pool_admission = Admission(settings.limits(), pipeline)
            pool_admission.restore(counts)
        bus = EventBus()
        bus.listen(log_transition)
        bus.listen(metrics.notice)
        idempotency = Idempotency(store)
        pool = WorkerPool(
            store=store,
            idempotency=idempotency,
            clock=clock,
            pipeline=pipeline,
            admission=pool_admission,
            bus=bus,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            shutdown_timeout_s=settings.shutdown_timeout_s,
            claiming=settings.workers_enabled,
            metrics=metrics,
        )
        fleet = None
        if fleet_admission is not None:
            fleet = Fleet(
                database_url=settings.database_url,
                clock=clock,
                admission=fleet_admission,
                timing=FleetTiming(
                    heartbeat_s=settings.heartbeat_s,
                    dead_after_s=settings.worker_dead_after_s,
                    reconcile_s=settings.fleet_reconcile_s,
                ),
                member=(pool.owner, settings.capacity if settings.workers_enabled else 0),
                on_work=pool.notify,
                metrics=metrics,
                own_backends=store.server_pids,
            )
        ingest = Ingest(
            store=store,
            clock=clock,
            bus=bus,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            on_committed=pool.work_arrived,
            on_placed=fleet.stored if fleet is not None else None,
        )
        if fleet is not None:
            # Claims, ends, cancels and expiries of this process count at their commit.
            store.follow_changes(fleet.committed)
            await fleet.start()  # the fleet's load is known before the first order
        await ingest.start()
        await pool.start()
        try:
            yield Services(
                settings=settings,
                clock=clock,
                store=store,
                pipeline=pipeline,
                admission=admission,
                bus=bus,
                ingest=ingest,
                pool=pool,
                idempotency=idempotency,
                streams=StreamSlots(settings.max_streams),
                metrics=metrics,
                fleet=fleet,
            )
        finally:
            bus.close()  # waiters answer and streams end now
            await ingest.stop()
            await pool.stop()
            if fleet is not None:
                await fleet.stop()
    finally:
        await store.close()
        metrics.process_exit()
