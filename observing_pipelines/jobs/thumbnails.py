"""thumbnails: a picture per cached taxon from Wikidata (P18) and Commons, daily."""

from datetime import timedelta

import dagster as dg

from observing_pipelines.jobs.common import (
    RESULT_TIMES,
    JobConfig,
    asset_docs,
    invariant_check,
    job_definitions,
    retry_policy,
    row_schema,
    run_enrichment,
)
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, CommonsResource, WikidataResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.thumbnails import SPEC, TaxonImageRow, Thumbnails, ThumbnailsOptions


class ThumbnailsConfig(JobConfig, ThumbnailsOptions):
    """The pass's options (`ThumbnailsOptions`), from the launchpad."""


@dg.asset(
    key=["pipelines", "taxon_images"],
    deps=[identification_taxa],
    group_name="enrichment",
    kinds={"postgres"},
    pool="wikimedia",
    retry_policy=retry_policy(120),
    description="One picture per cached taxon: Wikidata P18, Commons thumbnails, licence, artist.",
    metadata=asset_docs("Jobs", row_schema(TaxonImageRow, *RESULT_TIMES)),
)
def taxon_images(
    config: ThumbnailsConfig,
    app_db: AppDatabaseResource,
    wikidata: WikidataResource,
    commons: CommonsResource,
) -> dg.MaterializeResult:
    job = Thumbnails(wikidata.get_client(), commons.get_client(), config)
    return run_enrichment(app_db, job, config.limit, concurrency=1)  # a query per chunk


def definitions(settings: Settings) -> dg.Definitions:
    # 500 taxa: five WDQS queries and a few dozen Commons requests, a minute or two.
    return job_definitions(
        settings,
        SPEC,
        taxon_images,
        max_runtime=timedelta(hours=1),
        description="Refresh taxon pictures.",
        checks=[
            invariant_check(
                taxon_images,
                "images_without_licence_or_thumbnail",
                "SELECT 1 FROM pipelines.taxon_images WHERE status = 'found' "
                "AND (thumb_small_url IS NULL OR license_short_name IS NULL)",
                "Every found image has both thumbnails and a licence name to credit.",
                dg.AssetCheckSeverity.WARN,
            )
        ],
    )
