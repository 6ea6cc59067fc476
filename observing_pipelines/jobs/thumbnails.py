"""Taxon thumbnails from Wikidata (P18) and Commons, daily."""

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
from observing_pipelines.resources import AppDatabaseResource, CommonsResource, WikidataResource
from observing_pipelines.taxa.thumbnails import ThumbnailOptions, refresh_thumbnails


class ThumbnailsConfig(JobConfig):
    limit: inputs.Limit = 500
    """Taxa per run (new first, then the stalest)."""
    small_width: inputs.CommonsWidth = 120
    """Search-result thumbnail width; must be a Commons standard width."""
    large_width: inputs.CommonsWidth = 960
    """Detail-page thumbnail width; must be a Commons standard width."""


@dg.asset(
    key=["pipelines", "taxon_images"],
    deps=[identification_taxa],
    group_name="enrichment",
    kinds={"postgres"},
    pool="wikimedia",
    retry_policy=retry_policy(120),
    description="One picture per cached taxon: Wikidata P18, Commons thumbnails, licence, artist.",
)
def taxon_images(
    config: ThumbnailsConfig,
    app_db: AppDatabaseResource,
    wikidata: WikidataResource,
    commons: CommonsResource,
) -> dg.MaterializeResult:
    options = ThumbnailOptions(config.limit, config.small_width, config.large_width)
    with app_db.connect() as conn:
        report = refresh_thumbnails(conn, wikidata.get_client(), commons.get_client(), options)
    return materialize_result(report.metadata(), report.failures)


thumbnails_checks = [
    invariant_check(
        taxon_images,
        "images_without_licence_or_thumbnail",
        "Every found image has both thumbnails and a licence name to credit.",
        dg.AssetCheckSeverity.WARN,
    )
]

# 500 taxa: five WDQS queries and a few dozen Commons requests, a minute or two.
thumbnails_job = asset_job("thumbnails", taxon_images, timedelta(hours=1))


def thumbnails_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule("thumbnails_daily", thumbnails_job, cron, timezone, "Refresh taxon pictures.")
