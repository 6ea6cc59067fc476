"""Schema migrations, in order: our schema (Alembic), then Dagster's own tables.

Then `roles.sql` gives the jobs' role (`jobs_runtime`) ownership of both schemas and its grants
on the app's tables.

Alembic keeps two independent branches in one script folder: `pipelines` (our schema and the
empty `dagster` schema, always applied) and `app_mirror` (the app's tables, for development and
tests only). Dagster's tables are then created and upgraded by Dagster itself, inside the
`dagster` schema, through the same storage class the webserver and daemon use.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from observing_pipelines.db.connection import connect, sqlalchemy_url
from observing_pipelines.db.dagster_storage import AppDatabaseDagsterStorage, dagster_storage_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ROLES_SQL = Path(__file__).parent / "roles.sql"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat the % of URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade_pipelines(url: str) -> None:
    command.upgrade(alembic_config(url), "pipelines@head")


def upgrade_app_mirror(url: str) -> None:
    """Create the app's tables as observ-ing/core has them. Development and tests only."""
    command.upgrade(alembic_config(url), "app_mirror@head")


def upgrade_dagster(url: str) -> None:
    """Create (first run) or upgrade Dagster's run, event and schedule tables."""
    storage = AppDatabaseDagsterStorage(postgres_url=dagster_storage_url(url))
    try:
        storage.run_storage.upgrade()  # type: ignore[attr-defined]
        storage.run_storage.migrate()
        storage.event_log_storage.upgrade()
        storage.schedule_storage.upgrade()  # type: ignore[attr-defined]
        storage.schedule_storage.migrate()
    finally:
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()


def apply_roles(url: str, jobs_password: str | None = None) -> None:
    """Run `roles.sql` (the jobs role, its ownerships and grants; idempotent), and set the
    role's password when one is given."""
    with connect(url) as conn, conn, conn.cursor() as cur:
        cur.execute(ROLES_SQL.read_text())
        if jobs_password:
            cur.execute("ALTER ROLE jobs_runtime PASSWORD %s", (jobs_password,))


def upgrade_all(url: str, *, app_mirror: bool, jobs_password: str | None = None) -> None:
    if app_mirror:
        upgrade_app_mirror(url)
    upgrade_pipelines(url)
    upgrade_dagster(url)
    apply_roles(url, jobs_password)
