"""The enrichment jobs' result tables: `pipelines.<table>`, a row per taxon, keyed by
`taxon_key`, with `fetched_at` and the `next_check_at` that makes it due again.

A job's row type is a frozen dataclass whose fields are the table's columns in order,
`taxon_key` first (timestamps left out). Strings are made storable; dicts and lists are written
as jsonb, their strings made storable too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, fields
from datetime import timedelta
from typing import Any, ClassVar, Protocol, TypeVar

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json, execute_values

from observing_pipelines.text import storable_json, storable_row


class ResultRow(Protocol):
    """What a row type of a result table is: a dataclass with a `taxon_key`."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def taxon_key(self) -> int: ...


RowT = TypeVar("RowT", bound=ResultRow)


def load_results(
    conn: Connection, table: str, row_type: type[RowT], keys: Iterable[int]
) -> dict[int, RowT]:
    """Current rows of a result table, by taxon key (for telling changed from unchanged)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    names = [f.name for f in fields(row_type)]
    query = sql.SQL("SELECT {} FROM pipelines.{} WHERE taxon_key = ANY(%s)").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)
    )
    with conn.cursor() as cur:
        cur.execute(query, (wanted,))
        return {row[0]: row_type(*row) for row in cur.fetchall()}


def save_results(conn: Connection, table: str, rows: Sequence[tuple[ResultRow, timedelta]]) -> None:
    """Upsert result rows, each with the delay until it is checked again; `fetched_at` = now.
    Rows go in key order, so concurrent writers lock in the same order."""
    if not rows:
        return
    names = [f.name for f in fields(rows[0][0])]
    ordered = sorted(rows, key=lambda pair: pair[0].taxon_key)
    query = sql.SQL(
        "INSERT INTO pipelines.{table} ({columns}, fetched_at, next_check_at) VALUES %s "
        "ON CONFLICT (taxon_key) DO UPDATE SET {updates}, fetched_at = now(), "
        "next_check_at = EXCLUDED.next_check_at"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, names)),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names[1:]
        ),
    )
    with conn.cursor() as cur:
        execute_values(
            cur,
            query.as_string(cur),
            [(*_storable_values(astuple(row)), delay) for row, delay in ordered],
            template=f"({', '.join(['%s'] * len(names))}, now(), now() + %s)",
        )


def _storable_values(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return storable_row(
        Json(storable_json(value)) if isinstance(value, dict | list) else value for value in values
    )
