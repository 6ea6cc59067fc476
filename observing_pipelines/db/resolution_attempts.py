"""`pipelines.resolution_attempts`: what resolve_taxa asked upstream, and when to ask again.

The table is both a memo (a resolved name or taxonID is not asked again, even when it is a
misspelling whose canonical name the taxa cache cannot find) and a failure ledger (attempts,
last outcome, last error, and a `next_attempt_at` that backs off, by the code location's one
`Backoff`), which operators query to find work that did not go through. Every text passes
`text.storable` first: what an upstream answer says must never make a write fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg2.extensions import connection as Connection

from observing_pipelines.db.connection import fetch_count
from observing_pipelines.text import MAX_ERROR, storable, storable_or_none

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
                    storable_or_none(r.kingdom),
                    r.outcome,
                    r.taxon_key,
                    r.accepted_taxon_key,
                    storable_or_none(r.match_type),
                    r.confidence,
                    storable_or_none(r.error, MAX_ERROR),
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


def pending_errors(conn: Connection) -> int:
    """Names and taxonIDs whose last try failed (`error`, backing off to the next try), read
    from the failures index. Names GBIF could not match are answers, not failures: they are
    not counted."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pipelines.resolution_attempts WHERE outcome = 'error'")
        return fetch_count(cur)
