"""The app's taxa cache, `ingester.taxa`, and our log of what changed in it upstream.

If observ-ing/core changes a column of `taxa`, this module changes and nothing else. Every
statement is set-based (arrays in, one statement per batch), and names are schema-qualified:
our connections do not rely on the app's `search_path`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json, execute_values

from observing_pipelines.text import storable, storable_json, storable_or_none, storable_row


@dataclass(frozen=True)
class TaxonRow:
    """One row of `ingester.taxa`, in column order (without the columns we never write)."""

    taxon_key: int
    scientific_name: str
    authorship: str | None
    rank: str
    status: str
    accepted_taxon_key: int | None
    parent_key: int | None
    kingdom: str | None = None
    kingdom_key: int | None = None
    phylum: str | None = None
    phylum_key: int | None = None
    class_: str | None = None
    class_key: int | None = None
    order: str | None = None
    order_key: int | None = None
    family: str | None = None
    family_key: int | None = None
    genus: str | None = None
    genus_key: int | None = None
    species: str | None = None
    species_key: int | None = None


_TAXA_COLUMNS = [f.name.rstrip("_") for f in fields(TaxonRow)]
TAXA_WRITTEN_COLUMNS = (*(c for c in _TAXA_COLUMNS if c != "taxon_key"), "fetched_at", "source")
"""The columns of `taxa` our writes set (upsert, re-check, gone), all but `vernacular_name`."""
_TAXA_COLUMN_SQL = ", ".join(f'"{c}"' for c in _TAXA_COLUMNS)
_TAXA_UPDATE_SQL = ", ".join(
    f'"{c}" = COALESCE(EXCLUDED."{c}", taxa."{c}")'
    if c == "authorship"
    else f'"{c}" = EXCLUDED."{c}"'
    for c in _TAXA_COLUMNS
    if c != "taxon_key"
)


def taxa_by_lower_name(conn: Connection, lower_names: Iterable[str]) -> list[TaxonRow]:
    """Cached taxa whose lower-cased name is one of these (uses `taxa_lower_name_idx`)."""
    names = sorted(set(lower_names))
    if not names:
        return []
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_TAXA_COLUMN_SQL} FROM ingester.taxa WHERE lower(scientific_name) = ANY(%s)",
            (names,),
        )
        return [TaxonRow(*row) for row in cur.fetchall()]


def taxa_by_key(conn: Connection, keys: Iterable[int]) -> dict[int, TaxonRow]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_TAXA_COLUMN_SQL} FROM ingester.taxa WHERE taxon_key = ANY(%s)", (wanted,)
        )
        return {row[0]: TaxonRow(*row) for row in cur.fetchall()}


def upsert_taxa(conn: Connection, rows: Iterable[TaxonRow]) -> int:
    """Insert or refresh cached taxa by key; `fetched_at` is bumped, vernacular/extinct kept.

    Rows go in key order (the last version of a key wins), so concurrent writers lock in the
    same order.
    """
    by_key = {row.taxon_key: row for row in rows}
    if not by_key:
        return 0
    with conn.cursor() as cur:
        execute_values(
            cur,
            f"""
            INSERT INTO ingester.taxa AS taxa ({_TAXA_COLUMN_SQL}, fetched_at, source)
            VALUES %s
            ON CONFLICT (taxon_key) DO UPDATE SET {_TAXA_UPDATE_SQL},
                fetched_at = now(), source = 'gbif'
            """,
            [storable_row(astuple(by_key[key])) for key in sorted(by_key)],
            template=f"({', '.join(['%s'] * len(_TAXA_COLUMNS))}, now(), 'gbif')",
            page_size=500,
        )
    return len(by_key)


SPECIES_AND_BELOW = ("species", "subspecies", "variety", "form", "infraspecific_name")


@dataclass(frozen=True)
class DueTaxon:
    taxon_key: int
    scientific_name: str
    rank: str


def taxa_due(
    conn: Connection, result_table: str, job: str, limit: int, ranks: Sequence[str] | None = None
) -> list[DueTaxon]:
    """Accepted cached taxa an enrichment job should look at now: never seen first, then the
    stalest; taxa whose last failure is still backing off wait."""
    query = sql.SQL(
        """
        SELECT t.taxon_key, t.scientific_name, t.rank FROM ingester.taxa t
        LEFT JOIN pipelines.{table} s ON s.taxon_key = t.taxon_key
        LEFT JOIN pipelines.job_item_failures f ON f.job = %(job)s AND f.item_key = t.taxon_key
        WHERE t.status IN ('ACCEPTED', 'DOUBTFUL')
          AND (%(ranks)s::text[] IS NULL OR t.rank = ANY(%(ranks)s))
          AND (s.taxon_key IS NULL OR s.next_check_at <= now())
          AND (f.item_key IS NULL OR f.next_attempt_at <= now())
        ORDER BY s.fetched_at NULLS FIRST, t.taxon_key
        LIMIT %(limit)s
        """
    ).format(table=sql.Identifier(result_table))
    with conn.cursor() as cur:
        cur.execute(query, {"job": job, "ranks": list(ranks) if ranks else None, "limit": limit})
        return [DueTaxon(*row) for row in cur.fetchall()]


def hot_stale_taxa(
    conn: Connection, job: str, top_n: int, recent_days: int, stale_days: int, limit: int
) -> list[TaxonRow]:
    """Cached taxa identifications point at most (top N) or lately (last D days), not fetched
    for `stale_days`, stalest first; those whose last re-check failed wait out its backoff."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            WITH top AS (
                SELECT accepted_taxon_key AS key FROM ingester.identifications
                WHERE accepted_taxon_key IS NOT NULL
                GROUP BY accepted_taxon_key ORDER BY count(*) DESC, accepted_taxon_key
                LIMIT %(top_n)s
            ), recent AS (
                SELECT DISTINCT accepted_taxon_key AS key FROM ingester.identifications
                WHERE accepted_taxon_key IS NOT NULL
                  AND date_identified > now() - make_interval(days => %(recent_days)s)
            )
            SELECT {", ".join(f"t.{c}" for c in _TAXA_COLUMN_SQL.split(", "))}
            FROM ingester.taxa t
            LEFT JOIN pipelines.job_item_failures f
                ON f.job = %(job)s AND f.item_key = t.taxon_key
            WHERE t.taxon_key IN (SELECT key FROM top UNION SELECT key FROM recent)
              AND t.fetched_at < now() - make_interval(days => %(stale_days)s)
              AND t.status <> 'NOT_FOUND'
              AND (f.item_key IS NULL OR f.next_attempt_at <= now())
            ORDER BY t.fetched_at, t.taxon_key
            LIMIT %(limit)s
            """,
            {
                "top_n": top_n,
                "recent_days": recent_days,
                "stale_days": stale_days,
                "limit": limit,
                "job": job,
            },
        )
        return [TaxonRow(*row) for row in cur.fetchall()]


def touch_taxa(conn: Connection, keys: Iterable[int]) -> None:
    """Mark cached taxa as checked now (GBIF still says the same)."""
    wanted = sorted(set(keys))
    if wanted:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE ingester.taxa SET fetched_at = now() WHERE taxon_key = ANY(%s)", (wanted,)
            )


def mark_taxon_gone(conn: Connection, key: int) -> None:
    """GBIF no longer knows this key: keep the row for history, but never trust it again."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ingester.taxa SET status = 'NOT_FOUND', accepted_taxon_key = NULL, "
            "fetched_at = now() WHERE taxon_key = %s",
            (key,),
        )


def record_change(
    conn: Connection,
    taxon_key: int,
    reasons: Sequence[str],
    old: dict[str, Any],
    new: dict[str, Any] | None,
    restamped: int,
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.taxon_changes
                (taxon_key, reasons, old_values, new_values, identifications_restamped)
            VALUES (%s, %s, %s, %s, %s)
            """,
            (
                taxon_key,
                [storable(reason) for reason in reasons],
                Json(storable_json(old)),
                Json(storable_json(new)) if new is not None else None,
                restamped,
            ),
        )


def set_vernacular_names(conn: Connection, names: Mapping[int, str | None]) -> int:
    """Write the name the app shows for these taxa (`vernacular_name`, the one column of
    `taxa` only vernacular_names writes), where it differs; returns the rows changed."""
    if not names:
        return 0
    keys = sorted(names)
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ingester.taxa t SET vernacular_name = w.name
            FROM unnest(%s::bigint[], %s::text[]) AS w(key, name)
            WHERE t.taxon_key = w.key AND t.vernacular_name IS DISTINCT FROM w.name
            """,
            (keys, [storable_or_none(names[key]) for key in keys]),
        )
        return cur.rowcount
