"""`pipelines.job_item_failures`: the one failure ledger of the enrichment jobs.

A row per failing item (a taxon) of a job, with its attempts, last error and next try, removed
when the item succeeds. `awaiting_confirmation` holds a verdict a job will only act on when the
next check reaches it again (backbone freshness: "GBIF no longer knows this key").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg2.extensions import connection as Connection

from observing_pipelines.text import MAX_ERROR, storable


@dataclass(frozen=True)
class PriorFailure:
    attempts: int
    awaiting_confirmation: str | None


@dataclass(frozen=True)
class FailureRecord:
    item_key: int
    error: str
    next_attempt_at: datetime
    awaiting_confirmation: str | None = None


def prior_failures(conn: Connection, job: str, keys: Iterable[int]) -> dict[int, PriorFailure]:
    """The ledger rows of these items that are currently failing."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT item_key, attempts, awaiting_confirmation FROM pipelines.job_item_failures "
            "WHERE job = %s AND item_key = ANY(%s)",
            (job, wanted),
        )
        return {key: PriorFailure(*rest) for key, *rest in cur.fetchall()}


def record_failures(conn: Connection, job: str, failures: Sequence[FailureRecord]) -> None:
    """Remember failed items (one row each, `attempts` counting every try), in key order."""
    unique = {failure.item_key: failure for failure in failures}
    if not unique:
        return
    ordered = [unique[key] for key in sorted(unique)]
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.job_item_failures AS f
                (job, item_key, last_error, next_attempt_at, awaiting_confirmation)
            SELECT %s, u.* FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[])
                AS u
            ON CONFLICT (job, item_key) DO UPDATE SET
                attempts = f.attempts + 1, last_error = EXCLUDED.last_error,
                last_failed_at = now(), next_attempt_at = EXCLUDED.next_attempt_at,
                awaiting_confirmation = EXCLUDED.awaiting_confirmation
            """,
            (
                job,
                [f.item_key for f in ordered],
                [storable(f.error, MAX_ERROR) for f in ordered],
                [f.next_attempt_at for f in ordered],
                [f.awaiting_confirmation for f in ordered],
            ),
        )


def clear_failures(conn: Connection, job: str, keys: Iterable[int]) -> None:
    wanted = sorted(set(keys))
    if wanted:
        with conn.cursor() as cur:
            cur.execute(
                "DELETE FROM pipelines.job_item_failures WHERE job = %s AND item_key = ANY(%s)",
                (job, wanted),
            )


def pending_by_job(conn: Connection) -> dict[str, int]:
    """Failing items per job, waiting for their next try (an index-only scan of the key)."""
    with conn.cursor() as cur:
        cur.execute("SELECT job, count(*) FROM pipelines.job_item_failures GROUP BY job")
        return {job: int(count) for job, count in cur.fetchall()}
