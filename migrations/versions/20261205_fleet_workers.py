"""the fleet: worker processes and their heartbeats; order changes notified (PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 19:50:00.000000

On PostgreSQL, statement triggers on `orders` send one notification per statement on
the channel `retail_fleet` (see `retail.store.sql.fleet`): orders that entered the
queue, and orders that started, moved to another worker, ended or left the queue. The
notification goes out when its transaction commits, and carries the transaction's id,
so a reader can tell whether a snapshot it took already counts it. Only while some
process of a fleet is in `workers` (API processes too, with no slots): a database
without a fleet pays no notice and no notice lock at commit. SQLite, one process, gets
the table only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A payload over PostgreSQL's 8000 bytes cannot be sent: ask the readers to re-read instead.
NOTIFY_FUNCTIONS = (
    """
CREATE OR REPLACE FUNCTION retail_fleet_send(body jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text := (body || jsonb_build_object(
        'x', pg_current_xact_id()::text,
        't', extract(epoch FROM clock_timestamp())))::text;
BEGIN
    IF length(payload) > 7900 THEN
        payload := jsonb_build_object('k', 'r')::text;
    END IF;
    PERFORM pg_notify('retail_fleet', payload);
END $$;
""",
    """
CREATE OR REPLACE FUNCTION retail_fleet_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counts jsonb;
    first bigint;
BEGIN
    -- No process of a fleet on this database: nobody to tell, no notice (and no lock).
    IF NOT EXISTS (SELECT 1 FROM workers) THEN RETURN NULL; END IF;
    SELECT jsonb_agg(jsonb_build_array(p, n)), min(s) INTO counts, first FROM (
        SELECT priority AS p, count(*) AS n, min(seq) AS s FROM inserted
        WHERE status = 'queued' GROUP BY priority
    ) AS q;
    IF counts IS NOT NULL THEN
        PERFORM retail_fleet_send(jsonb_build_object('k', 'i', 's', first, 'q', counts));
    END IF;
    RETURN NULL;
END $$;
""",
    """
CREATE OR REPLACE FUNCTION retail_fleet_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    started jsonb;
    moved jsonb;
    ended jsonb;
    left_queue jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM workers) THEN RETURN NULL; END IF;  -- no fleet
    SELECT
        jsonb_agg(jsonb_build_array(n.seq, n.priority, n.service_level, n.step_index,
                                    n.lease_owner))
            FILTER (WHERE o.status = 'queued' AND n.status = 'processing'),
        jsonb_agg(jsonb_build_array(n.seq, n.priority, n.service_level, n.step_index,
                                    n.lease_owner))
            FILTER (WHERE o.status = 'processing' AND n.status = 'processing'
                    AND o.lease_owner IS DISTINCT FROM n.lease_owner),
        jsonb_agg(jsonb_build_array(n.seq, n.customer_id))
            FILTER (WHERE o.status = 'processing' AND n.status <> 'processing'),
        jsonb_agg(jsonb_build_array(n.seq, n.priority, n.customer_id))
            FILTER (WHERE o.status = 'queued' AND n.status NOT IN ('queued', 'processing'))
    INTO started, moved, ended, left_queue
    FROM new_rows AS n JOIN old_rows AS o ON o.seq = n.seq;
    IF num_nonnulls(started, moved, ended, left_queue) > 0 THEN
        PERFORM retail_fleet_send(jsonb_strip_nulls(jsonb_build_object(
            'k', 'u', 's', started, 'm', moved, 'e', ended, 'l', left_queue)));
    END IF;
    RETURN NULL;
END $$;
""",
    """
CREATE TRIGGER retail_fleet_inserted AFTER INSERT ON orders
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION retail_fleet_inserted();
""",
    """
CREATE TRIGGER retail_fleet_updated AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION retail_fleet_updated();
""",
)

DROP_NOTIFY_FUNCTIONS = (
    "DROP TRIGGER IF EXISTS retail_fleet_updated ON orders;",
    "DROP TRIGGER IF EXISTS retail_fleet_inserted ON orders;",
    "DROP FUNCTION IF EXISTS retail_fleet_updated();",
    "DROP FUNCTION IF EXISTS retail_fleet_inserted();",
    "DROP FUNCTION IF EXISTS retail_fleet_send(jsonb);",
)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in NOTIFY_FUNCTIONS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DROP_NOTIFY_FUNCTIONS:
            op.execute(statement)
    op.drop_table("workers")
