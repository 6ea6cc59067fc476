"""Shared test fixtures: a real Postgres, real local HTTP servers, the shared API recordings.

Database: `OBSERVING_TEST_DATABASE_URL` names a server we may create databases on (CI points it
at 127.0.0.1:5432). Without it, the tests start the same embedded PostgreSQL the README's `dev`
command uses, under `.local/test-pgdata`, so a fresh clone needs nothing but Python. One
template database is migrated per session (app mirror, our schema, Dagster's tables); each test
gets its own copy, made with `CREATE DATABASE ... TEMPLATE` in a fraction of a second. The
template is the app's database as Cloud SQL has it, migrated by an admin who is no superuser
(`cloud_sql.py`), so every test runs against what a deploy produces.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from pytest_httpserver import HTTPServer

from observing_pipelines.clients.commons import CommonsClient
from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.wikidata import WikidataClient
from observing_pipelines.db import migrate
from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines_tests import cloud_sql
from observing_pipelines_tests.cloud_sql import ADMIN, Shape, as_user, autocommit
from observing_pipelines_tests.fakes import FakeCommons, FakeGbif, FakeWikidata
from observing_pipelines_tests.support import PROJECT_ROOT, polite


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of a database on a server where the tests may create and drop databases."""
    configured = os.environ.get("OBSERVING_TEST_DATABASE_URL")
    if configured:
        return configured
    from observing_pipelines.db.embedded import start_embedded_postgres

    return start_embedded_postgres(PROJECT_ROOT / ".local" / "test-pgdata", keep_running=False)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """The app's database as production has it (`cloud_sql.Shape.PRODUCTION`: runtime roles
    made beforehand, the view owned by `ingester_runtime`), migrated by the Cloud SQL-shaped
    admin, who is no superuser. Each test gets a copy."""
    name = f"op_template_{uuid.uuid4().hex[:12]}"
    try:
        with cloud_sql.cluster_lock(server_url):  # the roles are the cluster's, not the database's
            cloud_sql.prepare_cluster(server_url, Shape.PRODUCTION)
            admin_url = cloud_sql.build_app_database(server_url, name, Shape.PRODUCTION)
            migrate.upgrade_all(admin_url, app_mirror=False)
        yield name
    finally:
        autocommit(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test, owned by the admin; the URL is the
    superuser's, for setting up data (`admin_url` and `jobs_url` connect as the roles)."""
    with cloud_sql.copy_of(server_url, template_database, owner=ADMIN) as url:
        yield url


@pytest.fixture
def admin_url(db_url: str) -> str:
    """The test database as Cloud SQL's admin (no superuser), who runs `migrate`."""
    return as_user(db_url, ADMIN)


@pytest.fixture
def jobs_url(db_url: str) -> str:
    """The test database as the jobs' role, as the services connect."""
    return as_user(db_url, JOBS_ROLE)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(db_url)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def instance(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance as dagster.yaml configures it, its storage in the test database."""
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DATABASE_URL", db_url)
    with dg.DagsterInstance.from_config(str(tmp_path)) as loaded:
        yield loaded


def _loopback_server() -> Iterator[HTTPServer]:
    """A real HTTP server on 127.0.0.1 (threaded: a slow answer must not block the others)."""
    with HTTPServer(host="127.0.0.1", threaded=True) as server:
        yield server


gbif_server = pytest.fixture(_loopback_server, name="gbif_server")
wikidata_server = pytest.fixture(_loopback_server, name="wikidata_server")
commons_server = pytest.fixture(_loopback_server, name="commons_server")
iucn_server = pytest.fixture(_loopback_server, name="iucn_server")


@pytest.fixture
def fake_gbif(gbif_server: HTTPServer) -> FakeGbif:
    return FakeGbif(gbif_server)


@pytest.fixture
def fake_wikidata(wikidata_server: HTTPServer) -> FakeWikidata:
    return FakeWikidata(wikidata_server)


@pytest.fixture
def gbif_client(gbif_server: HTTPServer) -> Iterator[GbifClient]:
    with polite("gbif", gbif_server.url_for("")) as http:
        yield GbifClient(http)


@pytest.fixture
def wikidata_client(wikidata_server: HTTPServer) -> Iterator[WikidataClient]:
    with polite("wikidata", wikidata_server.url_for("/sparql")) as http:
        yield WikidataClient(http)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`../shared/fixtures` (or OBSERVING_SHARED_FIXTURES); tests using it skip without it."""
    path = Path(
        os.environ.get("OBSERVING_SHARED_FIXTURES") or PROJECT_ROOT.parent / "shared" / "fixtures"
    )
    if not path.is_dir():
        pytest.skip(f"shared API recordings not found at {path}")
    return path


@pytest.fixture
def fake_commons(commons_server: HTTPServer) -> FakeCommons:
    return FakeCommons(commons_server)


@pytest.fixture
def commons_client(commons_server: HTTPServer) -> Iterator[CommonsClient]:
    with polite("commons", commons_server.url_for("/w/api.php")) as http:
        yield CommonsClient(http)
