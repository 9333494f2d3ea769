"""Request and response models: what clients send and what they get back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from retail.core.types import AutoLevel, OrderStatus, OverloadMode, Priority, ServiceLevel

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Free text from clients: no control characters (C0, DEL, C1; PostgreSQL refuses NUL
# and they forge log lines) and no leading or trailing white space.
TEXT_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
HARD_MAX_QUANTITY = 1_000_000
HARD_MAX_LINES = 1000
MAX_START_WITHIN_S = 31_536_000  # a year

Sku = Annotated[
    str,
    Field(pattern=SKU_PATTERN, description="Stock-keeping unit: letters, digits, `.`, `_`, `-`."),
]


class StrictModel(BaseModel):
    """Client input: exact types, no unknown fields (prices never come from clients)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class OrderItemIn(StrictModel):
    sku: Sku = Field(examples=["MUG-1"])
    quantity: int = Field(gt=0, le=HARD_MAX_QUANTITY, examples=[2])


class OrderCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"customer_id": "alice", "items": [{"sku": "MUG-1", "quantity": 2}]},
                {
                    "customer_id": "bob",
                    "items": [{"sku": "TEE-M", "quantity": 1}],
                    "priority": "critical",
                    "start_within_s": 30,
                },
            ]
        }
    )

    customer_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=TEXT_PATTERN,
        description="Who places the order (free text: no control characters, no leading or "
        "trailing white space).",
    )
    items: list[OrderItemIn] = Field(
        min_length=1,
        max_length=HARD_MAX_LINES,
        description="One line per SKU. The service limits the number of lines (see /capacity).",
    )
    priority: Priority = Field(
        Priority.STANDARD,
        strict=False,
        description="How much the order matters when there is not room for all. Waiting "
        "orders start critical first, then standard, then sheddable (first come first "
        "served within each). `RETAIL_CRITICAL_RESERVE` holds room back for critical "
        "orders; a sheddable order is taken only if it can start within "
        "`RETAIL_SHEDDABLE_MAX_WAIT_S`; the degraded path is never given to a critical order.",
    )
    start_within_s: float | None = Field(
        None,
        gt=0,
        le=MAX_START_WITHIN_S,
        allow_inf_nan=False,
        description="Worth fulfilling only if fulfilment starts within this many seconds of "
        "acceptance: refused up front (`503`, `Retry-After`) when the estimated start is "
        "later; a waiting order whose time runs out ends `expired`, its stock back.",
    )


class OrderLineRead(BaseModel):
    sku: str
    quantity: int
    unit_price: int = Field(description="Catalogue price per unit when ordered, minor units.")
    line_total: int


class OrderRead(BaseModel):
    id: uuid.UUID
    customer_id: str
    status: OrderStatus
    priority: Priority = Field(description="critical, standard or sheddable.")
    service_level: ServiceLevel
    skipped_steps: list[str] = Field(
        description="Optional fulfilment steps left out on the degraded path."
    )
    lines: list[OrderLineRead]
    total: int = Field(description="Sum of the lines, in minor units of `currency`.")
    currency: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_step: str | None = Field(None, description="The step in progress while processing.")
    failure_reason: str | None = None
    queue_position: int | None = Field(
        None, description="While queued: 1 means next to start when a slot frees."
    )
    estimated_start_at: datetime | None = Field(
        None, description="While queued: when fulfilment is expected to start."
    )
    start_deadline: datetime | None = Field(
        None,
        description="With `start_within_s`: not started by then, the order ends `expired`.",
    )


class OrderPage(BaseModel):
    items: list[OrderRead]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next (older) page; null on the last page."
    )


class OrderEventRead(BaseModel):
    id: int
    kind: str = Field(
        description="created, started, resumed, step_started, step_completed, fulfilled, "
        "failed, cancelled, expired, lease_released"
    )
    status: OrderStatus
    step: str | None = None
    at: datetime
    detail: dict[str, Any] | None = None


class ProductRead(BaseModel):
    sku: str
    name: str
    unit_price: int = Field(description="Minor units (cents).")
    currency: str
    stock: int = Field(description="Units available to order now.")


