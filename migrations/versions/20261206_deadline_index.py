"""an index for the start deadlines of waiting orders

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 04:00:00.000000

Finding the waiting orders whose start deadline has passed read every waiting order;
with a deep queue the read was spaced out to keep its cost down, and an order could
end `expired` seconds after its deadline. Only orders with a deadline are in this
index, so orders without one cost nothing more to store.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_DEADLINE = sa.text("start_deadline IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_orders_status_start_deadline",
        "orders",
        ["status", "start_deadline"],
        sqlite_where=WITH_DEADLINE,
        postgresql_where=WITH_DEADLINE,
    )


def downgrade() -> None:
    op.drop_index("ix_orders_status_start_deadline", table_name="orders")
