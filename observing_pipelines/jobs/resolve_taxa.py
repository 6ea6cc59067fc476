"""resolve_taxa in Dagster: the asset, its job, its schedule, its retry policy and checks.

Wiring only; the pass itself is `taxa.resolve.TaxaResolver`, which the `resolve-taxa` command
runs too. The asset stands for "identifications stamped with accepted GBIF keys, and the
`community_ids` view refreshed from them".
"""

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
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.taxa.resolve import ResolveOptions, TaxaResolver, forget_answers

KINGDOMS = dg.StaticPartitionsDefinition(list(inputs.KINGDOMS))
"""The partitions of "backfill kingdom Y"."""


class ResolveTaxaConfig(JobConfig):
    dry_run: bool = False
    """Enumerate and consult the caches only: no HTTP call, no write, no refresh."""
    limit: inputs.Limit | None = None
    """Ask GBIF about at most this many names (and as many taxonIDs) per pass."""
    kingdom: inputs.Kingdom | None = None
    """Only identifications of this kingdom (one of GBIF's, e.g. Plantae)."""
    names: inputs.Names = []
    """Re-resolve these names: forget their cached answers and stamps, ask GBIF afresh."""
    taxon_keys: inputs.TaxonKeys = []
    """Re-resolve the identifications stamped with these GBIF keys, likewise."""


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
            dry_run=config.dry_run,
            limit=config.limit,
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
    invariant_check(identification_taxa, "self_parent_taxa", "No cached taxon is its own parent."),
    invariant_check(
        identification_taxa,
        "stamps_without_taxon",
        "Every key we stamped on an identification has its row in ingester.taxa.",
    ),
]

# A pass asks GBIF about 36,000 names an hour at 10 requests a second: three hours take a
# 100,000-name backlog; a longer one goes on where the failed run's saved batches end.
resolve_taxa_job = asset_job(
    "resolve_taxa",
    identification_taxa,
    timedelta(hours=3),
    "Resolve identification names and taxonIDs to GBIF keys (today's Rust binary).",
)


def resolve_taxa_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule(
        "resolve_taxa_every_5_minutes",
        resolve_taxa_job,
        cron,
        timezone,
        "Today's cadence (Cloud Scheduler fired the binary every 5 minutes).",
    )
