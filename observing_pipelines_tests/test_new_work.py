"""New work becomes runs at once: the new-work sensor, the refresh budget of community_ids and
its sensor, evaluated against the test database and a Dagster instance on Postgres."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from observing_pipelines.db import identifications, view_refreshes
from observing_pipelines.db.view_refreshes import ViewRefresh
from observing_pipelines.definitions import defs
from observing_pipelines.jobs import community_ids as community_ids_job
from observing_pipelines.jobs import resolve_taxa
from observing_pipelines.jobs.resolve_taxa import NEW_WORK_SENSOR, new_work_sensor
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.settings import Settings
from observing_pipelines.taxa import community_ids
from observing_pipelines.taxa.community_ids import Deferred, RefreshBudget, Refreshed
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver, due_work
from observing_pipelines_tests import fakes
from observing_pipelines_tests.test_resolve_taxa import identify

SETTINGS = Settings.from_env({})
RESOLVE_TAXA = "resolve_taxa"


def arrive(conn, *rows) -> list[str]:
    """Identifications inserted as the ingester does, their write counts published at once
    (the ingester's are within a second or so: its session goes idle between inserts)."""
    uris = identify(conn, *rows)
    with conn:
        identifications.publish_own_writes(conn)
    return uris


def tick(sensor: dg.SensorDefinition, instance, db_url, cursor: str | None = None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"app_db": AppDatabaseResource(url=db_url)},
    )
    return sensor(context)


def requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []


def skip_reason(result) -> str:
    if isinstance(result, dg.SkipReason):
        return result.skip_message or ""
    assert isinstance(result, dg.SensorResult) and not result.run_requests, result
    return (result.skip_reason.skip_message or "") if result.skip_reason else ""


def cursor_of(result, previous: str | None) -> str | None:
    if isinstance(result, dg.SensorResult) and result.cursor is not None:
        return result.cursor
    return previous


def add_run(instance, status: dg.DagsterRunStatus, job_name: str = RESOLVE_TAXA) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=job_name, run_id=make_new_run_id(), status=status)
    return instance.add_run(run)


@pytest.fixture
def sensor() -> dg.SensorDefinition:
    return new_work_sensor(SETTINGS, RESOLVE_TAXA)


def resolve(conn, gbif_client, wikidata_client) -> None:
    TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions(refresh_view=False)).run()


# -- the new-work sensor -----------------------------------------------------------------------


def test_no_work_no_run(sensor, instance, db_url):
    first = tick(sensor, instance, db_url)
    assert skip_reason(first) == "nothing unstamped is due"
    second = tick(sensor, instance, db_url, cursor_of(first, None))
    assert skip_reason(second) == "no identification written since the last look"


def test_a_burst_becomes_one_run_and_waits_behind_the_run_in_progress(
    sensor, instance, db_url, conn
):
    arrive(conn, *[(f"Species number{n}", "Plantae") for n in range(200)])
    first = tick(sensor, instance, db_url)
    (request,) = requests(first)
    assert request.run_key == f"{NEW_WORK_SENSOR}:1"
    assert request.tags["observing/due_names"] == "200"
    cursor = cursor_of(first, None)

    # The requested run is yet to start: more arrivals are its work, not another run's.
    queued = add_run(instance, dg.DagsterRunStatus.NOT_STARTED)
    arrive(conn, ("Late species", "Plantae"))
    waiting = tick(sensor, instance, db_url, cursor)
    assert skip_reason(waiting) == f"run {queued.run_id} has yet to start: it takes the work"
    cursor = cursor_of(waiting, cursor)

    # Once it is going, its own stamps are no new work, but an arrival is: one more run.
    instance.delete_run(queued.run_id)
    going = add_run(instance, dg.DagsterRunStatus.STARTED)
    stamp(conn, "Species number0")
    stamping = tick(sensor, instance, db_url, cursor)
    assert skip_reason(stamping) == f"only run {going.run_id}'s stamps since its request"
    cursor = cursor_of(stamping, cursor)
    arrive(conn, ("Later species", "Plantae"))
    again = tick(sensor, instance, db_url, cursor)
    (second,) = requests(again)
    assert second.run_key == f"{NEW_WORK_SENSOR}:2"
    assert second.tags["observing/due_names"] == "201"  # 199 left of the burst, and two more
    stamp(conn, "Species number1")
    assert skip_reason(tick(sensor, instance, db_url, cursor_of(again, cursor))) == (
        f"only run {going.run_id}'s stamps since its request"
    )


