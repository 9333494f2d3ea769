"""SQLAlchemy models: the orders table is both the record and the work queue."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from uuid_utils.compat import uuid7

from retail.core.types import OrderStatus, Priority, ServiceLevel

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; naive UTC in the column, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


def _values(enum_type: type[OrderStatus] | type[ServiceLevel]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum_type)


PRIORITY_RANKS = ", ".join(str(priority.rank) for priority in Priority)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("unit_price >= 0", name="price_not_negative"),
    )

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[int] = mapped_column(BigInteger)  # minor units (cents)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    stock: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(f"status IN ({_values(OrderStatus)})", name="status_known"),
        CheckConstraint(f"service_level IN ({_values(ServiceLevel)})", name="service_level_known"),
        CheckConstraint(f"priority IN ({PRIORITY_RANKS})", name="priority_known"),
        # The status filter: newest first.
        Index("ix_orders_status_seq", "status", "seq"),
        # The work queue: queued orders in start order (priority, then oldest first).
        Index("ix_orders_status_priority_seq", "status", "priority", "seq"),
        Index("ix_orders_customer_id_seq", "customer_id", "seq"),
        Index("ix_orders_priority_seq", "priority", "seq"),
        # Waiting orders past their start deadline (`expire_due`): those with one only.
        Index(
            "ix_orders_status_start_deadline",
            "status",
            "start_deadline",
            sqlite_where=text("start_deadline IS NOT NULL"),
            postgresql_where=text("start_deadline IS NOT NULL"),
        ),
    )

    # `seq` orders everything (FIFO fulfilment, newest-first listing); `id` is public.
    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid7)
    customer_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.QUEUED.value)
    service_level: Mapped[str] = mapped_column(String(16), default=ServiceLevel.FULL.value)
    skipped_steps: Mapped[list[str]] = mapped_column(default=list)
    total: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    line_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Steps completed so far: a resumed order continues from here.
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(200))
    # The lease: who works on it, until when, and a fencing token that grows per claim.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    # `Priority.rank`: 0 critical, 1 standard, 2 sheddable (queued orders start in this order).
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=Priority.STANDARD.rank, server_default=str(Priority.STANDARD.rank)
    )
    # A queued order not started by then ends `expired` (None: it waits as long as it takes).
    start_deadline: Mapped[datetime | None]

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", lazy="raise", order_by="OrderLine.id"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(BigInteger)

    order: Mapped[Order] = relationship(back_populates="lines", lazy="raise")


class OrderEvent(Base):
    """One row per state change or step boundary: an order's whole history."""

    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order_id_id", "order_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime]
    detail: Mapped[dict[str, Any] | None]


class IdempotencyRecord(Base):
    """The stored first response to a `POST /orders` that carried an Idempotency-Key."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


def table(model: type[Base]) -> Table:
    """The Core table of a model, for multi-row statements that skip the ORM."""
    assert isinstance(model.__table__, Table)
    return model.__table__


class Worker(Base):
    """A process that fulfils orders, as it announced itself; live while it beats."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # its lease owner name
    slots: Mapped[int] = mapped_column(Integer)  # orders it fulfils at once
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]  # the database's clock (UTC), so machines need not agree
