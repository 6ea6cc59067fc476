"""Backbone freshness: re-check the taxa identifications use most against GBIF.

GBIF keys and names move (splits, lumps, renames; the backbone is being replaced by COL XR).
"Hot" taxa are the top N by identification count plus any used by an identification of the last
D days. Those not fetched for `stale_days` are asked again by key. When the name, rank, status or
accepted key changed, or the key is gone, the cached rows are updated, a change-log row records
old and new values and why, and identifications stamped with the key move to the new accepted
key (or, for a key that is gone, are unstamped so resolve_taxa resolves their names again).
A key GBIF does not know is only acted on when the next check (after the failure backoff) says
so again. Otherwise only `fetched_at` moves. `community_ids` is refreshed once if anything was
re-stamped.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from psycopg2.extensions import connection as Connection

from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.db import app_tables, state
from observing_pipelines.db.app_tables import TaxonRow
from observing_pipelines.taxa.matching import Resolution, judge_match
from observing_pipelines.taxa.report import SyncReport

log = logging.getLogger("observing_pipelines.freshness")

JOB = "backbone_freshness"
COMPARED = ("scientific_name", "rank", "status", "accepted_taxon_key")
GONE_ONCE = "GBIF no longer knows this key"
RETRY_FIRST, RETRY_CAP = timedelta(hours=12), timedelta(days=7)


@dataclass(frozen=True)
class FreshnessOptions:
    top_n: int = 1000
    recent_days: int = 7
    stale_days: int = 30
    limit: int = 2000
    max_concurrency: int = 4


def check_freshness(conn: Connection, gbif: GbifClient, options: FreshnessOptions) -> SyncReport:
    report = SyncReport(
        extra={"identifications_restamped": 0, "keys_gone": 0, "gone_unconfirmed": 0}
    )
    calls_before = gbif.http.calls
    with conn:
        hot = app_tables.hot_stale_taxa(
            conn, JOB, options.top_n, options.recent_days, options.stale_days, options.limit
        )
    report.seen = len(hot)
    log.info("Backbone freshness: %d hot taxa to re-check", len(hot))

    def ask(row: TaxonRow) -> Resolution | str:
        try:
            return judge_match(gbif.match_usage_key(row.taxon_key))
        except UpstreamError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=max(options.max_concurrency, 1)) as pool:
        answers = list(pool.map(ask, hot))
    unchanged: list[int] = []
    failures: list[tuple[int, str]] = []
    with conn:
        seen_gone = {
            key
            for key, error in state.last_failures(conn, JOB, (t.taxon_key for t in hot)).items()
            if error.startswith(GONE_ONCE)
        }
    for cached, answer in zip(hot, answers, strict=True):
        if isinstance(answer, str):
            failures.append((cached.taxon_key, answer))
            report.fail(f"taxon {cached.taxon_key}", answer)
            continue
        fresh = next((r for r in answer.rows if r.taxon_key == cached.taxon_key), None)
        if fresh is None and cached.taxon_key not in seen_gone:
            # One "no such key" could be a GBIF hiccup: unstamping on it would be costly.
            failures.append((cached.taxon_key, f"{GONE_ONCE}; confirming on the next check"))
            report.extra["gone_unconfirmed"] += 1
            continue
        reasons = _differences(cached, fresh)
        if not reasons:
            unchanged.append(cached.taxon_key)
            continue
        with conn:
            app_tables.take_write_lock(conn)
            report.extra["identifications_restamped"] += _apply_change(
                conn, cached, fresh, answer, reasons
            )
        report.changed += 1
        report.extra["keys_gone"] += fresh is None
        log.info("Taxon %d changed upstream (%s)", cached.taxon_key, ", ".join(reasons))
    with conn:
        app_tables.touch_taxa(conn, unchanged)
        state.clear_failures(conn, JOB, unchanged)
        state.record_failures(conn, JOB, failures, RETRY_FIRST, RETRY_CAP)
    report.unchanged = len(unchanged)
    if report.extra["identifications_restamped"]:
        with conn:
            app_tables.refresh_community_ids(conn)
    return report.finish(gbif.http.calls - calls_before)


def _differences(cached: TaxonRow, fresh: TaxonRow | None) -> list[str]:
    if fresh is None:
        return ["key_gone"]
    return [
        f"{field}_changed" for field in COMPARED if getattr(cached, field) != getattr(fresh, field)
    ]


def _apply_change(
    conn: Connection,
    cached: TaxonRow,
    fresh: TaxonRow | None,
    answer: Resolution,
    reasons: list[str],
) -> int:
    """Update the cache, move the stamps, log the change; returns identifications re-stamped."""
    new_key = fresh.accepted_taxon_key if fresh else None
    if fresh is None:
        app_tables.mark_taxon_gone(conn, cached.taxon_key)
    else:
        app_tables.upsert_taxa(conn, answer.rows)
    restamped = 0
    if new_key != cached.taxon_key:
        restamped = app_tables.restamp_identifications(conn, cached.taxon_key, new_key)
        state.repoint_resolutions(conn, cached.taxon_key, new_key)
    old_values = {f: getattr(cached, f) for f in COMPARED}
    new_values = {f: getattr(fresh, f) for f in COMPARED} if fresh else None
    state.record_change(conn, cached.taxon_key, reasons, old_values, new_values, restamped)
    state.clear_failures(conn, JOB, [cached.taxon_key])
    return restamped
