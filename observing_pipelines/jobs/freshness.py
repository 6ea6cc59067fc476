"""GBIF backbone freshness of the most-used taxa, daily."""

import dagster as dg

from observing_pipelines.jobs.common import (
    asset_job,
    invariant_check,
    materialize_result,
    retry_policy,
    schedule,
)
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, GbifResource
from observing_pipelines.taxa.freshness import FreshnessOptions, check_freshness


class FreshnessConfig(dg.Config):
    top_n: int = 1000
    """The N taxa with the most identifications are hot."""
    recent_days: int = 7
    """So is any taxon of an identification made in the last D days."""
    stale_days: int = 30
    """Hot taxa fetched longer ago than this are re-checked."""
    limit: int = 2000
    """At most this many re-checks per run."""


@dg.asset(
    key=["pipelines", "backbone_changes"],
    deps=[identification_taxa],
    group_name="taxonomy",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(120),
    description="Hot taxa re-checked against GBIF; changes logged, identifications re-stamped.",
)
def backbone_changes(
    config: FreshnessConfig, app_db: AppDatabaseResource, gbif: GbifResource
) -> dg.MaterializeResult:
    options = FreshnessOptions(
        top_n=config.top_n,
        recent_days=config.recent_days,
        stale_days=config.stale_days,
        limit=config.limit,
        max_concurrency=gbif.max_concurrency,
    )
    with app_db.connect() as conn:
        report = check_freshness(conn, gbif.get_client(), options)
    return materialize_result(report.metadata(), report.failures)


freshness_checks = [
    invariant_check(
        backbone_changes,
        "stamps_on_unusable_taxa",
        "No identification we stamped points at a key GBIF dropped or made a synonym.",
    )
]

freshness_job = asset_job("backbone_freshness", backbone_changes)


def freshness_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule(
        "backbone_freshness_daily", freshness_job, cron, timezone, "Re-check hot taxa on GBIF."
    )
