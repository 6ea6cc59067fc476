"""`migrate` as Cloud SQL's admin, who is no superuser, in both shapes of the app's database.

Each shape (`cloud_sql.Shape`) gets a private cluster, since roles belong to a cluster: from the
system's PostgreSQL (15 on Debian bookworm) where installed, and from pgserver's (16), so both
CREATEROLE semantics are run. In every case `migrate` must pass on an empty database and again
without changing anything; upgrade a database main migrated (as a superuser, or half way as the
admin, where main's roles.sql failed); and, on a missing privilege, stop before anything has
changed with one line naming the step, the statement and the privilege, so that a rerun after
the fix completes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from observing_pipelines.db import migrate
from observing_pipelines.db.connection import connect
from observing_pipelines.db.dagster_storage import AppDatabaseDagsterStorage, dagster_storage_url
from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests import cloud_sql, fakes
from observing_pipelines_tests.cloud_sql import ADMIN, Shape, as_user, rows, run_sql
from observing_pipelines_tests.private_postgres import (
    QUICK_AND_LOOSE,
    pgserver_bin_dir,
    private_cluster,
)
from observing_pipelines_tests.test_resolve_taxa import identify, keys

CLI = Path(sys.executable).with_name("observing-pipelines")
SECRET = "migrate-s3cret-pw"


def server_binaries() -> list[tuple[str, Path]]:
    """(label, bin dir) per PostgreSQL major version at hand: the system's, then pgserver's."""
    found: dict[str, Path] = {}
    for postgres in sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        found.setdefault(f"pg{postgres.parent.parent.name}", postgres.parent)
    pgserver = pgserver_bin_dir()
    if pgserver is not None and (pgserver / "postgres").exists():
        version = subprocess.run(
            [str(pgserver / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        found.setdefault(f"pg{version.split('.')[0]}", pgserver)
    return sorted(found.items())


CLUSTERS = [(label, path, shape) for label, path in server_binaries() for shape in Shape]


@dataclass(frozen=True)
class AppDatabase:
    superuser: str
    admin: str
    shape: Shape

    @property
    def view_owner(self) -> str:
        return "ingester_runtime" if self.shape is Shape.PRODUCTION else ADMIN


@pytest.fixture(
    scope="module", params=CLUSTERS, ids=[f"{label}-{shape.value}" for label, _, shape in CLUSTERS]
)
def shaped_cluster(request: pytest.FixtureRequest) -> Iterator[tuple[str, Shape]]:
    """A private cluster prepared for one shape; yields its superuser's URL and the shape."""
    _, bin_dir, shape = request.param
    with private_cluster(bin_dir, QUICK_AND_LOOSE) as cluster:
        cloud_sql.prepare_cluster(cluster.url(), shape)
        yield cluster.url(), shape


