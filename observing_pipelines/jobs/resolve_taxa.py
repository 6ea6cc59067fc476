"""resolve_taxa in Dagster: the asset, its job, its schedule and its retry policy.

Wiring only; the pass itself is `taxa.resolve.TaxaResolver`, which the `resolve-taxa` command
runs too. The asset stands for "identifications stamped with accepted GBIF keys, and the
`community_ids` view refreshed from them".
"""

import dagster as dg

from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.taxa.resolve import ResolveOptions, TaxaResolver

# A failed step is retried after about 30 s, 60 s, 120 s (±jitter): long enough for a GBIF or
# database blip to pass, short enough to finish well before the next 5-minute tick.
RESOLVE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


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
    retry_policy=RESOLVE_RETRY_POLICY,
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
    metadata: dict[str, dg.RawMetadataValue] = dict(report.metadata())
    metadata |= {"dry_run": config.dry_run}
    if report.failures:
        metadata["failures_sample"] = dg.MetadataValue.md(
            "\n".join(f"- {failure}" for failure in report.failures)
        )
    context.log.info(f"resolve_taxa pass: {report.metadata()}")
    return dg.MaterializeResult(metadata=metadata)


resolve_taxa_job = dg.define_asset_job(
    "resolve_taxa",
    selection=[identification_taxa],
    description="Resolve identification names and taxonIDs to GBIF keys (today's Rust binary).",
)


def resolve_taxa_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="resolve_taxa_every_5_minutes",
        job=resolve_taxa_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Today's cadence (Cloud Scheduler fired the binary every 5 minutes).",
    )
