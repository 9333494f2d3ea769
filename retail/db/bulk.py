"""Many rows into one table, given as tuples: the batch writer's inserts.

`connection.execute(insert(table), [dict, ...])` builds, checks and converts one
parameter dictionary per row, which for a batch of orders is more work than the
database does to store them. `BulkInsert` compiles its statements once per dialect
and hands the driver tuples, each value converted by its column type's own bind
processor (the same conversion SQLAlchemy applies). A value that repeats from one
row to the next as the same object (the batch's timestamp, say) is converted once.
"""

from __future__ import annotations

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
        self._compiled: dict[tuple[str, str], tuple[str, list[int], list[Processor | None]]] = {}
        self._returning: dict[tuple[str, str, int, str, str], str] = {}

    def execute(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows`, each a sequence of values in `columns` order (`executemany`)."""
        if not rows:
            return
        sql, order, processors = self._compile(connection.dialect)
        connection.exec_driver_sql(sql, self._convert(rows, order, processors))

    def returning(
        self, connection: Connection, rows: Sequence[Sequence[Any]], *, key: str, value: str
    ) -> list[Any]:
        """Insert `rows` and give each row's `value` column (a generated id, say).

        Rows go in multi-row `INSERT … VALUES … RETURNING` statements; the database may
        return them in any order, so they are matched back by the `key` column, which
        must be unique among `rows`.
        """
        dialect = connection.dialect
        _, order, processors = self._compile(dialect)
        converted = self._convert(rows, order, processors)
        key_at = order.index(self.columns.index(key))
        found: dict[Any, Any] = {}
        per_statement = max(1, MAX_PARAMETERS // len(self.columns))
        for start in range(0, len(converted), per_statement):
            chunk = converted[start : start + per_statement]
            sql = self._compile_returning(dialect, len(chunk), key, value)
            parameters = tuple(v for row in chunk for v in row)
            found.update(connection.exec_driver_sql(sql, parameters).all())
        return [found[row[key_at]] for row in converted]

    @staticmethod
    def _convert(
        rows: Sequence[Sequence[Any]], order: list[int], processors: list[Processor | None]
    ) -> list[tuple[Any, ...]]:
        converted = []
        last: list[Any] = [_UNSET] * len(order)
        done: list[Any] = [None] * len(order)
        for row in rows:
            values = []
            for position, index in enumerate(order):
                value = row[index]
                process = processors[position]
                if process is not None:
                    if value is not last[position]:
                        last[position] = value
                        done[position] = process(value)
                    value = done[position]
                values.append(value)
            converted.append(tuple(values))
        return converted

    def _compile_returning(self, dialect: Dialect, count: int, key: str, value: str) -> str:
        cache_key = (dialect.name, dialect.driver, count, key, value)
        sql = self._returning.get(cache_key)
        if sql is None:
            table = self.table
            statement = (
                insert(table)
                .values(
                    [
                        {
                            name: bindparam(f"{name}_{i}", type_=table.c[name].type)
                            for name in self.columns
                        }
                        for i in range(count)
                    ]
                )
                .returning(table.c[key], table.c[value])
                .compile(dialect=dialect)
            )
            expected = [f"{name}_{i}" for i in range(count) for name in self._positional(dialect)]
            if list(statement.positiontup or ()) != expected:
                raise NotImplementedError(f"{dialect.name}: unexpected parameter order")
            sql = statement.string
            self._returning[cache_key] = sql
        return sql

    def _positional(self, dialect: Dialect) -> list[str]:
        _, order, _ = self._compile(dialect)
        return [self.columns[index] for index in order]

    def _compile(self, dialect: Dialect) -> tuple[str, list[int], list[Processor | None]]:
        key = (dialect.name, dialect.driver)
        compiled = self._compiled.get(key)
        if compiled is None:
            statement = insert(self.table).compile(dialect=dialect, column_keys=list(self.columns))
            if not statement.positional or statement.positiontup is None:
                raise NotImplementedError(f"{dialect.name}: only positional paramstyles")
            names = list(statement.positiontup)
            order = [self.columns.index(name) for name in names]
            processors: list[Processor | None] = [
                self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ]
            compiled = (statement.string, order, processors)
            self._compiled[key] = compiled
        return compiled
