"""How the service's values look over HTTP: the response models routes return.

Every route renders through here, so no route imports another.
"""

from __future__ import annotations

from datetime import datetime

from retail.core.types import OrderStatus, ServiceLevel
from retail.runtime.services import Services
from retail.store.sql.models import Order
from retail.store.sql.orders import PlacedOrder
from retail.web.schemas import CapacityCounters, CapacityRead, OrderLineRead, OrderRead


def capacity_snapshot(services: Services) -> CapacityRead:
    admission = services.admission
    limits = admission.limits
    counters = admission.counters
    return CapacityRead(
        mode=limits.mode,
        capacity=limits.capacity,
        queue_limit=limits.queue_limit,
        max_queue_wait_s=limits.max_queue_wait_s,
        in_flight=services.pool.in_flight,
        queued=admission.queued,
        full_service_s=services.pipeline.mean_s(ServiceLevel.FULL),
        degraded_service_s=services.pipeline.mean_s(ServiceLevel.DEGRADED),
        counters=CapacityCounters(
            accepted=counters.accepted,
            admitted=counters.admitted,
            queued=counters.queued,
            degraded=counters.degraded,
            rejected=counters.rejected,
        ),
    )


def order_read(
    order: Order | PlacedOrder,
    *,
    queue_position: int | None = None,
    estimated_start_at: datetime | None = None,
    current_step: str | None = None,
) -> OrderRead:
    return OrderRead(
        id=order.id,
        customer_id=order.customer_id,
        status=OrderStatus(order.status),
        service_level=ServiceLevel(order.service_level),
        skipped_steps=list(order.skipped_steps),
        lines=[
            OrderLineRead(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.quantity * line.unit_price,
            )
            for line in order.lines
        ],
        total=order.total,
        currency=order.currency,
        created_at=order.created_at,
        updated_at=order.updated_at,
        started_at=order.started_at,
        finished_at=order.finished_at,
        current_step=current_step,
        failure_reason=order.failure_reason,
        queue_position=queue_position,
        estimated_start_at=estimated_start_at,
    )
