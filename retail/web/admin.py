"""Run-time control of the capacity policy."""

from __future__ import annotations

from fastapi import APIRouter

from retail.web.deps import AdminDep, ServicesDep
from retail.web.presenters import capacity_snapshot
from retail.web.problems import responses
from retail.web.schemas import CapacityRead, CapacityUpdate

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.put(
    "/capacity",
    summary="Change the overload mode, capacity or limits now",
    description=(
        "Fields left out keep their value; `max_queue_wait_s: null` removes the wait bound. "
        "Accepted orders are neither lost nor reordered: a lower capacity lets in-flight "
        "orders finish, a higher one starts queued orders at once."
    ),
    responses=responses(400, 401, 403, 413, 422),
)
async def put_capacity(update: CapacityUpdate, services: ServicesDep) -> CapacityRead:
    changes = update.model_dump(exclude_none=True)  # a field left out or null keeps its value
    if "max_queue_wait_s" in update.model_fields_set:  # but null removes the wait bound
        changes["max_queue_wait_s"] = update.max_queue_wait_s
    services.admission.update(**changes)
    services.pool.notify()
    return capacity_snapshot(services)
