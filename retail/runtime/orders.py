"""Following and cancelling orders: one use case each (placing is `retail.runtime.placing`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from retail.core.capacity import retry_after_s
from retail.core.events import OrderEvent
from retail.core.orders import OrderView
from retail.core.pipeline import STEPS
from retail.core.types import OrderStatus
from retail.runtime.services import Services


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order and where it stands: its place and expected start while it waits, the step
    it is in while it is fulfilled, and when a poller should ask again (None once ended)."""

    order: OrderView
    queue_position: int | None = None
    estimated_start_at: datetime | None = None
    current_step: str | None = None
    retry_after_s: int | None = None


async def read_order(services: Services, order_id: uuid.UUID) -> OrderState:
    """`OrderNotFound` if there is no such order."""
    order = await services.store.get_order(order_id)
    if order.status.is_terminal:
        return OrderState(order)
    if order.status is OrderStatus.QUEUED:
        position = await services.store.queue_position(order)
        now = services.clock.now()
        wait_s = services.admission.estimated_start_s(
            now.timestamp(), position, order.service_level
        )
        return OrderState(
            order,
            queue_position=position,
            estimated_start_at=now + timedelta(seconds=wait_s),
            retry_after_s=retry_after_s(wait_s),
        )
    steps = [step.name for step in STEPS if step.name not in order.skipped_steps]
    current = services.pool.current_step(order.id)
    if current is None and order.step_index < len(steps):
        current = steps[order.step_index]  # fulfilled by another process
    steps_left = len(steps) - order.step_index
    left_s = services.pipeline.mean_s(order.service_level) * steps_left / max(1, len(steps))
    return OrderState(order, current_step=current, retry_after_s=retry_after_s(left_s))


async def cancel_order(services: Services, order_id: uuid.UUID) -> OrderView:
    """Cancel a waiting order, its stock back once; `InvalidTransition` once it has started."""
    event = await services.store.cancel_order(order_id, now=services.clock.now())
    order = await services.store.get_order(order_id)
    services.admission.left_queue(order.priority)
    services.bus.publish(event)
    order = await services.store.get_order(order_id)
    services.admission.order_ended(order.customer_id)
    return order


async def order_events(
    services: Services, order_id: uuid.UUID, *, after_id: int = 0
) -> list[OrderEvent]:
    return await services.store.list_events(order_id, after_id=after_id)
