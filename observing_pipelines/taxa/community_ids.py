"""Refreshing `ingester.community_ids` on a budget, free of Dagster.

A refresh reads every identification (14 s of database time at a million of them,
`benchmarks/scale.py`), so it must not follow every stamp. It happens when the view's sources
(identifications, occurrences) were written since the last refresh, and never sooner than
`RefreshBudget.wait_after` the last one: `max(min_interval, factor x its duration)`, so
refreshing takes at most about 1/(factor+1) of the database's time, yet never more than
`max_lag`, so a refresh that is owed is never put off past it.

Each refresh is recorded in `pipelines.view_refreshes` with the source write count it started
from (`identifications.view_source_writes`, a catalog read): comparing that count with the
current one is how "sources changed" costs nothing, and it is what the sensor polls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg2.extensions import connection as Connection

from observing_pipelines.db import identifications, view_refreshes
from observing_pipelines.db.connection import AdvisoryLock
from observing_pipelines.db.view_refreshes import ViewRefresh

log = logging.getLogger(__name__)

VIEW = "community_ids"


@dataclass(frozen=True)
class RefreshBudget:
    min_interval: timedelta = timedelta(seconds=30)
    factor: float = 10.0
    max_lag: timedelta = timedelta(minutes=5)

    def wait_after(self, last: ViewRefresh) -> timedelta:
        """How long after `last` ended the next refresh may start."""
        paced = max(self.min_interval, timedelta(seconds=last.seconds * self.factor))
        return min(paced, self.max_lag)


@dataclass(frozen=True)
class RefreshState:
    """Whether the view owes a refresh, and from when the budget allows it."""

    source_writes: int
    last: ViewRefresh | None

    @property
    def owed(self) -> bool:
        return self.last is None or self.last.source_writes != self.source_writes

    def allowed_at(self, budget: RefreshBudget) -> datetime:
        if self.last is None:
            return datetime.min.replace(tzinfo=UTC)
        return self.last.refreshed_at + budget.wait_after(self.last)


def refresh_state(conn: Connection) -> RefreshState:
    """Two cheap reads: the sources' write count (catalog) and the last refresh's row."""
    with conn:
        return _read_state(conn)


def _read_state(conn: Connection) -> RefreshState:
    return RefreshState(
        identifications.view_source_writes(conn), view_refreshes.last_refresh(conn, VIEW)
    )


@dataclass(frozen=True)
class Refreshed:
    refresh: ViewRefresh
    previous: ViewRefresh | None

    @property
    def lag_seconds(self) -> float | None:
        """How far behind its sources the view could have been: the time since the previous
        refresh ended."""
        if self.previous is None:
            return None
        return (self.refresh.refreshed_at - self.previous.refreshed_at).total_seconds()


@dataclass(frozen=True)
class Deferred:
    reason: str
    until: datetime | None = None


def refresh(conn: Connection, budget: RefreshBudget | None = None) -> Refreshed | Deferred:
    """Refresh the view now, or, with a `budget`, only if it is owed and the budget allows it,
    in the caller's transaction (committed by the caller: the refresh and its record together).

    The transaction holds `AdvisoryLock.VIEW_REFRESH`, so two refreshers never run back to back:
    the second finds the lock taken (or the view current) and defers.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (int(AdvisoryLock.VIEW_REFRESH),))
        row = cur.fetchone()
        if not (row and row[0]):
            return Deferred("another refresh is running")
        state = _read_state(conn)
        if budget is not None:
            if not state.owed:
                return Deferred("nothing written since the last refresh")
            allowed_at = state.allowed_at(budget)
            if allowed_at > datetime.now(UTC):
                return Deferred("the refresh budget", allowed_at)
        started = time.monotonic()
        identifications.refresh_community_ids(conn)
        seconds = time.monotonic() - started
        done = view_refreshes.record_refresh(conn, VIEW, state.source_writes, seconds)
    log.info("Refreshed community_ids in %.2f s", seconds)
    return Refreshed(done, state.last)
