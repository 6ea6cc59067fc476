"""The code location in Dagster: definitions, the asset run in process, and the CLI on Postgres."""

from __future__ import annotations

import shutil
import subprocess
import sys

import dagster as dg
import psycopg2

from observing_pipelines.definitions import JOBS, defs
from observing_pipelines.jobs import community_ids, resolve_taxa
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.resources import AppDatabaseResource, GbifResource, WikidataResource
from observing_pipelines.settings import Settings
from observing_pipelines_tests import fakes
from observing_pipelines_tests.cloud_sql import relations
from observing_pipelines_tests.services import dagster_env
from observing_pipelines_tests.support import PROJECT_ROOT, invariant_queries
from observing_pipelines_tests.test_resolve_taxa import identify, keys


def test_definitions_load_with_schedule_and_resources():
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"resolve_taxa"}
    schedule = repository.get_schedule_def("resolve_taxa_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("*/5 * * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert set(repository.get_top_level_resources()) >= {"app_db", "gbif", "wikidata"}


def test_every_job_has_its_schedule():
    repository = defs.get_repository_def()
    crons = {s.job_name: s.cron_schedule for s in repository.schedule_defs}
    assert crons == {module.SPEC.name: module.SPEC.cron for module in JOBS}
    assert len(crons) == 5
    jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert jobs == set(crons) | {"refresh_community_ids"}  # which its sensor runs
    assert all(
        s.default_status == dg.DefaultScheduleStatus.RUNNING for s in repository.schedule_defs
    )


def test_enrichment_assets_and_their_checks_run_green(
    conn,
    db_url,
    fake_gbif,
    fake_wikidata,
    fake_commons,
    gbif_server,
    wikidata_server,
    commons_server,
):
    from observing_pipelines.resources import CommonsResource, IucnResource

    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    fake_gbif.add_key(
        9206251, fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    )
    fake_gbif.red_list[9206251] = {"category": "LEAST_CONCERN", "code": "LC"}
    fake_wikidata.images[9206251] = ("Q171497", [("Sunflower.jpg", "normal")])
    fake_commons.files["Sunflower.jpg"] = fakes.CommonsFile()
    fake_gbif.vernacular_names[9206251] = [
        {"vernacularName": "Sonnenblume", "language": "deu", "source": "Catalogue of Life"},
        {"vernacularName": "sunflower", "language": "eng", "source": "Catalogue of Life"},
    ]
    identify(conn, ("Helianthus annuus", "Plantae"))
    http = {"min_interval_ms": 0}
    graph = defs.resolve_asset_graph()
    unpartitioned = [key for key in graph.get_all_asset_keys() if not graph.get(key).partitions_def]
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        resources={
            "app_db": AppDatabaseResource(url=db_url),
            "gbif": GbifResource(base_url=gbif_server.url_for(""), **http),
            "wikidata": WikidataResource(base_url=wikidata_server.url_for("/sparql"), **http),
            "commons": CommonsResource(base_url=commons_server.url_for("/w/api.php"), **http),
            "iucn": IucnResource(),
        },
        selection=unpartitioned,
    )
    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(invariant_queries(), True)
    assert len(checks) == 6
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    assert metadata["pipelines/taxon_images"]["with_image"] >= 1
    assert metadata["pipelines/taxon_conservation"]["source"] == "gbif"
    assert metadata["pipelines/taxon_changes"]["taxa_seen"] == 0  # just fetched: not stale
    assert metadata["pipelines/taxon_vernacular_names"]["with_name"] == 1
    assert set(metadata) == {key.to_user_string() for key in unpartitioned}


def test_schedule_cadence_and_timezone_are_configurable():
    settings = Settings.from_env(
        {"RESOLVE_TAXA_CRON": "0 * * * *", "SCHEDULE_TIMEZONE": "Europe/Berlin"}
    )
    (schedule,) = resolve_taxa.definitions(settings).schedules or ()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 * * * *", "Europe/Berlin")


def test_asset_materializes_with_run_metadata(
    conn, db_url, fake_gbif, gbif_server, wikidata_server
):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    uris = identify(conn, ("Helianthus annuus", "Plantae"), ("Aaasdfadsf", None))
    result = dg.materialize(
        [identification_taxa, *(community_ids.definitions(Settings.from_env({})).assets or ())],
        resources={
            "app_db": AppDatabaseResource(url=db_url),
            "gbif": GbifResource(base_url=gbif_server.url_for(""), min_interval_ms=0),
            "wikidata": WikidataResource(
                base_url=wikidata_server.url_for("/sparql"), min_interval_ms=0
            ),
        },
    )
    assert result.success
    assert keys(conn, uris) == [9206251, None]
    metadata = result.asset_materializations_for_node("ingester__identification_taxa")[0].metadata
    values = {k: v.value for k, v in metadata.items()}
    assert (
        values["names_seen"] == 2
        and values["names_resolved"] == 1
        and values["names_not_found"] == 1
    )
    assert values["rows_stamped"] == 1 and values["errors"] == 0
    assert values["http_calls"] == 1  # both names in one batch POST (the resource's default)
    assert values["community_ids_refreshed"] is False and values["seconds"] >= 0
    (view,) = result.asset_materializations_for_node("ingester__community_ids")
    assert set(view.metadata) == {"refresh_seconds", "budget_seconds", "source_writes"}
    assert view.metadata["budget_seconds"].value == 30  # a first refresh: the minimum interval
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ingester.community_ids WHERE accepted_taxon_key = 9206251"
        )
        assert cur.fetchone()[0] == 1


def test_dagster_job_execute_against_a_postgres_instance(
    tmp_path, conn, db_url, jobs_url, fake_gbif, gbif_server, wikidata_server
):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    uris = identify(conn, ("Helianthus annuus", "Plantae"))
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = dagster_env(
        jobs_url,  # as production runs it
        tmp_path,
        {
            "GBIF_BASE_URL": gbif_server.url_for(""),
            "WIKIDATA_SPARQL_URL": wikidata_server.url_for("/sparql"),
        },
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "observing_pipelines.definitions",
            "-j",
            "resolve_taxa",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert keys(conn, uris) == [9206251]
    storage = psycopg2.connect(db_url)
    try:
        with storage, storage.cursor() as cur:
            cur.execute("SELECT pipeline_name, status FROM dagster.runs")
            assert cur.fetchall() == [("resolve_taxa", "SUCCESS")]
    finally:
        storage.close()
    assert relations(db_url, "public") == set()  # PostGIS's own tables aside