def stamp(conn, name: str) -> None:
    """A run's stamp: an update of identifications."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ingester.identifications SET accepted_taxon_key = 1 WHERE scientific_name = %s",
            (name,),
        )
    with conn:
        identifications.publish_own_writes(conn)


def test_names_backing_off_are_no_work(
    sensor, instance, db_url, conn, fake_gbif, gbif_client, wikidata_client
):
    arrive(conn, ("Nomen ignotum", "Plantae"))  # GBIF knows no such name: unmatched, 1 day
    resolve(conn, gbif_client, wikidata_client)
    assert due_work(conn).empty
    arrive(conn, ("Nomen ignotum", "Plantae"))  # the same name again, still backing off
    assert skip_reason(tick(sensor, instance, db_url)) == "nothing unstamped is due"


def test_a_remembered_answer_is_work_without_asking(
    sensor, instance, db_url, conn, fake_gbif, gbif_client, wikidata_client
):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    arrive(conn, ("Helianthus annuus", "Plantae"))
    resolve(conn, gbif_client, wikidata_client)
    arrive(conn, ("Helianthus annuus", "Plantae"))  # a second user says the same
    work = due_work(conn)
    assert (work.names, work.taxon_ids) == (1, 0)
    (request,) = requests(tick(sensor, instance, db_url))
    assert request.tags["observing/due_names"] == "1"


def test_the_run_key_never_repeats_and_a_replayed_tick_repeats_it(sensor, instance, db_url, conn):
    """A tick the daemon evaluates again after a restart starts from the saved cursor and
    makes the same run key, which Dagster runs once; a later tick makes a new one."""
    arrive(conn, ("Alpha species", "Plantae"))
    first = tick(sensor, instance, db_url)
    replayed = tick(sensor, instance, db_url)
    assert [r.run_key for r in requests(first)] == [r.run_key for r in requests(replayed)]
    cursor = cursor_of(first, None)
    same_work = tick(sensor, instance, db_url, cursor)
    assert skip_reason(same_work) in {
        "no identification written since the last look",
        "the last request's work",
    }
    arrive(conn, ("Beta species", "Plantae"))
    (later,) = requests(tick(sensor, instance, db_url, cursor))
    keys = {r.run_key for r in requests(first)} | {later.run_key}
    assert keys == {f"{NEW_WORK_SENSOR}:1", f"{NEW_WORK_SENSOR}:2"}


def test_a_cursor_of_another_shape_starts_afresh(sensor, instance, db_url, conn):
    arrive(conn, ("Alpha species", "Plantae"))
    (request,) = requests(tick(sensor, instance, db_url, cursor="not json {"))
    assert request.run_key == f"{NEW_WORK_SENSOR}:1"


def test_the_sensor_keeps_one_connection_across_ticks(sensor, instance, db_url, conn):
    def sensor_sessions() -> int:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'observing_pipelines_sensors'"
            )
            return cur.fetchone()[0]

    cursor = None
    for n in range(5):
        arrive(conn, (f"Species tick{n}", "Plantae"))
        result = tick(sensor, instance, db_url, cursor)
        cursor = cursor_of(result, cursor)
    assert sensor_sessions() == 1


def test_the_sensors_are_off_with_new_work_sensors_false():
    off = Settings.from_env({"NEW_WORK_SENSORS": "false"})
    assert new_work_sensor(off, RESOLVE_TAXA).default_status == dg.DefaultSensorStatus.STOPPED
    (view_sensor,) = community_ids_job.definitions(off).sensors or ()
    assert view_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    interval = new_work_sensor(Settings.from_env({"SENSOR_INTERVAL_SECONDS": "3"}), RESOLVE_TAXA)
    assert interval.minimum_interval_seconds == 3
    assert new_work_sensor(SETTINGS, RESOLVE_TAXA).minimum_interval_seconds == 10


# -- community_ids on a budget -----------------------------------------------------------------


def test_the_budget_paces_by_duration_and_is_capped_by_the_max_lag():
    budget = RefreshBudget()
    now = datetime.now(UTC)
    assert budget.wait_after(ViewRefresh(1, now, 0.2)) == timedelta(seconds=30)
    assert budget.wait_after(ViewRefresh(1, now, 14.0)) == timedelta(seconds=140)
    assert budget.wait_after(ViewRefresh(1, now, 60.0)) == timedelta(minutes=5)


def refresh(conn, budget: RefreshBudget | None = None) -> Refreshed | Deferred:
    with conn:
        return community_ids.refresh(conn, budget)


def test_a_refresh_is_deferred_within_the_budget_and_made_after_it(conn, db_url):
    budget = RefreshBudget(min_interval=timedelta(minutes=10), max_lag=timedelta(seconds=1))
    assert isinstance(refresh(conn, budget), Refreshed)
    assert isinstance(refresh(conn, budget), Deferred)  # nothing written
    arrive(conn, ("Alpha species", "Plantae"))
    deferred = refresh(conn, budget)
    assert isinstance(deferred, Deferred) and deferred.until is not None
    assert deferred.reason == "the refresh budget"
    state = community_ids.refresh_state(conn)
    assert state.owed
    assert state.allowed_at(budget) == deferred.until
    with conn, conn.cursor() as cur:  # the max lag (1 s) has passed
        cur.execute("UPDATE pipelines.view_refreshes SET refreshed_at = now() - interval '2 s'")
    assert isinstance(refresh(conn, budget), Refreshed)
    assert not community_ids.refresh_state(conn).owed


def test_a_refresh_is_recorded_at_its_end_not_its_transaction_start(conn):
    """The budget counts its wait from the end of a refresh: a 14-second refresh recorded at
    its transaction's start would leave 10x its duration for everything, not 11x."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.3)")
        done = view_refreshes.record_refresh(conn, community_ids.VIEW, 1, 0.3)
        cur.execute("SELECT now()")
        (started,) = cur.fetchone()
    assert (done.refreshed_at - started).total_seconds() >= 0.3


