"""`pipelines.dead_letters`: runs that failed for good, with their root cause."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2.extensions import connection as Connection

from observing_pipelines.text import MAX_ERROR, storable, storable_or_none


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
                storable_or_none(step_key),
                step_attempts,
            ),
        )
        return cur.rowcount == 1


@dataclass(frozen=True)
class OpenDeadLetters:
    """The dead letters nobody has resolved yet, and the latest of them (for `status`)."""

    count: int
    latest_job: str | None = None
    latest_run_id: str | None = None
    latest_failed_at: datetime | None = None


def open_dead_letters(conn: Connection) -> OpenDeadLetters:
    """How many runs failed for good and are not resolved, and the latest one: one read of
    `dead_letters_open_idx`."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT count(*) OVER (), job_name, run_id, failed_at FROM pipelines.dead_letters
            WHERE resolved_at IS NULL ORDER BY failed_at DESC LIMIT 1
            """
        )
        row = cur.fetchone()
    return OpenDeadLetters(*row) if row else OpenDeadLetters(0)
