"""`pipelines.job_requests`: runs the app asked for by inserting a row, and what became of them.

The app writes `job_name`, `run_config` and `requested_by`; everything else is ours: the
`job_requests` sensor reads the open rows, and writes back the run's id and status as it goes,
or the reason a request was refused. A row is open until its status is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import connection as Connection

from observing_pipelines.text import MAX_ERROR, storable_or_none

FINAL_STATUSES = frozenset({"REJECTED", "SUCCESS", "FAILURE", "CANCELED"})
MAX_RUN_CONFIG_BYTES = 64 * 1024
"""A larger run config is refused on its row: no job of ours takes more than a few names."""
MAX_OPEN_PER_TICK = 100
"""The open requests one sensor tick reads; the rest wait for the next tick, oldest first."""


@dataclass(frozen=True)
class JobRequest:
    id: int
    job_name: str
    run_config: Any
    """The JSON as the app stored it: anything, until the sensor checks it."""
    run_config_bytes: int
    requested_by: str
    status: str
    run_id: str | None


def open_requests(conn: Connection, limit: int = MAX_OPEN_PER_TICK) -> list[JobRequest]:
    """The oldest requests not yet final (their partial index: no scan of finished rows). An
    oversized run config is not loaded, only measured."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT id, job_name,
                   CASE WHEN octet_length(run_config::text) <= %(max)s THEN run_config END,
                   octet_length(run_config::text), requested_by, status, run_id
            FROM pipelines.job_requests
            WHERE status NOT IN ('REJECTED', 'SUCCESS', 'FAILURE', 'CANCELED')
            ORDER BY id LIMIT %(limit)s
            """,
            {"max": MAX_RUN_CONFIG_BYTES, "limit": limit},
        )
        return [JobRequest(*row) for row in cur.fetchall()]


def reject(conn: Connection, request_id: int, reason: str) -> None:
    _update(conn, request_id, "REJECTED", None, reason)


def record_run(
    conn: Connection, request_id: int, run_id: str, status: str, error: str | None = None
) -> None:
    """The request's run and its status now (its final one, with the error of a failure)."""
    _update(conn, request_id, status, run_id, error)


def _update(
    conn: Connection, request_id: int, status: str, run_id: str | None, reason: str | None
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE pipelines.job_requests
            SET status = %(status)s, run_id = coalesce(%(run_id)s, run_id), reason = %(reason)s,
                updated_at = now(),
                finished_at = CASE WHEN %(final)s THEN now() END
            WHERE id = %(id)s AND (status, run_id, reason) IS DISTINCT FROM
                (%(status)s, coalesce(%(run_id)s, run_id), %(reason)s)
            """,
            {
                "id": request_id,
                "status": status,
                "run_id": run_id,
                "reason": storable_or_none(reason, MAX_ERROR),
                "final": status in FINAL_STATUSES,
            },
        )
