"""resolve_taxa in Dagster: the asset, its job, its schedule, its retry policy and checks.

Wiring only; the pass itself is `taxa.resolve_taxa.TaxaResolver`, which the `resolve-taxa` command
runs too. The asset stands for "identifications stamped with accepted GBIF keys, and the
`community_ids` view refreshed from them".
"""

from datetime import timedelta

import dagster as dg

from observing_pipelines import inputs
from observing_pipelines.jobs.common import (
    JobConfig,
    invariant_check,
    job_definitions,
    materialize_result,
    retry_policy,
)
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.resolve_taxa import (
    SPEC,
    ResolveOptions,
    ResolveTaxaOptions,
    TaxaResolver,
    forget_answers,
)

KINGDOMS = dg.StaticPartitionsDefinition(list(inputs.KINGDOMS))
"""The partitions of "backfill kingdom Y"."""


class ResolveTaxaConfig(JobConfig, ResolveTaxaOptions):
    """The pass's options (`ResolveTaxaOptions`), from the launchpad."""


def _resolve(
    context: dg.AssetExecutionContext,
    config: ResolveTaxaConfig,
    app_db: AppDatabaseResource,
    gbif: GbifResource,
    wikidata: WikidataResource,
    kingdom: str | None,
) -> dg.MaterializeResult:
    with app_db.connect() as conn:
        forced = frozenset[str]()
        if (config.names or config.taxon_keys) and not config.dry_run:
            forced = forget_answers(conn, config.names, config.taxon_keys)
        options = ResolveOptions(
            **config.model_dump(exclude={"kingdom"}),
            kingdom=kingdom,
            max_concurrency=gbif.max_concurrency,
            force_names=forced,
        )
        report = TaxaResolver(conn, gbif.get_client(), wikidata.get_client(), options).run()
    context.log.info(f"resolve_taxa pass: {report.metadata()}")
    return materialize_result(report.metadata(), report.failures, dry_run=config.dry_run)


@dg.asset(
    key=["ingester", "identification_taxa"],
    group_name="taxonomy",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(30),  # ~30 s, 60 s, 120 s: done well before the next 5-min tick
    description=(
        "Identifications stamped with accepted GBIF backbone keys, their taxa and ancestry "
        "cached in ingester.taxa, and ingester.community_ids refreshed."
    ),
)
def identification_taxa(
    context: dg.AssetExecutionContext,
    config: ResolveTaxaConfig,
    app_db: AppDatabaseResource,
    gbif: GbifResource,
    wikidata: WikidataResource,
) -> dg.MaterializeResult:
    return _resolve(context, config, app_db, gbif, wikidata, config.kingdom)


@dg.asset(
    key=["ingester", "identification_taxa_by_kingdom"],
    partitions_def=KINGDOMS,
    group_name="taxonomy",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(30),
    description="resolve_taxa for one kingdom: backfill a kingdom from the UI or GraphQL.",
)
def identification_taxa_by_kingdom(
    context: dg.AssetExecutionContext,
    config: ResolveTaxaConfig,
    app_db: AppDatabaseResource,
    gbif: GbifResource,
    wikidata: WikidataResource,
) -> dg.MaterializeResult:
    return _resolve(context, config, app_db, gbif, wikidata, context.partition_key)


resolve_taxa_checks = [
    invariant_check(
        identification_taxa,
        "self_parent_taxa",
        "SELECT 1 FROM ingester.taxa WHERE parent_key = taxon_key",
        "No cached taxon is its own parent.",
    ),
    invariant_check(
        identification_taxa,
        "stamps_without_taxon",
        """SELECT 1 FROM pipelines.identification_stamps s
        LEFT JOIN ingester.taxa t ON t.taxon_key = s.accepted_taxon_key
        WHERE t.taxon_key IS NULL""",
        "Every key we stamped on an identification has its row in ingester.taxa.",
    ),
]


def definitions(settings: Settings) -> dg.Definitions:
    # A pass asks GBIF about 36,000 names an hour at 10 requests a second: three hours take a
    # 100,000-name backlog; a longer one goes on where the failed run's saved batches end.
    return dg.Definitions.merge(
        job_definitions(
            settings,
            SPEC,
            identification_taxa,
            max_runtime=timedelta(hours=3),
            description="Resolve identification names and taxonIDs to GBIF keys.",
            checks=resolve_taxa_checks,
        ),
        dg.Definitions(assets=[identification_taxa_by_kingdom]),
    )
