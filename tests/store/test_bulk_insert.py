"""The batch writer's multi-row inserts: a statement for any row count, without compiling
it, and the same text SQLAlchemy's compiler gives."""

from __future__ import annotations

import pytest
from sqlalchemy import Dialect
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg

from retail.store.sql import orders, queue
from retail.store.sql.bulk import BulkInsert

INSERTS = {
    "orders": orders._INSERT_ORDERS,
    "order_lines": orders._INSERT_LINES,
    "order_events": orders._INSERT_EVENTS,
    "step_events": queue._EVENTS,
}
DIALECTS = {"sqlite": sqlite.dialect(), "postgresql+asyncpg": asyncpg.dialect()}


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize("bulk", INSERTS.values(), ids=INSERTS.keys())
def test_every_row_count_is_the_compilers_statement(bulk: BulkInsert, dialect: Dialect) -> None:
    returning = ("id", "customer_id") if "customer_id" in bulk.columns else ()
    for count in (1, 2, 7, bulk.rows_per_statement):
        written = bulk._statement(dialect, count, returning)
        assert written == bulk._compile(dialect, count, returning)
        assert written.count("(") - written.count(")") == 0
    assert bulk._templates[dialect.name, dialect.driver, returning] is not None  # not compiled


def test_a_statement_the_template_cannot_write_is_compiled() -> None:
    bulk = BulkInsert(orders._INSERT_LINES.table, orders._INSERT_LINES.columns)
    dialect = DIALECTS["sqlite"]
    key = (dialect.name, dialect.driver, ())
    bulk._templates[key] = None  # as if the check against the compiler had failed
    assert bulk._statement(dialect, 3, ()) == bulk._compile(dialect, 3, ())
