"""Our own schema: what each lookup answered, and when to ask again.

Every text written here passes `text.storable` first (NUL, lone surrogates, size): what an
upstream answer or an exception says must never make a write fail, or the next pass would fail
on the same answer again.

`resolution_attempts` is both a memo (a resolved name or taxonID is not asked again, even when
it is a misspelling whose canonical name the taxa cache cannot find) and a failure ledger
(attempts, last outcome, last error, and a `next_attempt_at` that backs off), which operators
query to find work that did not go through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json, execute_values

from observing_pipelines.text import MAX_ERROR, MAX_FIELD, storable, storable_json, storable_row

SubjectKind = Literal["name", "taxon_id"]
Outcome = Literal["resolved", "not_found", "rejected", "invalid", "error"]


@dataclass(frozen=True)
class PriorAttempt:
    outcome: Outcome
    accepted_taxon_key: int | None
    attempts: int
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class AttemptRecord:
    digest: str
    subject: str
    kingdom: str | None
    outcome: Outcome
    taxon_key: int | None
    accepted_taxon_key: int | None
    match_type: str | None
    confidence: int | None
    error: str | None
    next_attempt_at: datetime | None


def load_attempts(
    conn: Connection, kind: SubjectKind, digests: Iterable[str]
) -> dict[str, PriorAttempt]:
    wanted = sorted(set(digests))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT subject_digest, outcome, accepted_taxon_key, attempts, next_attempt_at
            FROM pipelines.resolution_attempts
            WHERE subject_kind = %s AND subject_digest = ANY(%s)
            """,
            (kind, wanted),
        )
        return {digest: PriorAttempt(*rest) for digest, *rest in cur.fetchall()}


def record_attempts(conn: Connection, kind: SubjectKind, records: Sequence[AttemptRecord]) -> None:
    """Upsert one row per subject; `attempts` counts every try."""
    unique = {r.digest: r for r in records}
    if not unique:
        return
    ordered = [unique[d] for d in sorted(unique)]
    columns = list(
        zip(
            *[
                (
                    r.digest,
                    storable(r.subject),
                    _optional_text(r.kingdom),
                    r.outcome,
                    r.taxon_key,
                    r.accepted_taxon_key,
                    _optional_text(r.match_type),
                    r.confidence,
                    _optional_text(r.error, MAX_ERROR),
                    r.next_attempt_at,
                )
                for r in ordered
            ],
            strict=True,
        )
    )
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.resolution_attempts AS a
                (subject_kind, subject_digest, subject, kingdom, outcome, taxon_key,
                 accepted_taxon_key, match_type, confidence, last_error, next_attempt_at)
            SELECT %s, u.* FROM unnest(
                %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],
                %s::text[], %s::smallint[], %s::text[], %s::timestamptz[]) AS u
            ON CONFLICT (subject_kind, subject_digest) DO UPDATE SET
                subject = EXCLUDED.subject, kingdom = EXCLUDED.kingdom,
                outcome = EXCLUDED.outcome, taxon_key = EXCLUDED.taxon_key,
                accepted_taxon_key = EXCLUDED.accepted_taxon_key,
                match_type = EXCLUDED.match_type, confidence = EXCLUDED.confidence,
                last_error = EXCLUDED.last_error, next_attempt_at = EXCLUDED.next_attempt_at,
                attempts = a.attempts + 1, last_attempt_at = now()
            """,
            (kind, *[list(c) for c in columns]),
        )


def _optional_text(value: str | None, limit: int = MAX_FIELD) -> str | None:
    return None if value is None else storable(value, limit)


# -- enrichment jobs: per-item failures ----------------------------------------------------------


def record_failures(
    conn: Connection,
    job: str,
    failures: Sequence[tuple[int, str]],
    first: timedelta,
    cap: timedelta,
) -> None:
    """Remember failed items; the next try backs off from `first`, doubling, up to `cap`."""
    unique = {key: storable(error, MAX_ERROR) for key, error in failures}
    if not unique:
        return
    keys = sorted(unique)
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.job_item_failures AS f
                (job, item_key, last_error, next_attempt_at)
            SELECT %(job)s, u.key, u.error, now() + %(first)s
            FROM unnest(%(keys)s::bigint[], %(errors)s::text[]) AS u(key, error)
            ON CONFLICT (job, item_key) DO UPDATE SET
                attempts = f.attempts + 1, last_error = EXCLUDED.last_error,
                last_failed_at = now(),
                next_attempt_at = now()
                    + LEAST(%(first)s * power(2, least(f.attempts, 20)), %(cap)s)
            """,
            {
                "job": job,
                "keys": keys,
                "errors": [unique[k] for k in keys],
                "first": first,
                "cap": cap,
            },
        )


def clear_failures(conn: Connection, job: str, keys: Iterable[int]) -> None:
    wanted = sorted(set(keys))
    if wanted:
        with conn.cursor() as cur:
            cur.execute(
                "DELETE FROM pipelines.job_item_failures WHERE job = %s AND item_key = ANY(%s)",
                (job, wanted),
            )


# -- enrichment jobs: results --------------------------------------------------------------------


@dataclass(frozen=True)
class TaxonImageRow:
    """One row of `pipelines.taxon_images` (without its timestamps)."""

    taxon_key: int
    status: Literal["found", "no_item", "no_image", "file_missing"]
    wikidata_item: str | None = None
    file_name: str | None = None
    thumb_small_url: str | None = None
    thumb_small_width: int | None = None
    thumb_large_url: str | None = None
    thumb_large_width: int | None = None
    original_url: str | None = None
    file_page_url: str | None = None
    license_short_name: str | None = None
    license_url: str | None = None
    artist: str | None = None
    attribution_required: bool | None = None


