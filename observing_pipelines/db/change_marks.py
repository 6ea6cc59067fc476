"""`pipelines.change_marks`: the write counts a pass saw last, so the next one can tell
whether anything changed without reading the tables (see `identifications.view_source_writes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2.extensions import connection as Connection


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
