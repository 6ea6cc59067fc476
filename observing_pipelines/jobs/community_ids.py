"""`ingester/community_ids`: the app's consensus view, refreshed on a budget.

The asset runs at the end of every resolve_taxa run (its job selects both), and in its own job,
`refresh_community_ids`, which the `community_ids` sensor requests when the view's sources were
written (by the ingester, by the jobs' stamps) and the budget allows. Either way the refresh is
`taxa.community_ids.refresh` with the budget: a refresh the budget does not allow yet is
deferred, not dropped, and the sensor comes back for it, by `COMMUNITY_IDS_MAX_LAG` at the
latest.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from observing_pipelines.jobs.common import asset_docs, asset_job
from observing_pipelines.jobs.sensing import SensorCursor, new_work_status, runs_in_flight
from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa import community_ids
from observing_pipelines.taxa.community_ids import RefreshBudget, Refreshed

COMMUNITY_IDS = dg.AssetKey(["ingester", "community_ids"])
LAUNCH_SECONDS = 5
"""About what a requested run takes to reach its step (dequeue, launch, code load;
`benchmarks/latency.py` measures 3 s)."""
JOB = "refresh_community_ids"
SENSOR = "community_ids"
CLOCK_MARGIN_SECONDS = 0.2
"""Past the budget's time by the database's clock, which may run a little ahead of ours."""


def budget(settings: Settings) -> RefreshBudget:
    return RefreshBudget(
        min_interval=timedelta(seconds=settings.community_ids_min_interval_seconds),
        factor=settings.community_ids_duration_factor,
        max_lag=timedelta(seconds=settings.community_ids_max_lag_seconds),
    )


def definitions(settings: Settings) -> dg.Definitions:
    refresh_budget = budget(settings)
    # The sensor asks for a refresh this long before the budget allows it, and the refresh
    # job's step waits out the rest: the view is refreshed when allowed, not a tick and a
    # launch later. resolve_taxa's runs never wait (the next stamps queue behind them).
    lead = timedelta(seconds=settings.sensor_interval_seconds + LAUNCH_SECONDS)

    @dg.asset(
        key=COMMUNITY_IDS,
        deps=[["ingester", "identification_taxa"], ["ingester", "identification_taxa_by_kingdom"]],
        group_name="taxonomy",
        kinds={"postgres"},
        output_required=False,
        metadata=asset_docs(
            "New work at once",
            dg.TableSchema(
                columns=[
                    dg.TableColumn("occurrence_uri", "text", description="one row per occurrence"),
                    dg.TableColumn("scientific_name", "text", description="the consensus name"),
                    dg.TableColumn("kingdom", "text"),
                    dg.TableColumn("accepted_taxon_key", "bigint"),
                    dg.TableColumn("id_count", "bigint", description="votes for the winner"),
                ]
            ),
        ),
        description=(
            "The app's consensus view (REFRESH MATERIALIZED VIEW CONCURRENTLY), refreshed when "
            "its sources changed, at most as often as the budget allows: "
            f"{refresh_budget.min_interval.seconds} s or {refresh_budget.factor:g}x its last "
            f"duration apart, never more than {refresh_budget.max_lag.seconds} s late."
        ),
    )
    def community_ids_view(
        context: dg.AssetExecutionContext, app_db: AppDatabaseResource
    ) -> Iterator[dg.MaterializeResult]:
        with app_db.connect() as conn:
            state = community_ids.refresh_state(conn)
            early = state.allowed_at(refresh_budget) - datetime.now(UTC)
            if state.owed and context.job_name == JOB and timedelta(0) < early <= lead:
                context.log.info(f"Waiting {early.total_seconds():.1f} s for the refresh budget")
                time.sleep(early.total_seconds() + CLOCK_MARGIN_SECONDS)
            with conn:
                outcome = community_ids.refresh(conn, refresh_budget)
        if not isinstance(outcome, Refreshed):
            until = f" until {outcome.until:%H:%M:%S}" if outcome.until else ""
            context.log.info(f"community_ids not refreshed: {outcome.reason}{until}")
            return
        refresh = outcome.refresh
        metadata: dict[str, float] = {
            "refresh_seconds": round(refresh.seconds, 3),
            "budget_seconds": refresh_budget.wait_after(refresh).total_seconds(),
            "source_writes": refresh.source_writes,
        }
        if outcome.lag_seconds is not None:
            metadata["lag_seconds"] = round(outcome.lag_seconds, 3)
        yield dg.MaterializeResult(metadata=metadata)

    job = asset_job(
        JOB,
        community_ids_view,
        max_runtime=timedelta(hours=1),
        description="Refresh community_ids, when its sources changed and the budget allows.",
    )

    @dg.sensor(
        name=SENSOR,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=new_work_status(settings),
        description=(
            "Requests a refresh of community_ids when its sources were written since the last "
            "one and the refresh budget allows it, or will by the time the run starts (two "
            "catalog-cheap reads a tick)."
        ),
    )
    def community_ids_sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
    ) -> dg.SensorResult | dg.SkipReason:
        with app_db.kept_connection() as conn:
            state = community_ids.refresh_state(conn)
        if not state.owed:
            return dg.SkipReason("community_ids is current")
        allowed_at = state.allowed_at(refresh_budget)
        if allowed_at > datetime.now(UTC) + lead:
            return dg.SkipReason(f"owed; the budget allows a refresh at {allowed_at:%H:%M:%S}Z")
        if runs := runs_in_flight(context.instance, JOB):
            return dg.SkipReason(f"run {runs[0].run_id} will refresh it")
        cursor = SensorCursor.load(context.cursor)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=cursor.next_run_key(SENSOR))],
            cursor=cursor.dump(),
        )

    return dg.Definitions(assets=[community_ids_view], jobs=[job], sensors=[community_ids_sensor])
