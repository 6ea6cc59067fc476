"""resolve_taxa in Dagster: the asset, its job, its schedule, its retry policy and checks.

Wiring only; the pass itself is `taxa.resolve_taxa.TaxaResolver`, which the `resolve-taxa` command
runs too. The asset stands for "identifications stamped with accepted GBIF keys, and the
`community_ids` view refreshed from them".
"""

from datetime import timedelta

import dagster as dg

from observing_pipelines import inputs
from observing_pipelines.db import identifications
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.jobs import community_ids
from observing_pipelines.jobs.common import (
    JobConfig,
    asset_docs,
    invariant_check,
    job_definitions,
    materialize_result,
    retry_policy,
    row_schema,
)
from observing_pipelines.jobs.community_ids import COMMUNITY_IDS
from observing_pipelines.jobs.sensing import (
    SensorCursor,
    new_work_status,
    runs_in_flight,
    waiting_run,
)
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.resolve_taxa import (
    SPEC,
    ResolveOptions,
    ResolveTaxaOptions,
    TaxaResolver,
    due_work,
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
            refresh_view=False,  # the community_ids asset, next in the run, on its budget
        )
        report = TaxaResolver(conn, gbif.get_client(), wikidata.get_client(), options).run()
    context.log.info(f"resolve_taxa pass: {report.metadata()}")
    return materialize_result(
        report.metadata(), report.failures, report.changes, dry_run=config.dry_run
    )


@dg.asset(
    key=["ingester", "identification_taxa"],
    group_name="taxonomy",
    kinds={"postgres"},
    pool="gbif",
    retry_policy=retry_policy(30),  # ~30 s, 60 s, 120 s: done well before the next 5-min tick
    description=(
        "Identifications stamped with accepted GBIF backbone keys, and their taxa and ancestry "
        "cached in ingester.taxa (ingester/community_ids, next in the run, makes them visible)."
    ),
    metadata=asset_docs("Jobs", row_schema(TaxonRow)),
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
    metadata=asset_docs("Operating", row_schema(TaxonRow)),
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


NEW_WORK_SENSOR = "resolve_taxa_new_work"


class NewWorkCursor(SensorCursor):
    writes: tuple[int, int] | None = None
    """The identification write counters (inserts, updates + deletes) last looked into."""
    inserts_at_request: int | None = None
    fingerprint: str = ""
    """The due work the last requested run was for."""


def new_work_sensor(settings: Settings, job_name: str) -> dg.SensorDefinition:
    """New identifications become a resolve_taxa run within a tick, at the cost of one catalog
    read a tick while nothing is written.

    Each tick: (1) the identification write counters (`identifications.identification_writes`);
    unchanged since the last look, nothing can be new. (2) The job's runs in flight: one that has
    not begun its work takes whatever is there when it does, and while one is going, writes
    that are no new identification are its own stamps. (3) Only then the probe: the due work
    (`taxa.resolve_taxa.due_work`, indexed), skipped when empty (names backing off are not
    due) or the same as the last request's. A request is one run for everything due, and the
    job's concurrency limit queues it behind a run in progress: a burst is one or two runs.
    Edits of stamped identifications are not in the probe: the scheduled pass finds them."""

    @dg.sensor(
        name=NEW_WORK_SENSOR,
        job_name=job_name,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=new_work_status(settings),
        description="Starts resolve_taxa as soon as unstamped identifications are due.",
    )
    def sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = NewWorkCursor.load(context.cursor)
        with app_db.kept_connection() as conn:
            with conn:
                writes = identifications.identification_writes(conn)
            if writes == cursor.writes:
                return dg.SkipReason("no identification written since the last look")
            runs = runs_in_flight(context.instance, job_name)
            if waiting := waiting_run(runs):
                cursor.inserts_at_request = writes[0]  # what it finds when it starts is its own
                return dg.SensorResult(
                    skip_reason=f"run {waiting.run_id} has yet to start: it takes the work",
                    cursor=cursor.dump(),
                )
            if runs and writes[0] == cursor.inserts_at_request:
                return dg.SkipReason(f"only run {runs[0].run_id}'s stamps since its request")
            due = due_work(conn)
        cursor.writes = writes
        if due.empty or due.fingerprint == cursor.fingerprint:
            why = "nothing unstamped is due" if due.empty else "the last request's work"
            return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=cursor.dump())
        cursor.inserts_at_request, cursor.fingerprint = writes[0], due.fingerprint
        request = dg.RunRequest(
            run_key=cursor.next_run_key(NEW_WORK_SENSOR),
            tags={
                "observing/due_names": str(due.names),
                "observing/due_taxon_ids": str(due.taxon_ids),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor.dump())

    return sensor


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
            downstream=[COMMUNITY_IDS],
        ),
        community_ids.definitions(settings),
        dg.Definitions(
            assets=[identification_taxa_by_kingdom],
            sensors=[new_work_sensor(settings, SPEC.name)],
        ),
    )
