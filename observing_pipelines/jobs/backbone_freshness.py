"""backbone_freshness: the most-used taxa re-checked against the GBIF backbone, daily."""

from datetime import timedelta

import dagster as dg

from observing_pipelines.jobs.common import (
    JobConfig,
    asset_docs,
    invariant_check,
    job_definitions,
    retry_policy,
    run_enrichment,
)
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, GbifResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.backbone_freshness import (
    SPEC,
    BackboneFreshness,
    BackboneFreshnessOptions,
)


class BackboneFreshnessConfig(JobConfig, BackboneFreshnessOptions):
    """The pass's options (`BackboneFreshnessOptions`), from the launchpad."""


@dg.asset(
    key=["pipelines", "taxon_changes"],
    deps=[identification_taxa],
    group_name="taxonomy",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(120),
    description="Hot taxa re-checked against GBIF; changes logged, identifications re-stamped.",
    metadata=asset_docs(
        "Jobs",
        dg.TableSchema(
            columns=[
                dg.TableColumn("id", "bigint"),
                dg.TableColumn("taxon_key", "bigint"),
                dg.TableColumn("reasons", "text[]", description="what moved: renamed, ..."),
                dg.TableColumn("old_values", "jsonb"),
                dg.TableColumn("new_values", "jsonb", description="NULL: the key is gone"),
                dg.TableColumn("identifications_restamped", "integer"),
                dg.TableColumn("changed_at", "timestamptz"),
            ]
        ),
    ),
)
def taxon_changes(
    config: BackboneFreshnessConfig, app_db: AppDatabaseResource, gbif: GbifResource
) -> dg.MaterializeResult:
    job = BackboneFreshness(gbif.get_client(), config)
    return run_enrichment(app_db, job, config.limit, gbif.max_concurrency)


def definitions(settings: Settings) -> dg.Definitions:
    # 2,000 re-checks at GBIF's 10 a second: under 4 minutes.
    return job_definitions(
        settings,
        SPEC,
        taxon_changes,
        max_runtime=timedelta(hours=1),
        description="Re-check hot taxa on GBIF.",
        checks=[
            invariant_check(
                taxon_changes,
                "stamps_on_unusable_taxa",
                """SELECT 1 FROM pipelines.identification_stamps s
                JOIN ingester.taxa t ON t.taxon_key = s.accepted_taxon_key
                WHERE t.status IN ('NOT_FOUND', 'SYNONYM')""",
                "No identification we stamped points at a key GBIF dropped or made a synonym.",
            )
        ],
    )