def test_the_sensor_requests_a_refresh_only_when_owed_and_allowed(instance, db_url, conn):
    settings = Settings.from_env({"COMMUNITY_IDS_MIN_INTERVAL": "60"})
    (sensor,) = community_ids_job.definitions(settings).sensors or ()
    first = tick(sensor, instance, db_url)  # never refreshed: owed, allowed
    assert [r.run_key for r in requests(first)] == ["community_ids:1"]
    cursor = cursor_of(first, None)
    refresh(conn)
    assert skip_reason(tick(sensor, instance, db_url, cursor)) == "community_ids is current"
    arrive(conn, ("Alpha species", "Plantae"))
    budgeted = skip_reason(tick(sensor, instance, db_url, cursor))
    assert budgeted.startswith("owed; the budget allows a refresh at ")
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.view_refreshes SET refreshed_at = now() - interval '61 s'")
    queued = add_run(instance, dg.DagsterRunStatus.NOT_STARTED, community_ids_job.JOB)
    assert skip_reason(tick(sensor, instance, db_url, cursor)) == (
        f"run {queued.run_id} will refresh it"
    )
    instance.delete_run(queued.run_id)
    assert [r.run_key for r in requests(tick(sensor, instance, db_url, cursor))] == [
        "community_ids:2"
    ]


def test_a_refresh_is_asked_for_ahead_and_waits_out_the_budget(instance, db_url, conn):
    """The sensor asks for the refresh a tick and a launch before the budget allows it; the
    refresh job's step waits out the rest, then refreshes: the view is refreshed on time."""
    settings = Settings.from_env({"COMMUNITY_IDS_MIN_INTERVAL": "60"})
    refresh(conn)
    arrive(conn, ("Alpha species", "Plantae"))
    with conn, conn.cursor() as cur:  # allowed in 3 s: within the lead of 10 + 5 s
        cur.execute("UPDATE pipelines.view_refreshes SET refreshed_at = now() - interval '57 s'")
    definitions = community_ids_job.definitions(settings)
    (sensor,) = definitions.sensors or ()
    assert [r.run_key for r in requests(tick(sensor, instance, db_url))] == ["community_ids:1"]
    job = dg.Definitions.merge(
        definitions, dg.Definitions(resources={"app_db": AppDatabaseResource(url=db_url)})
    ).resolve_job_def(community_ids_job.JOB)
    started = time.monotonic()
    result = job.execute_in_process()
    assert 2.5 <= time.monotonic() - started < 30
    (refreshed,) = result.asset_materializations_for_node("ingester__community_ids")
    assert refreshed.metadata["lag_seconds"].value >= 60
    assert not community_ids.refresh_state(conn).owed


def test_a_re_resolve_still_refreshes(conn, db_url, fake_gbif, gbif_server, wikidata_server):
    """resolve_taxa's run refreshes the view after its stamps when the budget allows; a
    re-resolve soon after is deferred by the budget, and the next refresh shows its key."""
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    identify(conn, ("Helianthus annuus", "Plantae"))
    job = dg.Definitions.merge(
        resolve_taxa.definitions(SETTINGS),
        dg.Definitions(
            resources={
                "app_db": AppDatabaseResource(url=db_url),
                "gbif": GbifResource(base_url=gbif_server.url_for(""), min_interval_ms=0),
                "wikidata": WikidataResource(
                    base_url=wikidata_server.url_for("/sparql"), min_interval_ms=0
                ),
            }
        ),
    ).resolve_job_def(RESOLVE_TAXA)
    first = job.execute_in_process()
    assert view_keys(conn) == [9206251]
    assert first.asset_materializations_for_node("ingester__community_ids")

    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", (1, "Helianthus annuus", "SPECIES"), fakes.HELIANTHUS_LINEAGE),
    )
    ops = {"ingester__identification_taxa": {"config": {"names": ["Helianthus annuus"]}}}
    second = job.execute_in_process(run_config={"ops": ops})
    assert not second.asset_materializations_for_node("ingester__community_ids")  # budget
    assert community_ids.refresh_state(conn).owed
    assert view_keys(conn) == [9206251]
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.view_refreshes SET refreshed_at = now() - interval '31 s'")
    third = dg.materialize(
        community_ids_job.definitions(SETTINGS).assets or (),
        resources={"app_db": AppDatabaseResource(url=db_url)},
    )
    (refreshed,) = third.asset_materializations_for_node("ingester__community_ids")
    assert refreshed.metadata["lag_seconds"].value >= 31
    assert view_keys(conn) == [1]


def view_keys(conn) -> list[int | None]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT accepted_taxon_key FROM ingester.community_ids ORDER BY 1")
        return [key for (key,) in cur.fetchall()]
