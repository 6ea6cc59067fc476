"""Taxon thumbnails from Wikidata (P18) and Commons, daily."""

import dagster as dg

from observing_pipelines.clients.commons import STANDARD_WIDTHS
from observing_pipelines.jobs.common import (
    asset_job,
    invariant_check,
    materialize_result,
    retry_policy,
    schedule,
)
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, CommonsResource, WikidataResource
from observing_pipelines.taxa.thumbnails import ThumbnailOptions, refresh_thumbnails


class ThumbnailsConfig(dg.Config):
    limit: int = 500
    """Taxa per run (new first, then the stalest)."""
    small_width: int = 120
    """Search-result thumbnail width; must be a Commons standard width."""
    large_width: int = 960
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
    for width in (config.small_width, config.large_width):
        if width not in STANDARD_WIDTHS:
            raise dg.Failure(
                f"{width}px is not a Commons standard width {STANDARD_WIDTHS}",
                allow_retries=False,  # a config mistake: retrying cannot help
            )
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

thumbnails_job = asset_job("thumbnails", taxon_images)


def thumbnails_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule("thumbnails_daily", thumbnails_job, cron, timezone, "Refresh taxon pictures.")
