"""priorities and start deadlines; the expired status

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'queued', 'processing', 'fulfilled', 'failed', 'cancelled'"


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.SmallInteger(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("start_deadline", sa.DateTime(), nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_orders_status_known"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_orders_status_known"), f"status IN ({STATUSES}, 'expired')"
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_orders_priority_known"), "priority IN (0, 1, 2)"
        )
        batch_op.create_index(
            "ix_orders_status_priority_seq", ["status", "priority", "seq"], unique=False
        )
        batch_op.create_index("ix_orders_priority_seq", ["priority", "seq"], unique=False)


def downgrade() -> None:
    # Expired orders become cancelled ones: both ended before they started, stock back.
    op.execute("UPDATE orders SET status = 'cancelled' WHERE status = 'expired'")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_priority_seq")
        batch_op.drop_index("ix_orders_status_priority_seq")
        batch_op.drop_constraint(batch_op.f("ck_orders_priority_known"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_orders_status_known"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_orders_status_known"), f"status IN ({STATUSES})"
        )
        batch_op.drop_column("start_deadline")
        batch_op.drop_column("priority")
