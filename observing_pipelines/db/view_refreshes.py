"""`pipelines.view_refreshes`: each view's last refresh (when, from which source write count,
how long), what the refresh budget decides on (`taxa.community_ids`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2.extensions import connection as Connection


@dataclass(frozen=True)
class ViewRefresh:
    source_writes: int
    """`identifications.view_source_writes` read just before the refresh began."""
    refreshed_at: datetime
    """When it ended."""
    seconds: float


def last_refresh(conn: Connection, view: str) -> ViewRefresh | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_writes, refreshed_at, seconds FROM pipelines.view_refreshes "
            "WHERE view_name = %s",
            (view,),
        )
        row = cur.fetchone()
        return ViewRefresh(*row) if row else None


def record_refresh(conn: Connection, view: str, source_writes: int, seconds: float) -> ViewRefresh:
    """Record a refresh that just ended, in the refresh's transaction: `clock_timestamp()`, since
    `now()` would be the transaction's start, before the refresh, and the budget would count
    its wait from there (a tenth of the time refreshing at factor 10, not an eleventh)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO pipelines.view_refreshes (view_name, source_writes, refreshed_at, seconds)
            VALUES (%s, %s, clock_timestamp(), %s)
            ON CONFLICT (view_name) DO UPDATE SET source_writes = EXCLUDED.source_writes,
                refreshed_at = EXCLUDED.refreshed_at, seconds = EXCLUDED.seconds
            RETURNING source_writes, refreshed_at, seconds
            """,
            (view, source_writes, seconds),
        )
        row = cur.fetchone()
        assert row is not None  # an upsert with RETURNING always returns its row
        return ViewRefresh(*row)
