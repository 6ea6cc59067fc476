"""The app's database as Cloud SQL has it, migrated by an admin who is no superuser.

On Cloud SQL the admin `migrate` connects as has CREATEROLE and CREATEDB and may alter or grant
on an object only if it owns it or is a member of its owner (`../shared/docs/
deployment-notes.md` §6). Two shapes of the app's database, both with such an admin (`ADMIN`):

- `PRODUCTION`: the admin owns the database and the app's `ingester` tables; `ingester_runtime`
  and `appview_runtime` exist beforehand (Cloud SQL users, made outside migrations), hold the
  app's grants (`20260428000001_grant_runtime_roles`), and `ingester_runtime` owns
  `community_ids`; the admin is a member of neither.
- `APP_CI`: the app's CI and local databases: the admin owns everything, the view included, and
  no runtime role exists. Roles belong to a cluster, not a database, so this shape needs a
  cluster without the app's roles (a private one).

PostgreSQL 16 made CREATEROLE administer only the roles its holder created. There the admin is
given ADMIN OPTION (without their privileges) on the roles it must hand out: what it holds on
roles it created itself, and what README.md ("Migrating as Cloud SQL's admin") asks for on 16+.

The builders work from a superuser's URL (the test harness plays Cloud SQL's own management);
every `migrate` runs with the admin's URL.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from alembic import command

from observing_pipelines.db import migrate
from observing_pipelines.db.roles import JOBS_ROLE

ADMIN = "op_cloudsql_admin"
APP_RUNTIME_ROLES = ("ingester_runtime", "appview_runtime")
LEGACY_ROLES_SQL = Path(__file__).parent / "data" / "roles_at_493890c.sql"
LEGACY_PIPELINES_HEAD = "p0004"
"""Our Alembic head on main at 493890c, the migrate the upgrade tests start from."""


class Shape(enum.Enum):
    PRODUCTION = "production"
    APP_CI = "app_ci"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def autocommit(url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE DATABASE, DROP DATABASE)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextmanager
def new_database(
    server_url: str,
    *,
    prefix: str = "op_test",
    owner: str | None = None,
    template: str | None = None,
) -> Iterator[str]:
    """A new database on `server_url`'s server, dropped at exit even with connections still
    open; yields its URL as `server_url`'s user."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    options = (f" TEMPLATE {template}" if template else "") + (f" OWNER {owner}" if owner else "")
    autocommit(server_url, f"CREATE DATABASE {name}{options}")
    try:
        yield with_database(server_url, name)
    finally:
        autocommit(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def copy_of(server_url: str, template: str, *, owner: str | None = None) -> Iterator[str]:
    """A fresh copy of database `template` (made in a fraction of a second), dropped at exit;
    yields its URL as `server_url`'s user. The template's own settings (the app's
    `search_path`) are copied too: `CREATE DATABASE ... TEMPLATE` leaves them behind."""
    with new_database(server_url, owner=owner, template=template) as url:
        for (setting,) in rows(
            server_url,
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (template,),
        ):
            key, _, value = setting.partition("=")
            autocommit(server_url, f"ALTER DATABASE {database_name(url)} SET {key} = {value}")
        yield url


def as_user(url: str, user: str) -> str:
    """`url` with another user (trust authentication: no password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor() as cur:
        cur.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def run_sql(url: str, *statements: str) -> None:
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def relations(url: str, schema: str) -> set[str]:
    """Tables and views of `schema`, without those an extension brings (PostGIS in public)."""
    return {
        name
        for (name,) in rows(
            url,
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            """,
            (schema,),
        )
    }


def postgis_available(url: str) -> bool:
    """Whether PostGIS is installed on the server (the mirror then makes `location` a
    geography, with its GiST index)."""
    return bool(rows(url, "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"))


def server_version(url: str) -> int:
    return int(rows(url, "SHOW server_version_num")[0][0])


def prepare_cluster(superuser_url: str, shape: Shape) -> None:
    """The cluster-wide part of a shape: the admin and, in production, the app's runtime roles,
    the admin holding none of their privileges (on 16+: their ADMIN OPTION only). Changes
    nothing where the cluster already is so: test sessions running side by side share it."""
    pg16 = server_version(superuser_url) >= 160000
    existing = {name for (name,) in rows(superuser_url, "SELECT rolname FROM pg_roles")}
    if ADMIN not in existing:
        run_sql(superuser_url, f"CREATE ROLE {ADMIN} LOGIN CREATEROLE CREATEDB")
    if shape is Shape.APP_CI:
        assert not existing & set(APP_RUNTIME_ROLES), "APP_CI needs a cluster without app roles"
        return
    for role in APP_RUNTIME_ROLES:
        if role not in existing:
            run_sql(superuser_url, f"CREATE ROLE {role} LOGIN")
        grants = rows(
            superuser_url,
            "SELECT g.rolname, (to_jsonb(m) ->> 'inherit_option')::boolean, "
            "(to_jsonb(m) ->> 'set_option')::boolean, m.admin_option FROM pg_auth_members m "
            "JOIN pg_roles g ON g.oid = m.grantor "
            "WHERE m.roleid = %s::regrole AND m.member = %s::regrole",
            (role, ADMIN),
        )
        for grantor, inherits, sets, _ in grants:
            if not pg16:
                run_sql(superuser_url, f"REVOKE {role} FROM {ADMIN}")
            elif inherits or sets:
                run_sql(superuser_url, f"REVOKE {role} FROM {ADMIN} GRANTED BY {grantor} CASCADE")
        if pg16 and not any(admin for *_, admin in grants):
            run_sql(
                superuser_url,
                f"GRANT {role} TO {ADMIN} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
            )
    if pg16 and JOBS_ROLE in existing:  # made by an earlier migrate, maybe as a superuser
        (held,) = rows(
            superuser_url,
            "SELECT count(*) FROM pg_auth_members WHERE roleid = %s::regrole "
            "AND member = %s::regrole AND admin_option",
            (JOBS_ROLE, ADMIN),
        )[0]
        if not held:
            run_sql(superuser_url, f"GRANT {JOBS_ROLE} TO {ADMIN} WITH ADMIN OPTION")