@dataclass(frozen=True)
class ConservationRow:
    """One row of `pipelines.taxon_conservation` (without its timestamps)."""

    taxon_key: int
    scientific_name: str
    status: Literal["assessed", "not_assessed", "regional_only", "not_found"]
    source: Literal["iucn", "gbif"]
    category: str | None = None
    assessment_id: int | None = None
    assessment_year: int | None = None
    iucn_taxon_id: int | None = None
    common_name_en: str | None = None


ResultRow = TaxonImageRow | ConservationRow
_RESULT_TABLES: dict[type, str] = {
    TaxonImageRow: "taxon_images",
    ConservationRow: "taxon_conservation",
}


def load_results(
    conn: Connection, row_type: type[ResultRow], keys: Iterable[int]
) -> dict[int, Any]:
    """Current rows of a result table, by taxon key (for telling changed from unchanged)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    names = [f.name for f in fields(row_type)]
    query = sql.SQL("SELECT {} FROM pipelines.{} WHERE taxon_key = ANY(%s)").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(_RESULT_TABLES[row_type])
    )
    with conn.cursor() as cur:
        cur.execute(query, (wanted,))
        return {row[0]: row_type(*row) for row in cur.fetchall()}


def save_results(conn: Connection, rows: Sequence[tuple[ResultRow, timedelta]]) -> None:
    """Upsert result rows, each with the delay until it is checked again; `fetched_at` = now."""
    if not rows:
        return
    row_type = type(rows[0][0])
    names = [f.name for f in fields(row_type)]
    ordered = sorted(rows, key=lambda pair: pair[0].taxon_key)
    query = sql.SQL(
        "INSERT INTO pipelines.{table} ({columns}, fetched_at, next_check_at) VALUES %s "
        "ON CONFLICT (taxon_key) DO UPDATE SET {updates}, fetched_at = now(), "
        "next_check_at = EXCLUDED.next_check_at"
    ).format(
        table=sql.Identifier(_RESULT_TABLES[row_type]),
        columns=sql.SQL(", ").join(map(sql.Identifier, names)),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names[1:]
        ),
    )
    with conn.cursor() as cur:
        execute_values(
            cur,
            query.as_string(cur),
            [(*storable_row(astuple(row)), delay) for row, delay in ordered],
            template=f"({', '.join(['%s'] * len(names))}, now(), now() + %s)",
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


def repoint_resolutions(conn: Connection, old_key: int, new_key: int | None) -> None:
    """Remembered answers that led to `old_key` now lead to `new_key`, or are forgotten."""
    with conn.cursor() as cur:
        if new_key is None:
            cur.execute(
                "DELETE FROM pipelines.resolution_attempts WHERE accepted_taxon_key = %s",
                (old_key,),
            )
        else:
            cur.execute(
                "UPDATE pipelines.resolution_attempts SET accepted_taxon_key = %s "
                "WHERE accepted_taxon_key = %s",
                (new_key, old_key),
            )


# -- operations ----------------------------------------------------------------------------------


def record_dead_letter(
    conn: Connection,
    run_id: str,
    job_name: str,
    root_run_id: str | None,
    retry_number: int,
    error: str,
    step_key: str | None = None,
    step_attempts: int | None = None,
) -> bool:
    """Remember a run that failed for good, with its root cause; False if already recorded."""
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.dead_letters
                (run_id, job_name, root_run_id, retry_number, error, step_key, step_attempts)
            VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING
            """,
            (
                run_id,
                job_name,
                root_run_id,
                retry_number,
                storable(error, MAX_ERROR),
                _optional_text(step_key),
                step_attempts,
            ),
        )
        return cur.rowcount == 1


def forget_resolutions(conn: Connection, names: Sequence[str], keys: Sequence[int]) -> int:
    """Drop remembered answers about these names (normalised) or leading to these keys."""
    with conn.cursor() as cur:
        cur.execute(
            """
            DELETE FROM pipelines.resolution_attempts
            WHERE (subject_kind = 'name' AND lower(subject) = ANY(%s))
               OR accepted_taxon_key = ANY(%s) OR taxon_key = ANY(%s)
            """,
            ([n.casefold() for n in names], list(keys), list(keys)),
        )
        return cur.rowcount


def last_failures(conn: Connection, job: str, keys: Iterable[int]) -> dict[int, str]:
    """The last recorded error of each of these items that is currently failing."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT item_key, last_error FROM pipelines.job_item_failures "
            "WHERE job = %s AND item_key = ANY(%s)",
            (job, wanted),
        )
        return dict(cur.fetchall())


@dataclass(frozen=True)
class ChangeMark:
    writes: int
    recorded_at: datetime


def change_mark(conn: Connection, name: str) -> ChangeMark | None:
    """The write count a pass last recorded under `name` (see `save_change_mark`), and when."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT writes, recorded_at FROM pipelines.change_marks WHERE name = %s", (name,)
        )
        row = cur.fetchone()
        return ChangeMark(*row) if row else None


def save_change_mark(conn: Connection, name: str, writes: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.change_marks (name, writes, recorded_at)
            VALUES (%s, %s, now())
            ON CONFLICT (name) DO UPDATE SET writes = EXCLUDED.writes, recorded_at = now()
            """,
            (name, writes),
        )