class ProductUpsert(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Coffee mug", "unit_price": 1250, "stock": 40}]}
    )

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=TEXT_PATTERN,
        description="Free text: no control characters, no leading or trailing white space.",
    )
    unit_price: int = Field(ge=0, le=10**12, description="Minor units (cents).")
    stock: int = Field(ge=0, le=2**31 - 1)
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")


class CapacityCounters(BaseModel):
    accepted: int = Field(description="Orders accepted since start, any path.")
    admitted: int = Field(description="Accepted with a slot free.")
    queued: int = Field(description="Accepted to wait in the queue.")
    degraded: int = Field(description="Accepted on the degraded path.")
    rejected: int = Field(description="Refused with 503.")


class PriorityCapacity(BaseModel):
    queued: int = Field(description="Orders of this priority waiting for a slot.")
    counters: CapacityCounters


class FleetWorkerRead(BaseModel):
    id: str = Field(description="The worker process (the lease owner of its orders).")
    slots: int = Field(description="Orders it fulfils at once (its `--capacity`).")
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float = Field(description="Seconds since its last heartbeat.")


class FleetRead(BaseModel):
    """Every process on the database, as this process sees it (`RETAIL_FLEET=true`)."""

    capacity: int = Field(description="The live workers' slots, all together.")
    in_flight: int = Field(description="Orders in fulfilment on any worker.")
    queued: int = Field(description="Orders of the whole fleet waiting for a slot.")
    live_workers: list[FleetWorkerRead]
    read_at: datetime | None = Field(description="When the fleet was last read whole.")
    reconcile_interval_s: float = Field(description="How often it is read whole.")
    dead_after_s: float = Field(description="A worker silent this long leaves the fleet.")
    notice_delay_max_s: float = Field(
        description="Longest delay from a change's commit to this view since the last read."
    )
    handoff_s: float = Field(
        0.0,
        description="From a slot freeing while orders wait until this view sees the next "
        "order start in it (a moving average): queue estimates include it.",
    )


class CapacityRead(BaseModel):
    mode: OverloadMode
    capacity: int
    queue_limit: int
    max_queue_wait_s: float | None
    critical_reserve: int = Field(
        description="Room only critical orders take: slots (reject mode) or queue places."
    )
    sheddable_max_wait_s: float = Field(
        description="A sheddable order is taken only if it can start within this."
    )
    target_wait_s: float = Field(
        description="`auto` mode: the longest predicted wait it accepts an order with."
    )
    level: AutoLevel = Field(
        description="What `auto` mode does now with an order that cannot start at once: "
        "`queue`, `degrade` or `refuse` (`queue` in the other modes)."
    )
    in_flight: int
    queued: int
    full_service_s: float = Field(description="Expected fulfilment time of a full order.")
    degraded_service_s: float = Field(description="Expected fulfilment time of a degraded order.")
    counters: CapacityCounters
    by_priority: dict[Priority, PriorityCapacity] = Field(
        description="Waiting orders and decisions per priority (`counters` is their sum; a "
        "refusal before the body is read counts as standard)."
    )
    fleet: FleetRead | None = Field(
        None,
        description="On a fleet: the live workers and the fleet's load that `capacity`, "
        "`in_flight` and `queued` count (absent when this process counts only itself).",
    )


class CapacityUpdate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"mode": "reject"}, {"capacity": 8, "queue_limit": 50}]}
    )

    mode: OverloadMode | None = Field(None, strict=False, examples=["reject"])
    capacity: int | None = Field(None, ge=1, le=10_000)
    queue_limit: int | None = Field(None, ge=0, le=10_000_000)
    max_queue_wait_s: float | None = Field(
        None, gt=0, description="Seconds; send null to remove the bound, omit to keep it."
    )
    critical_reserve: int | None = Field(None, ge=0, le=10_000_000)
    sheddable_max_wait_s: float | None = Field(None, ge=0, le=MAX_START_WITHIN_S)
    target_wait_s: float | None = Field(None, gt=0, le=MAX_START_WITHIN_S)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