CLUSTER_LOCK_KEY = 0x7461786100000F00


@contextmanager
def cluster_lock(superuser_url: str) -> Iterator[None]:
    """Test sessions side by side (pytest-xdist's workers) take turns changing the cluster's
    roles: a session-level advisory lock on the maintenance database, held while inside."""
    conn = psycopg2.connect(superuser_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (CLUSTER_LOCK_KEY,))
        yield
    finally:
        conn.close()


def build_app_database(superuser_url: str, name: str, shape: Shape) -> str:
    """A new database `name` holding the app's tables in `shape`, nothing of ours; returns the
    admin's URL of it."""
    autocommit(superuser_url, f"CREATE DATABASE {name} OWNER {ADMIN}")
    database = with_database(superuser_url, name)
    admin_url = as_user(database, ADMIN)
    if postgis_available(database):
        run_sql(database, "CREATE EXTENSION IF NOT EXISTS postgis")  # the app has it already
    migrate.upgrade_app_mirror(admin_url)
    # The mirror's Alembic ledger stands in for the app's own; production has no `pipelines`
    # schema before our first migrate.
    run_sql(admin_url, "DROP SCHEMA pipelines CASCADE")
    if shape is Shape.PRODUCTION:
        run_sql(
            database,
            "GRANT USAGE ON SCHEMA ingester TO ingester_runtime, appview_runtime",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ingester "
            "TO ingester_runtime",
            "GRANT SELECT ON ALL TABLES IN SCHEMA ingester TO appview_runtime",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {ADMIN} IN SCHEMA ingester "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ingester_runtime",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {ADMIN} IN SCHEMA ingester "
            "GRANT SELECT ON TABLES TO appview_runtime",
            "ALTER MATERIALIZED VIEW ingester.community_ids OWNER TO ingester_runtime",
        )
    return admin_url


def migrate_as_main_did(url: str) -> None:
    """`observing-pipelines migrate` as main at 493890c ran it: our branch up to its head then,
    Dagster's tables, then its roles.sql in one transaction (which fails as a non-superuser)."""
    command.upgrade(migrate.alembic_config(url), LEGACY_PIPELINES_HEAD)
    migrate.upgrade_dagster(url)
    run_sql(url, LEGACY_ROLES_SQL.read_text())


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything `migrate` could change: roles, memberships, owners and privileges of the
    database, of our and the app's schemas and what is in them, and both migration ledgers."""
    schemas = ["ingester", "pipelines", "dagster"]
    return {
        "roles": rows(
            url,
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin "
            "FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1",
        ),
        "memberships": rows(
            url,
            "SELECT r.rolname, m.rolname, (to_jsonb(a) - 'oid' - 'roleid' - 'member' "
            "- 'grantor')::text FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
            "JOIN pg_roles m ON m.oid = a.member ORDER BY 1, 2, 3",
        ),
        "database": rows(
            url,
            "SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database "
            "WHERE datname = current_database()",
        ),
        "settings": rows(
            url,
            "SELECT setrole, setconfig::text FROM pg_db_role_setting WHERE setdatabase = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
        ),
        "schemas": rows(
            url,
            "SELECT nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace "
            "WHERE nspname = ANY(%s) ORDER BY 1",
            (schemas,),
        ),
        "relations": rows(
            url,
            "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), "
            "c.relacl::text, (SELECT array_agg(a.attname || '=' || a.attacl::text "
            "ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid "
            "AND a.attacl IS NOT NULL)::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) "
            "ORDER BY 1, 2",
            (schemas,),
        ),
        "functions": rows(
            url,
            "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.prosecdef, "
            "p.proconfig::text, p.prosrc, p.proacl::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%s) "
            "ORDER BY 1",
            (schemas,),
        ),
        "default_privileges": rows(
            url,
            "SELECT pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text, "
            "defaclobjtype, defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3",
        ),
        "ledgers": rows(
            url,
            "SELECT 'pipelines', version_num FROM pipelines.alembic_version "
            "UNION ALL SELECT 'dagster', version_num FROM dagster.alembic_version ORDER BY 1, 2",
        )
        if rows(url, "SELECT to_regclass('dagster.alembic_version')")[0][0]
        else [],
    }


def can_act_as(url: str, member: str, role: str) -> bool:
    """Whether `member` holds `role`'s privileges or may become it (PostgreSQL 16 tells the
    two apart; an ADMIN OPTION alone gives neither)."""
    kinds = ("USAGE", "SET") if server_version(url) >= 160000 else ("USAGE",)
    return any(
        rows(url, "SELECT pg_has_role(%s, %s, %s)", (member, role, kind))[0][0] for kind in kinds
    )
