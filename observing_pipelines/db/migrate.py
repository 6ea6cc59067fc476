"""`migrate`, step by step, as the app's admin (on Cloud SQL: no superuser).

1. `app mirror` (development and tests only): the app's tables as observ-ing/core makes them.
2. `roles` (`roles.prepare`, one transaction, as the admin): the jobs' role, our two schemas
   owned by it, its grants on the app's tables. Whatever needs the admin's privileges is here,
   so a missing privilege stops `migrate` before anything of ours has changed.
3. `pipelines schema`: our Alembic branch, as `jobs_runtime`.
4. `dagster schema`: Dagster's own tables, created or upgraded by Dagster, as `jobs_runtime`.
5. `grants to the app` (`roles.grant_app_access`, as `jobs_runtime`).

Steps 3-5 act as the jobs' role (`SET ROLE` at connection start), so what they create belongs
to it from the start. Each step is idempotent and each Alembic revision is its own transaction,
so after any failure a rerun completes the work. A database error ends in `MigrationFailed`,
whose text is one line: the step, PostgreSQL's reason (naming the missing privilege) and the
statement.

Alembic keeps two independent branches in one script folder: `pipelines` and `app_mirror`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg2
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import DBAPIError

from observing_pipelines.db import roles
from observing_pipelines.db.connection import connect, sqlalchemy_url, with_session_options
from observing_pipelines.db.dagster_storage import AppDatabaseDagsterStorage, dagster_storage_url
from observing_pipelines.text import storable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MAX_STATEMENT_SHOWN = 300
PRIVILEGES_HELP = "the admin's privileges are listed in README.md, 'Migrating as Cloud SQL's admin'"


class MigrationFailed(Exception):
    """`migrate` stopped at `step`; `str()` is the one line the command prints."""

    def __init__(self, step: str, reason: str, statement: str | None) -> None:
        line = f'migrate stopped at step "{step}": {reason}'
        if statement:
            line += f"; statement: {storable(statement, MAX_STATEMENT_SHOWN)}"
        super().__init__(line)
        self.step = step


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
        storage.schedule_storage.upgrade()
        storage.schedule_storage.migrate()
    finally:
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()


def prepare_roles(url: str, jobs_password: str | None = None) -> list[str]:
    with connect(url) as conn:
        return roles.prepare(conn, jobs_password)


def grant_app_access(url: str) -> list[str]:
    with connect(url) as conn:
        return roles.grant_app_access(conn)


def upgrade_all(url: str, *, app_mirror: bool, jobs_password: str | None = None) -> list[str]:
    """Every step in order (see the module's docstring); `url` is the admin's. Returns the
    statements the roles steps ran: none when roles and grants were already in place."""
    as_jobs = with_session_options(url, role=roles.JOBS_ROLE)
    role_statements: list[str] = []
    steps: list[tuple[str, Callable[[], object]]] = [
        ("roles", lambda: role_statements.extend(prepare_roles(url, jobs_password))),
        ("pipelines schema", lambda: upgrade_pipelines(as_jobs)),
        ("dagster schema", lambda: upgrade_dagster(as_jobs)),
        ("grants to the app", lambda: role_statements.extend(grant_app_access(as_jobs))),
    ]
    if app_mirror:
        steps.insert(0, ("app mirror", lambda: upgrade_app_mirror(url)))
    for step, run in steps:
        try:
            run()
        except (roles.StatementFailed, DBAPIError, psycopg2.Error) as error:
            raise _failure(step, error) from error
    return role_statements


def _failure(step: str, error: Exception) -> MigrationFailed:
    statement: str | None = None
    cause: BaseException = error
    if isinstance(error, roles.StatementFailed):
        statement, cause = error.statement, error.cause
    elif isinstance(error, DBAPIError):
        statement, cause = error.statement, error.orig or error
    elif isinstance(error, psycopg2.Error) and error.cursor is not None and error.cursor.query:
        statement = error.cursor.query.decode(errors="replace")
    return MigrationFailed(step, _reason(cause), statement)


def _reason(cause: BaseException) -> str:
    """PostgreSQL's own words (its message names the missing privilege), with the detail and
    hint it gives and the SQLSTATE; connection failures by their first line."""
    primary = cause.diag.message_primary if isinstance(cause, psycopg2.Error) else None
    if not isinstance(cause, psycopg2.Error) or primary is None:
        return " ".join(str(cause).split("\n", 1)[0].split())
    diag = cause.diag
    reason = primary
    reason += "".join(f" ({extra})" for extra in (diag.message_detail, diag.message_hint) if extra)
    reason += f" [SQLSTATE {diag.sqlstate}]"
    if diag.sqlstate == "42501":  # insufficient_privilege
        reason += f" - {PRIVILEGES_HELP}"
    return " ".join(reason.split())
