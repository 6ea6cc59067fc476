"""IUCN Red List categories, weekly: from IUCN v4 with a token, from GBIF without one."""

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
from observing_pipelines.resources import AppDatabaseResource, GbifResource, IucnResource
from observing_pipelines.taxa.conservation import ConservationOptions, sync_conservation


class ConservationConfig(JobConfig):
    limit: inputs.Limit = 2000
    """Species-or-below taxa per run (new first, then the stalest)."""


@dg.asset(
    key=["pipelines", "taxon_conservation"],
    deps=[identification_taxa],
    group_name="enrichment",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(300),
    description="IUCN Red List category of each accepted species-or-below taxon, with source.",
)
def taxon_conservation(
    config: ConservationConfig, app_db: AppDatabaseResource, gbif: GbifResource, iucn: IucnResource
) -> dg.MaterializeResult:
    iucn_client = iucn.get_client()
    source = iucn if iucn_client else gbif
    options = ConservationOptions(limit=config.limit, max_concurrency=source.max_concurrency)
    with app_db.connect() as conn:
        report = sync_conservation(conn, gbif.get_client(), iucn_client, options)
    return materialize_result(
        report.metadata(), report.failures, source="iucn" if iucn_client else "gbif"
    )


conservation_checks = [
    invariant_check(
        taxon_conservation,
        "conservation_status_stale",
        "No conservation status is older than 60 days (the weekly sync keeps up).",
        dg.AssetCheckSeverity.WARN,
    )
]

# 2,000 taxa: about 7 minutes from GBIF; from IUCN (two calls a taxon, 2 a second) 35.
conservation_job = asset_job("conservation_status", taxon_conservation, timedelta(hours=2))


def conservation_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule(
        "conservation_status_weekly", conservation_job, cron, timezone, "Sync IUCN categories."
    )
