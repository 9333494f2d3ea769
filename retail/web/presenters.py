"""How the service's values look over HTTP: the response models routes return.

Every route renders through here, so no route imports another. The order's JSON is
`retail.core.orders.order_document` (the `202` of `POST /orders` is written straight
from it); `OrderRead` documents the same shape in OpenAPI.
"""

from __future__ import annotations

from dataclasses import asdict

from retail.core.admission import Counters
from retail.core.events import OrderEvent
from retail.core.orders import OrderView, order_document
from retail.core.types import Priority, ServiceLevel
from retail.runtime.orders import OrderState
from retail.runtime.services import Services
from retail.store.base import Product
from retail.web.schemas import (
    CapacityCounters,
    CapacityRead,
    FleetRead,
    FleetWorkerRead,
    OrderEventRead,
    OrderRead,
    PriorityCapacity,
    ProductRead,
)

# Seconds shown to people: microsecond precision, no float noise (2.0000000000000004).
SECONDS_DECIMALS = 6


def capacity_snapshot(services: Services) -> CapacityRead:
    admission = services.admission
    return CapacityRead(
        **asdict(admission.limits),
        level=admission.level_at(services.clock.seconds()),
        in_flight=admission.dispatcher.in_flight,
        queued=admission.queued,
        full_service_s=round(services.pipeline.mean_s(ServiceLevel.FULL), SECONDS_DECIMALS),
        degraded_service_s=round(services.pipeline.mean_s(ServiceLevel.DEGRADED), SECONDS_DECIMALS),
        counters=_counters(admission.counters),
        by_priority={
            priority: PriorityCapacity(
                queued=admission.waiting(priority),
                counters=_counters(admission.by_priority[priority]),
            )
            for priority in Priority
        },
        fleet=fleet_read(services),
    )


def fleet_read(services: Services) -> FleetRead | None:
    if services.fleet is None:
        return None
    status = services.fleet.status()
    now = services.clock.now()
    return FleetRead(
        capacity=status.capacity,
        in_flight=status.in_flight,
        queued=status.queued,
        live_workers=[
            FleetWorkerRead(
                id=worker.id,
                slots=worker.slots,
                started_at=worker.started_at,
                last_heartbeat_at=worker.heartbeat_at,
                heartbeat_age_s=round(
                    max(0.0, (now - worker.heartbeat_at).total_seconds()), SECONDS_DECIMALS
                ),
            )
            for worker in status.workers
        ],
        read_at=status.read_at,
        reconcile_interval_s=status.reconcile_s,
        dead_after_s=status.dead_after_s,
        notice_delay_max_s=round(status.notice_delay_max_s, SECONDS_DECIMALS),
        handoff_s=round(status.handoff_s, SECONDS_DECIMALS),
    )


def _counters(counters: Counters) -> CapacityCounters:
    return CapacityCounters.model_validate(counters, from_attributes=True)


def order_read(order: OrderView | OrderState) -> OrderRead:
    if isinstance(order, OrderState):
        document = order_document(
            order.order,
            queue_position=order.queue_position,
            estimated_start_at=order.estimated_start_at,
            current_step=order.current_step,
        )
    else:
        document = order_document(order)
    return OrderRead.model_validate(document)


def event_read(event: OrderEvent) -> OrderEventRead:
    return OrderEventRead.model_validate(event.document())


def product_read(product: Product) -> ProductRead:
    return ProductRead.model_validate(product, from_attributes=True)