@pytest.fixture
def app_db(shaped_cluster: tuple[str, Shape]) -> Iterator[AppDatabase]:
    """A new database holding the app's tables in the cluster's shape, nothing of ours."""
    superuser, shape = shaped_cluster
    name = f"op_app_{uuid.uuid4().hex[:10]}"
    admin = cloud_sql.build_app_database(superuser, name, shape)
    try:
        yield AppDatabase(cloud_sql.with_database(superuser, name), admin, shape)
    finally:
        cloud_sql.autocommit(superuser, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate_command(admin_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`observing-pipelines migrate` as the migrations job runs it, with the admin's URL."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_"))}
    return subprocess.run(
        [str(CLI), "migrate"],
        env=environ | {"DATABASE_URL": admin_url} | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_migrated(db: AppDatabase) -> None:
    """Ours belongs to the jobs' role, the refresh runs with the view owner's rights, and
    nothing is left of the privileges migrate needed for a moment."""
    url = db.superuser
    assert rows(
        url,
        "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
        "WHERE nspname IN ('dagster', 'pipelines') ORDER BY 1",
    ) == [("dagster", JOBS_ROLE), ("pipelines", JOBS_ROLE)]
    assert (
        rows(
            url,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('dagster', 'pipelines') AND pg_get_userbyid(c.relowner) <> %s",
            (JOBS_ROLE,),
        )
        == []
    )
    assert rows(
        url,
        "SELECT pg_get_userbyid(proowner), prosecdef, "
        "has_function_privilege(%s, oid, 'EXECUTE'), "
        "EXISTS (SELECT FROM aclexplode(proacl) WHERE grantee = 0) "
        "FROM pg_proc WHERE oid = 'pipelines.refresh_community_ids()'::regprocedure",
        (JOBS_ROLE,),
    ) == [(db.view_owner, True, True, False)]
    assert rows(
        url,
        "SELECT matviewowner FROM pg_matviews WHERE matviewname = 'community_ids'",
    ) == [(db.view_owner,)]
    assert rows(
        url,
        "SELECT has_database_privilege(%s, current_database(), 'CREATE'), rolsuper, "
        "rolcreaterole, rolcreatedb, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) "
        "FROM pg_roles r WHERE rolname = %s",
        (JOBS_ROLE, JOBS_ROLE),
    ) == [(False, False, False, False, 0)]
    if db.shape is Shape.PRODUCTION:
        assert not cloud_sql.can_act_as(url, ADMIN, "ingester_runtime")
        assert rows(
            url,
            "SELECT has_schema_privilege('ingester_runtime', 'pipelines', 'CREATE'), "
            "has_table_privilege('appview_runtime', 'pipelines.taxon_images', 'SELECT')",
        ) == [(False, True)]


def assert_the_jobs_work(db: AppDatabase, fake_gbif, gbif_client, wikidata_client) -> None:
    """A whole pass (stamp, cache, refresh) and Dagster's storage, as the jobs' role."""
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    with connect(db.superuser) as conn:
        uris = identify(conn, ("Helianthus annuus", "Plantae"))
    with connect(as_user(db.superuser, JOBS_ROLE)) as conn:
        report = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
        assert report.refreshed and keys(conn, uris) == [9206251]
    storage = AppDatabaseDagsterStorage(
        postgres_url=dagster_storage_url(as_user(db.superuser, JOBS_ROLE)),
        should_autocreate_tables=False,
    )
    try:
        storage.run_storage.set_cursor_values({"probe": "1"})
        assert storage.run_storage.get_runs() == []
    finally:
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()


def assert_reruns_change_nothing(db: AppDatabase) -> None:
    before = cloud_sql.catalog(db.superuser)
    assert migrate.upgrade_all(db.admin, app_mirror=False) == []
    assert cloud_sql.catalog(db.superuser) == before


def test_migrate_passes_twice_as_the_admin_and_the_second_run_changes_nothing(
    app_db, fake_gbif, gbif_client, wikidata_client
):
    result = migrate_command(app_db.admin, JOBS_RUNTIME_PASSWORD=SECRET)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert_migrated(app_db)
    assert_reruns_change_nothing(app_db)
    assert_the_jobs_work(app_db, fake_gbif, gbif_client, wikidata_client)


def test_migrate_upgrades_a_database_main_migrated_as_a_superuser(app_db, shaped_cluster):
    cloud_sql.migrate_as_main_did(app_db.superuser)
    # On 16+ the admin needs ADMIN OPTION on a jobs_runtime someone else made (README).
    cloud_sql.prepare_cluster(*shaped_cluster)
    assert migrate.upgrade_all(app_db.admin, app_mirror=False)
    assert_migrated(app_db)
    assert_reruns_change_nothing(app_db)


def test_migrate_completes_a_database_main_left_half_migrated(app_db):
    """Main ran its roles step last, after Alembic and Dagster had committed, and it fails as
    this admin (production: no right to grant on the view; the app's CI shape: `GRANT <the
    admin> TO CURRENT_USER`): our tables exist, owned by the admin, useless to the jobs."""
    with pytest.raises(psycopg2.Error):
        cloud_sql.migrate_as_main_did(app_db.admin)
    assert rows(
        app_db.superuser,
        "SELECT pg_get_userbyid(relowner) FROM pg_class "
        "WHERE oid IN ('pipelines.resolution_attempts'::regclass, 'dagster.runs'::regclass)",
    ) == [(ADMIN,), (ADMIN,)]
    assert migrate.upgrade_all(app_db.admin, app_mirror=False)
    assert_migrated(app_db)
    assert_reruns_change_nothing(app_db)


def test_a_missing_privilege_stops_migrate_before_anything_changes_and_a_rerun_completes(app_db):
    # As before the app's 20260425000001: an app table owned by a role the admin is not a
    # member of, so the admin cannot grant on it.
    run_sql(
        app_db.superuser,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'op_legacy_owner') "
        "THEN CREATE ROLE op_legacy_owner NOLOGIN; END IF; END $$",
        "ALTER TABLE ingester.taxa OWNER TO op_legacy_owner",
    )
    before = cloud_sql.catalog(app_db.superuser)
    result = migrate_command(app_db.admin, JOBS_RUNTIME_PASSWORD=SECRET)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # JSON, every line
    (error,) = [entry["message"] for entry in entries if entry["severity"] == "ERROR"]
    assert 'step "roles"' in error
    assert "permission denied for table taxa" in error
    assert 'statement: GRANT SELECT ON "ingester"."taxa" TO "jobs_runtime"' in error
    assert "Traceback" not in output and SECRET not in output
    assert cloud_sql.catalog(app_db.superuser) == before  # the roles step is one transaction

    run_sql(app_db.superuser, f"ALTER TABLE ingester.taxa OWNER TO {ADMIN}")
    result = migrate_command(app_db.admin)
    assert result.returncode == 0, result.stderr
    assert_migrated(app_db)
