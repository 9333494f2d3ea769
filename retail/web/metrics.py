"""`GET /metrics`: the Prometheus scrape endpoint."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from retail.core.types import OrderStatus
from retail.runtime.services import Services
from retail.web.bounded import within
from retail.web.deps import ServicesDep
from retail.web.presenters import fleet_read

router = APIRouter()
log = logging.getLogger(__name__)

SCRAPE_DB_TIMEOUT_S = 1.0


async def queue_state(services: Services) -> tuple[int, float]:
    """(orders queued, seconds the oldest has waited): every process's orders."""
    counts = await services.store.count_by_status()
    oldest = await services.store.oldest_queued_at()
    age_s = 0.0 if oldest is None else (services.clock.now() - oldest).total_seconds()
    return counts.get(OrderStatus.QUEUED, 0), age_s


@router.get(
    "/metrics",
    tags=["health"],
    summary="Metrics in the Prometheus text format",
    description=(
        "Admission decisions, orders in flight and queued, queue wait, fulfilment and step "
        "durations, outcomes, and HTTP requests. Sends OpenMetrics when the `Accept` header "
        "asks for `application/openmetrics-text`."
    ),
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "The exposition."}},
)
async def metrics(services: ServicesDep, request: Request) -> Response:
    queued: int = services.admission.queued  # this process's view, if the database is slow
    oldest_age_s: float | None = None
    try:
        queued, oldest_age_s = await within(
            request.app, "queue-state", lambda: queue_state(services), SCRAPE_DB_TIMEOUT_S
        )
    except Exception as error:
        log.warning("metrics: could not read the queue: %s", error)
    services.metrics.refresh(queued=queued, oldest_age_s=oldest_age_s)
    fleet = fleet_read(services)
    if fleet is not None:
        services.metrics.refresh_fleet(
            capacity=fleet.capacity,
            in_flight=fleet.in_flight,
            queued=fleet.queued,
            workers=[(w.id, w.slots, w.heartbeat_age_s) for w in fleet.live_workers],
        )
    services.admission.level_at(services.clock.seconds())  # the level gauge, current
    fairness = services.admission.fairness
    if fairness is not None:
        services.metrics.refresh_fairness(
            fairness.competing(services.clock.seconds()),
            fairness.top_refused(),
            fairness.limits.top_n,
        )
    body, content_type = services.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
