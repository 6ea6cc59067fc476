"""resolve_taxa in Dagster: the asset, its job, its schedule, its retry policy and checks.

Wiring only; the pass itself is `taxa.resolve.TaxaResolver`, which the `resolve-taxa` command
runs too. The asset stands for "identifications stamped with accepted GBIF keys, and the
`community_ids` view refreshed from them".
"""

import dagster as dg

from observing_pipelines.jobs.common import (
    invariant_check,
    materialize_result,
    retry_policy,
    schedule,
)
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.taxa.resolve import ResolveOptions, TaxaResolver


class ResolveTaxaConfig(dg.Config):
    dry_run: bool = False
    """Enumerate and consult the caches only: no HTTP call, no write, no refresh."""
    limit: int | None = None
    """At most this many distinct (name, kingdom) pairs and taxonIDs per pass."""
    kingdom: str | None = None
    """Only identifications of this kingdom (e.g. Plantae)."""


@dg.asset(
    key=["ingester", "identification_taxa"],
    group_name="taxonomy",
    kinds={"postgres"},
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
    options = ResolveOptions(
        dry_run=config.dry_run,
        limit=config.limit,
        kingdom=config.kingdom,
        max_concurrency=gbif.max_concurrency,
    )
    with app_db.connect() as conn:
        report = TaxaResolver(conn, gbif.get_client(), wikidata.get_client(), options).run()
    context.log.info(f"resolve_taxa pass: {report.metadata()}")
    return materialize_result(report.metadata(), report.failures, dry_run=config.dry_run)


resolve_taxa_checks = [
    invariant_check(identification_taxa, "self_parent_taxa", "No cached taxon is its own parent."),
    invariant_check(
        identification_taxa,
        "stamps_without_taxon",
        "Every key we stamped on an identification has its row in ingester.taxa.",
    ),
]

resolve_taxa_job = dg.define_asset_job(
    "resolve_taxa",
    selection=[identification_taxa],
    description="Resolve identification names and taxonIDs to GBIF keys (today's Rust binary).",
)


def resolve_taxa_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return schedule(
        "resolve_taxa_every_5_minutes",
        resolve_taxa_job,
        cron,
        timezone,
        "Today's cadence (Cloud Scheduler fired the binary every 5 minutes).",
    )
