"""conservation_status: IUCN Red List categories, weekly; from IUCN v4 with a token, from GBIF
without one."""

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
from observing_pipelines.resources import AppDatabaseResource, GbifResource, IucnResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.conservation_status import (
    SPEC,
    ConservationRow,
    ConservationStatus,
    ConservationStatusOptions,
)


class ConservationStatusConfig(JobConfig, ConservationStatusOptions):
    """The pass's options (`ConservationStatusOptions`), from the launchpad."""


def taxon_conservation(pool: str) -> dg.AssetsDefinition:
    """The asset, holding the pool of the API it calls: `iucn` with a token, else `gbif`."""

    @dg.asset(
        key=["pipelines", "taxon_conservation"],
        deps=[identification_taxa],
        group_name="enrichment",
        kinds={"postgres"},
        pool=pool,
        retry_policy=retry_policy(300),
        description="IUCN Red List category of each accepted species-or-below taxon, with source.",
        metadata=asset_docs("Jobs", row_schema(ConservationRow, *RESULT_TIMES)),
    )
    def asset(
        config: ConservationStatusConfig,
        app_db: AppDatabaseResource,
        gbif: GbifResource,
        iucn: IucnResource,
    ) -> dg.MaterializeResult:
        iucn_client = iucn.get_client()
        source = iucn if iucn_client else gbif
        job = ConservationStatus(gbif.get_client(), iucn_client)
        return run_enrichment(
            app_db,
            job,
            config.limit,
            source.max_concurrency,
            source="iucn" if iucn_client else "gbif",
        )

    return asset


def definitions(settings: Settings) -> dg.Definitions:
    asset = taxon_conservation("iucn" if settings.iucn_token_configured else "gbif")
    # 2,000 taxa: about 7 minutes from GBIF; from IUCN (two calls a taxon, 2 a second) 35.
    return job_definitions(
        settings,
        SPEC,
        asset,
        max_runtime=timedelta(hours=2),
        description="Sync IUCN categories.",
        checks=[
            invariant_check(
                asset,
                "conservation_status_stale",
                "SELECT 1 FROM pipelines.taxon_conservation "
                "WHERE fetched_at < now() - interval '60 days'",
                "No conservation status is older than 60 days (the weekly sync keeps up).",
                dg.AssetCheckSeverity.WARN,
            )
        ],
    )
