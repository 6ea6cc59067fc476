"""vernacular_names: every common name GBIF holds for each accepted taxon, weekly, and the one
the app shows in `ingester.taxa.vernacular_name`."""

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
from observing_pipelines.resources import AppDatabaseResource, GbifResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.vernacular_names import (
    SPEC,
    VernacularNames,
    VernacularNamesOptions,
    VernacularNamesRow,
)


class VernacularNamesConfig(JobConfig, VernacularNamesOptions):
    """The pass's options (`VernacularNamesOptions`), from the launchpad."""


@dg.asset(
    key=["pipelines", "taxon_vernacular_names"],
    deps=[identification_taxa],
    group_name="enrichment",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(120),
    description="GBIF's vernacular names of each accepted taxon; the preferred one in taxa.",
    metadata=asset_docs("Jobs", row_schema(VernacularNamesRow, *RESULT_TIMES)),
)
def taxon_vernacular_names(
    config: VernacularNamesConfig, app_db: AppDatabaseResource, gbif: GbifResource
) -> dg.MaterializeResult:
    job = VernacularNames(gbif.get_client())
    return run_enrichment(app_db, job, config.limit, gbif.max_concurrency)


def definitions(settings: Settings) -> dg.Definitions:
    # 2,000 taxa, two calls or more each at GBIF's 10 a second: about 7 minutes.
    return job_definitions(
        settings,
        SPEC,
        taxon_vernacular_names,
        max_runtime=timedelta(hours=1),
        description="Sync vernacular names from GBIF.",
        checks=[
            invariant_check(
                taxon_vernacular_names,
                "names_without_preferred_name",
                "SELECT 1 FROM pipelines.taxon_vernacular_names "
                "WHERE names <> '[]'::jsonb AND preferred_name IS NULL",
                "Every taxon with vernacular names has the one the app shows.",
            )
        ],
    )
