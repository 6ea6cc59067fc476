"""The roles `migrate` sets up, on the database as Cloud SQL has it (the template: production's
shape, migrated by an admin who is no superuser): each grant the jobs need, each denial, a
whole pass and Dagster's storage as `jobs_runtime`, and nothing left of the privileges
`migrate` needed for a moment."""

from __future__ import annotations

import pytest
from psycopg2 import errors

from observing_pipelines.db import migrate
from observing_pipelines.db.connection import connect
from observing_pipelines.db.dagster_storage import AppDatabaseDagsterStorage, dagster_storage_url
from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests import cloud_sql, fakes
from observing_pipelines_tests.cloud_sql import ADMIN
from observing_pipelines_tests.test_resolve_taxa import identify, keys


def as_role(conn, role: str, statement: str, params=()) -> None:
    """Run one statement as `role` (SET ROLE drops the superuser's rights), then roll back."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE {role}")
            cur.execute(statement, params)
    finally:
        conn.rollback()


ADD_FAILURE = (
    "INSERT INTO pipelines.job_item_failures (job, item_key, last_error, next_attempt_at) "
    "VALUES ('j', 1, 'e', now())"
)
ALLOWED = {
    "jobs_runtime": [
        "SELECT count(*) FROM ingester.identifications",
        "SELECT count(*) FROM ingester.occurrences",
        "UPDATE ingester.identifications SET accepted_taxon_key = 1, indexed_at = now()",
        "INSERT INTO ingester.taxa (taxon_key, scientific_name, rank, status) "
        "VALUES (1, 'x', 'kingdom', 'ACCEPTED')",
        "UPDATE ingester.taxa SET fetched_at = now()",
        "UPDATE ingester.taxa SET vernacular_name = 'x'",
        "SELECT pipelines.refresh_community_ids()",
        ADD_FAILURE,
        "DELETE FROM pipelines.resolution_attempts",
        "CREATE TABLE pipelines.scratch (x int)",
        "SELECT count(*) FROM dagster.runs",
        "INSERT INTO dagster.kvs (key, value) VALUES ('probe', 'x')",
    ],
    "appview_runtime": [
        "SELECT count(*) FROM pipelines.taxon_images",
        "SELECT count(*) FROM pipelines.taxon_conservation",
    ],
}
DENIED = {
    "jobs_runtime": [
        "INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid, "
        "scientific_name, date_identified) VALUES ('u', 'c', 'd', 's', 'c', 'n', now())",
        "DELETE FROM ingester.identifications",
        "UPDATE ingester.identifications SET scientific_name = 'x'",
        "DELETE FROM ingester.taxa",
        "UPDATE ingester.taxa SET extinct = true",
        "DELETE FROM ingester.occurrences",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY ingester.community_ids",
        "SELECT count(*) FROM appview.oauth_sessions",
    ],
    "appview_runtime": [
        ADD_FAILURE,
        "UPDATE pipelines.taxon_images SET artist = 'x'",
        "DELETE FROM pipelines.taxon_conservation",
        "SELECT count(*) FROM pipelines.resolution_attempts",
        "CREATE TABLE pipelines.scratch (x int)",
        "SELECT count(*) FROM dagster.runs",
        "SELECT pipelines.refresh_community_ids()",
    ],
    "ingester_runtime": [
        ADD_FAILURE,
        "UPDATE pipelines.identification_stamps SET accepted_taxon_key = 1",
        "DELETE FROM pipelines.resolution_attempts",
        "CREATE TABLE pipelines.scratch (x int)",
        "INSERT INTO dagster.kvs (key, value) VALUES ('probe', 'x')",
    ],
}


@pytest.fixture
def app_conn(conn):
    """The test database with the app's private `appview` schema, as the app has it."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE SCHEMA appview; CREATE TABLE appview.oauth_sessions (id text); "
            "GRANT USAGE ON SCHEMA appview TO appview_runtime; "
            "GRANT SELECT ON appview.oauth_sessions TO appview_runtime"
        )
    return conn


@pytest.mark.parametrize(("role", "statement"), [(r, s) for r, ss in ALLOWED.items() for s in ss])
def test_granted(app_conn, role, statement):
    as_role(app_conn, role, statement)


@pytest.mark.parametrize(("role", "statement"), [(r, s) for r, ss in DENIED.items() for s in ss])
def test_denied(app_conn, role, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(app_conn, role, statement)


def test_jobs_role_owns_both_schemas_and_everything_in_them(conn):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname IN ('dagster', 'pipelines') ORDER BY 1"
        )
        assert cur.fetchall() == [("dagster", "jobs_runtime"), ("pipelines", "jobs_runtime")]
        cur.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('dagster', 'pipelines') "
            "AND tableowner <> 'jobs_runtime'"
        )
        assert cur.fetchone()[0] == 0


def test_a_whole_pass_runs_as_the_jobs_role(
    db_url, jobs_url, fake_gbif, gbif_client, wikidata_client
):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    with connect(db_url) as admin:
        uris = identify(admin, ("Helianthus annuus", "Plantae"), ("Aaasdfadsf", None))
    with connect(jobs_url) as conn:
        report = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
        assert report.refreshed and report.names.resolved == 1
        assert keys(conn, uris) == [9206251, None]


def test_dagster_storage_works_as_the_jobs_role(jobs_url):
    storage = AppDatabaseDagsterStorage(
        postgres_url=dagster_storage_url(jobs_url),
        should_autocreate_tables=False,
    )
    try:
        storage.run_storage.set_cursor_values({"probe": "1"})
        assert storage.run_storage.get_cursor_values({"probe"}) == {"probe": "1"}
        assert storage.run_storage.get_runs() == []
    finally:
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()


def test_migrate_runs_again_as_the_admin_and_changes_nothing(db_url, admin_url):
    before = cloud_sql.catalog(db_url)
    assert migrate.upgrade_all(admin_url, app_mirror=False) == []
    assert cloud_sql.catalog(db_url) == before


def test_nothing_is_left_of_the_privileges_migrate_needed_for_a_moment(db_url):
    assert not cloud_sql.can_act_as(db_url, ADMIN, "ingester_runtime")
    assert not cloud_sql.can_act_as(db_url, ADMIN, "appview_runtime")
    assert cloud_sql.can_act_as(db_url, ADMIN, JOBS_ROLE)  # kept: migrate acts as it
    assert cloud_sql.rows(
        db_url,
        "SELECT has_database_privilege('jobs_runtime', current_database(), 'CREATE'), "
        "has_schema_privilege('ingester_runtime', 'pipelines', 'CREATE')",
    ) == [(False, False)]


def test_the_jobs_role_holds_no_role_and_no_attribute(db_url):
    assert cloud_sql.rows(
        db_url,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
        "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) "
        "FROM pg_roles r WHERE rolname = 'jobs_runtime'",
    ) == [(False, False, False, False, 0)]


def test_the_refresh_runs_with_the_view_owners_rights_through_a_pinned_function(db_url):
    assert cloud_sql.rows(
        db_url,
        "SELECT pg_get_userbyid(proowner), prosecdef, proconfig FROM pg_proc "
        "WHERE oid = 'pipelines.refresh_community_ids()'::regprocedure",
    ) == [("ingester_runtime", True, ["search_path=pg_catalog"])]
