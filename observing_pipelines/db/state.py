"""Our own schema: what each lookup answered, and when to ask again.

`resolution_attempts` is both a memo (a resolved name or taxonID is not asked again, even when
it is a misspelling whose canonical name the taxa cache cannot find) and a failure ledger
(attempts, last outcome, last error, and a `next_attempt_at` that backs off), which operators
query to find work that did not go through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg2.extensions import connection as Connection

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
                    r.subject,
                    r.kingdom,
                    r.outcome,
                    r.taxon_key,
                    r.accepted_taxon_key,
                    r.match_type,
                    r.confidence,
                    r.error,
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
