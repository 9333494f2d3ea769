"""Many rows into one table, given as tuples: the batch writer's inserts.

`connection.execute(insert(table), [dict, ...])` builds, checks and converts one
parameter dictionary per row, which for a batch of orders is more work than the
database does to store them. `BulkInsert` sends the rows as multi-row
`INSERT … VALUES (…), (…)` statements, with each value converted by its column
type's own bind processor (the conversion SQLAlchemy applies). Compiling a statement
of many rows costs milliseconds, and batches come in every size: the statement for a
row count is made from the one-row statement, its row repeated (placeholders
renumbered where the paramstyle numbers them), once that is checked to give what
SQLAlchemy compiles for two and three rows; if not, each row count is compiled. A
value that repeats from one row to the next as the same object (the batch's
timestamp, say) is converted once.

One statement for many rows also matters to the SQLite writer thread: the driver
lets go of the GIL around every statement it steps, and each time the event loop
may keep it for a while; `executemany` would step once per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, bindparam, insert

Processor = Callable[[Any], Any]
_UNSET = object()
# Bound values per statement: SQLite before 3.32 allows no more than this.
MAX_PARAMETERS = 999


class BulkInsert:
    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.rows_per_statement = max(1, MAX_PARAMETERS // len(self.columns))
        self._processors: dict[tuple[str, str], list[Processor | None]] = {}
        self._statements: dict[tuple[str, str, int, tuple[str, ...]], str] = {}
        # Per dialect and RETURNING: how to write the statement for any row count, or
        # None where that was found not to match the compiler's.
        self._templates: dict[tuple[str, str, tuple[str, ...]], _Template | None] = {}

    def execute(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows`, each a sequence of values in `columns` order."""
        statements, _ = self._statements_for(connection.dialect, rows, ())
        for sql, parameters in statements:
            connection.exec_driver_sql(sql, parameters)

    def returning(
        self, connection: Connection, rows: Sequence[Sequence[Any]], *, key: str, value: str
    ) -> list[Any]:
        """Insert `rows` and give each row's `value` column (a generated id, say).

        The database may return the rows of `INSERT … RETURNING` in any order, so they
        are matched back by the `key` column, which must be unique among `rows`.
        """
        statements, values = self._statements_for(connection.dialect, rows, (key, value))
        found: dict[Any, Any] = {}
        for sql, parameters in statements:
            found.update(connection.exec_driver_sql(sql, parameters).all())
        keys = values[self.columns.index(key) :: len(self.columns)]  # as the database has them
        return [found[k] for k in keys]

    def _statements_for(
        self, dialect: Dialect, rows: Sequence[Sequence[Any]], returning: tuple[str, ...]
    ) -> tuple[list[tuple[str, tuple[Any, ...]]], list[Any]]:
        """The statements with their parameters, and all the converted values in a row."""
        processors = self._processors_for(dialect)
        width = len(self.columns)
        last: list[Any] = [_UNSET] * width
        done: list[Any] = [None] * width
        values: list[Any] = []
        for row in rows:
            for index in range(width):
                value = row[index]
                process = processors[index]
                if process is not None:
                    if value is not last[index]:
                        last[index] = value
                        done[index] = process(value)
                    value = done[index]
                values.append(value)
        step = self.rows_per_statement
        statements = [
            (
                self._statement(dialect, min(step, len(rows) - start), returning),
                tuple(values[start * width : (start + step) * width]),
            )
            for start in range(0, len(rows), step)
        ]
        return statements, values

    def _processors_for(self, dialect: Dialect) -> list[Processor | None]:
        key = (dialect.name, dialect.driver)
        processors = self._processors.get(key)
        if processors is None:
            processors = [
                self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in self.columns
            ]
            self._processors[key] = processors
        return processors

    def _statement(self, dialect: Dialect, count: int, returning: tuple[str, ...]) -> str:
        key = (dialect.name, dialect.driver, count, returning)
        sql = self._statements.get(key)
        if sql is None:
            template = self._template(dialect, returning)
            sql = template.render(count) if template else self._compile(dialect, count, returning)
            self._statements[key] = sql
        return sql

    def _template(self, dialect: Dialect, returning: tuple[str, ...]) -> _Template | None:
        key = (dialect.name, dialect.driver, returning)
        if key not in self._templates:
            template = _Template.parse(self._compile(dialect, 1, returning))
            if template is not None and any(
                template.render(n) != self._compile(dialect, n, returning) for n in (2, 3)
            ):
                template = None
            self._templates[key] = template
        return self._templates[key]

    def _compile(self, dialect: Dialect, count: int, returning: tuple[str, ...]) -> str:
        table = self.table
        rows = [
            {name: bindparam(f"{name}_{i}", type_=table.c[name].type) for name in self.columns}
            for i in range(count)
        ]
        statement = insert(table).values(rows)
        if returning:
            statement = statement.returning(*(table.c[name] for name in returning))
        compiled = statement.compile(dialect=dialect)
        # The values are bound row by row, each row in `columns` order.
        expected = [f"{name}_{i}" for i in range(count) for name in self.columns]
        if not compiled.positional or list(compiled.positiontup or ()) != expected:
            raise ValueError(
                f"{table.name}: give the columns in the table's order, and use a "
                f"positional paramstyle ({dialect.name} uses {dialect.paramstyle})"
            )
        return compiled.string


_NUMBERED = re.compile(r"\$(\d+)")  # asyncpg's placeholders: $1, $2, …


class _Template:
    """A one-row `INSERT … VALUES (row)…`, as text to repeat the row of."""

    def __init__(self, head: str, row: str, tail: str, width: int) -> None:
        self.head, self.row, self.tail, self.width = head, row, tail, width

    @classmethod
    def parse(cls, sql: str) -> _Template | None:
        start = sql.find(" VALUES (")
        if start < 0:
            return None
        start += len(" VALUES ")
        depth = 0
        for end in range(start, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                row = sql[start : end + 1]
                width = len(_NUMBERED.findall(row))
                return cls(sql[:start], row, sql[end + 1 :], width)
        return None

    def render(self, count: int) -> str:
        if not self.width:  # `?` or `%s`: every row alike
            rows = ", ".join([self.row] * count)
        else:
            rows = ", ".join(self._numbered(i * self.width) for i in range(count))
        return f"{self.head}{rows}{self.tail}"

    def _numbered(self, offset: int) -> str:
        """The row with its placeholders' numbers moved on by `offset`."""
        return _NUMBERED.sub(lambda match: f"${int(match.group(1)) + offset}", self.row)
