"""Backbone freshness: re-check the taxa identifications use most against GBIF.

GBIF keys and names move (splits, lumps, renames; the backbone is being replaced by COL XR).
"Hot" taxa are the top N by identification count plus any used by an identification of the last
D days. Those not fetched for `stale_days` are asked again by key. When the name, rank, status or
accepted key changed, or the key is gone, the cached rows are updated, a change-log row records
old and new values and why, and identifications stamped with the key move to the new accepted
key (or, for a key that is gone, are unstamped so resolve_taxa resolves their names again).
A key GBIF does not know is only acted on when the next check (after the failure backoff) says
so again: the first verdict is held in the failure ledger (`AwaitingConfirmation`). Otherwise
only `fetched_at` moves. `community_ids` is refreshed once if anything was re-stamped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from psycopg2.extensions import connection as Connection

from observing_pipelines import inputs
from observing_pipelines.clients.gbif import GbifClient, GbifMatch, MatchQuery
from observing_pipelines.db import identifications, resolution_attempts, taxa
from observing_pipelines.db.item_failures import PriorFailure
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.taxa import community_ids
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.enrichment import (
    AwaitingConfirmation,
    Enrichment,
    Failed,
    JobOptions,
    JobSpec,
    judged,
)
from observing_pipelines.taxa.matching import Resolution, judge_match
from observing_pipelines.taxa.report import SyncReport

SPEC = JobSpec(
    name="backbone_freshness",
    cron="0 2 * * *",
    retry=Backoff(first=timedelta(hours=12), cap=timedelta(days=7)),
)
COMPARED = ("scientific_name", "rank", "status", "accepted_taxon_key")
GONE = "gone"

log = logging.getLogger(__name__)


class BackboneFreshnessOptions(JobOptions):
    limit: inputs.Limit = 2000
    """At most this many re-checks per run."""
    top_n: inputs.Limit = 1000
    """The N taxa with the most identifications are hot."""
    recent_days: inputs.Days = 7
    """So is any taxon of an identification made in the last D days."""
    stale_days: inputs.Days = 30
    """Hot taxa fetched longer ago than this are re-checked."""


@dataclass(frozen=True)
class Recheck:
    """What GBIF says now about a cached taxon; `fresh` is None when the key is gone."""

    cached: TaxonRow
    fresh: TaxonRow | None
    answer: Resolution

    @property
    def taxon_key(self) -> int:
        return self.cached.taxon_key

    @property
    def reasons(self) -> list[str]:
        if self.fresh is None:
            return ["key_gone"]
        return [
            f"{field}_changed"
            for field in COMPARED
            if getattr(self.cached, field) != getattr(self.fresh, field)
        ]


class BackboneFreshness(Enrichment[TaxonRow, Recheck]):
    spec = SPEC
    counters = ("identifications_restamped", "keys_gone", "gone_unconfirmed")

    def __init__(self, gbif: GbifClient, options: BackboneFreshnessOptions) -> None:
        super().__init__(gbif)
        self.gbif, self.options = gbif, options

    def due(self, conn: Connection, limit: int) -> list[TaxonRow]:
        o = self.options
        return taxa.hot_stale_taxa(conn, SPEC.name, o.top_n, o.recent_days, o.stale_days, limit)

    def look_up(self, item: TaxonRow, prior: PriorFailure | None) -> Recheck:
        return self._recheck(item, prior, self.gbif.match_usage_key(item.taxon_key))

    def look_up_chunk(
        self, chunk: Sequence[TaxonRow], priors: Mapping[int, PriorFailure], pool: Executor
    ) -> list[Recheck | Failed]:
        """The chunk's keys in GBIF batches (`GbifClient.match_many`); each answer is judged
        on its own, so one odd answer fails its taxon only."""
        matches = self.gbif.match_many([MatchQuery(usage_key=t.taxon_key) for t in chunk])
        return [
            judged(
                match,
                partial(self._recheck, item, priors.get(item.taxon_key)),
                f"taxon {item.taxon_key}",
            )
            for item, match in zip(chunk, matches, strict=True)
        ]

    def _recheck(self, item: TaxonRow, prior: PriorFailure | None, match: GbifMatch) -> Recheck:
        answer = judge_match(match)
        fresh = next((row for row in answer.rows if row.taxon_key == item.taxon_key), None)
        if fresh is None and (prior is None or prior.awaiting_confirmation != GONE):
            # One "no such key" could be a GBIF hiccup: unstamping on it would be costly.
            raise AwaitingConfirmation(
                "GBIF no longer knows this key; confirming on the next check", GONE
            )
        return Recheck(item, fresh, answer)

    def save(self, conn: Connection, answers: Sequence[Recheck], report: SyncReport) -> None:
        unchanged = [recheck.taxon_key for recheck in answers if not recheck.reasons]
        taxa.touch_taxa(conn, unchanged)
        report.unchanged += len(unchanged)
        changed = [recheck for recheck in answers if recheck.reasons]
        if changed:
            identifications.take_write_lock(conn)
        for recheck in changed:
            restamped = _apply_change(conn, recheck)
            report.extra["identifications_restamped"] += restamped
            report.changed += 1
            fresh = recheck.fresh
            report.changes.add(
                taxon_key=recheck.taxon_key,
                reasons=", ".join(recheck.reasons),
                old_name=recheck.cached.scientific_name,
                new_name=fresh.scientific_name if fresh else None,
                new_status=fresh.status if fresh else "NOT_FOUND",
                new_accepted_key=fresh.accepted_taxon_key if fresh else None,
                identifications_restamped=restamped,
            )
            report.extra["keys_gone"] += recheck.fresh is None
            log.info(
                "Taxon %d changed upstream (%s)", recheck.taxon_key, ", ".join(recheck.reasons)
            )

    def finish(self, conn: Connection, report: SyncReport) -> None:
        if report.extra["identifications_restamped"]:  # a daily refresh, recorded as any other
            community_ids.refresh(conn)


def _apply_change(conn: Connection, recheck: Recheck) -> int:
    """Update the cache, move the stamps, log the change; returns identifications re-stamped."""
    cached, fresh = recheck.cached, recheck.fresh
    new_key = fresh.accepted_taxon_key if fresh else None
    if fresh is None:
        taxa.mark_taxon_gone(conn, cached.taxon_key)
    else:
        taxa.upsert_taxa(conn, recheck.answer.rows)
    restamped = 0
    if new_key != cached.taxon_key:
        restamped = identifications.restamp_identifications(conn, cached.taxon_key, new_key)
        resolution_attempts.repoint_resolutions(conn, cached.taxon_key, new_key)
    old_values = {f: getattr(cached, f) for f in COMPARED}
    new_values = {f: getattr(fresh, f) for f in COMPARED} if fresh else None
    taxa.record_change(conn, cached.taxon_key, recheck.reasons, old_values, new_values, restamped)
    return restamped
