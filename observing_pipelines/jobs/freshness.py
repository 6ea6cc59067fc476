"""GBIF backbone freshness of the most-used taxa, daily."""

from datetime import timedelta

import dagster as dg

from observing_pipelines import inputs
from observing_pipelines.jobs.common import (
    JobConfig,
    asset_job,
    invariant_check,
    materialize_result,
    retry_policy,
    schedule,
)
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, GbifResource
from observing_pipelines.taxa.freshness import FreshnessOptions, check_freshness


class FreshnessConfig(JobConfig):
    top_n: inputs.Limit = 1000
    """The N taxa with the most identifications are hot."""
    recent_days: inputs.Days = 7
    """So is any taxon of an identification made in the last D days."""
    stale_days: inputs.Days = 30
    """Hot taxa fetched longer ago than this are re-checked."""
    limit: inputs.Limit = 2000
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

# 2,000 re-checks at GBIF's 10 a second: under 4 minutes.
freshness_job = asset_job("backbone_freshness", backbone_changes, timedelta(hours=1))


def freshness_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule(
        "backbone_freshness_daily", freshness_job, cron, timezone, "Re-check hot taxa on GBIF."
    )
