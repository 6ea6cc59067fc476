"""The jobs' database role and what it may touch, set up the way Cloud SQL's admin can.

`migrate` connects as the app's admin. On Cloud SQL that admin is no superuser: a role with
CREATEROLE and CREATEDB that may alter or grant on an object only if it owns it or is a member
of its owner, and may make a role an object's owner only as a member of that role
(`../shared/docs/deployment-notes.md` §6). The work is therefore split by who can do it:

1. `prepare`, as the admin, in one transaction, before any migration: the role `jobs_runtime`,
   the admin's membership in it, the schemas `pipelines` and `dagster` owned by it, its grants on
   the app's tables, and the `community_ids` refresh function owned by the view's owner.
   Everything that needs more than "own what you create" happens here, so a missing privilege
   stops `migrate` before anything has changed.
2. Our and Dagster's migrations then run as `jobs_runtime` (`SET ROLE` at connection start), so
   what they create is the jobs' own from the start and nothing changes hands afterwards.
3. `grant_app_access`, as `jobs_runtime`: the app's reader may read the results the app shows,
   and the app's runtime roles may request runs (`pipelines.job_requests`).

Every statement runs only when the catalog says it is needed, so a second `migrate` changes
nothing. A privilege needed for one statement only (the admin's membership in the view's owner,
a CREATE privilege the new owner of an object must hold) is granted and revoked inside the
prepare transaction: it is never committed, so it never outlives `migrate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extensions import encrypt_password

from observing_pipelines.db.taxa import TAXA_WRITTEN_COLUMNS

log = logging.getLogger(__name__)

JOBS_ROLE = "jobs_runtime"
APP_READER_ROLE = "appview_runtime"
OUR_SCHEMAS = ("pipelines", "dagster")
APP_READ_TABLES = ("taxon_images", "taxon_conservation")
"""Our tables the app shows (appview_runtime may read them, nothing else of ours)."""
APP_REQUEST_ROLES = ("appview_runtime", "ingester_runtime")
"""The app's runtime roles, which may ask for runs and read back their own requests."""
REQUESTS_TABLE = "job_requests"
REQUEST_COLUMNS = ("job_name", "run_config", "requested_by")
"""What a request may say; the rest of its row is the database's and the sensor's."""

_APP_SCHEMA = "ingester"
_VIEW = "community_ids"
_REFRESH_FUNCTION = "refresh_community_ids"
_REFRESH_SIGNATURE = "pipelines.refresh_community_ids()"
_REFRESH_BODY = "\nBEGIN\n    REFRESH MATERIALIZED VIEW CONCURRENTLY ingester.community_ids;\nEND\n"
_REFRESH_CONFIG = ["search_path=pg_catalog"]

# What the jobs do with the app's tables: read the work and the cache, stamp keys, keep the cache
# (every column `taxa.upsert_taxa` writes, and the vernacular name vernacular_names writes; never
# `extinct`), and nothing else.
_APP_GRANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("identifications", "SELECT", ()),
    ("identifications", "UPDATE", ("accepted_taxon_key", "indexed_at")),
    ("occurrences", "SELECT", ()),
    ("taxa", "SELECT", ()),
    ("taxa", "INSERT", ()),
    ("taxa", "UPDATE", (*TAXA_WRITTEN_COLUMNS, "vernacular_name")),
)


class StatementFailed(Exception):
    """A statement of the roles work failed; `statement` is safe to print (no password)."""

    def __init__(self, statement: str, cause: psycopg2.Error) -> None:
        super().__init__(statement)
        self.statement = statement
        self.cause = cause


@dataclass(frozen=True)
class RefreshFunction:
    owner: str
    security_definer: bool
    config: list[str] | None
    body: str
    public_may_execute: bool
    jobs_may_execute: bool

    @property
    def defined_as_wanted(self) -> bool:
        """Its definition is ours: a definer function, a fixed search_path, our body."""
        return (
            self.security_definer and self.config == _REFRESH_CONFIG and self.body == _REFRESH_BODY
        )

    def as_wanted_for(self, view_owner: str) -> bool:
        return (
            self.defined_as_wanted
            and self.owner == view_owner
            and not self.public_may_execute
            and self.jobs_may_execute
        )


class RoleWork:
    """The statements `prepare` decides on, run on one cursor, with what was run kept."""

    def __init__(self, cur: Cursor) -> None:
        self.cur = cur
        self.done: list[str] = []

    def run(self, statement: sql.Composable, params: tuple[Any, ...] = (), shown: str = "") -> None:
        text = statement.as_string(self.cur)
        shown = shown or " ".join(text.split())
        try:
            self.cur.execute(text, params or None)
        except psycopg2.Error as error:
            raise StatementFailed(shown, error) from error
        log.info("roles: %s", shown)
        self.done.append(shown)

    def value(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        self.cur.execute(query, params or None)
        row = self.cur.fetchone()
        return row[0] if row else None

    def role_exists(self, role: str) -> bool:
        return bool(self.value("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,)))

    def can_act_as(self, role: str) -> bool:
        """Whether the current user holds `role`'s privileges and may hand objects to it
        (PostgreSQL 16 splits the two: USAGE and SET; superusers hold both)."""
        kinds = ("USAGE", "SET") if self.cur.connection.server_version >= 160000 else ("USAGE",)
        return all(self.value("SELECT pg_has_role(current_user, %s, %s)", (role, k)) for k in kinds)

    @contextmanager
    def temporarily(
        self, needed: bool, grant: sql.Composable, revoke: sql.Composable
    ) -> Iterator[None]:
        """`grant` for the statements inside, `revoke` after them, all in this transaction.

        On a failure inside, the revoke is skipped: the transaction rolls back both.
        """
        if needed:
            self.run(grant)
        yield
        if needed:
            self.run(revoke)

    def acting_as(self, role: str) -> AbstractContextManager[None]:
        """The admin as a member of `role` for the statements inside (alter or grant on what
        `role` owns, make `role` an owner), unless it already is one."""
        return self.temporarily(
            not self.can_act_as(role),
            sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)),
            sql.SQL("REVOKE {} FROM CURRENT_USER").format(sql.Identifier(role)),
        )


def prepare(conn: Connection, jobs_password: str | None = None) -> list[str]:
    """Everything of the roles work that needs the admin, in one transaction; returns the
    statements run (none when the database is already as it should be)."""
    with conn, conn.cursor() as cur:
        work = RoleWork(cur)
        _jobs_role(work, jobs_password)
        _our_schemas(work)
        if work.value("SELECT to_regclass('ingester.community_ids') IS NOT NULL"):
            _app_tables(work)
        else:
            log.info("No ingester tables here: skipping the grants on them")
    return work.done


def grant_app_access(conn: Connection) -> list[str]:
    """What the app may touch of ours (run as `jobs_runtime`, the owner): its reader reads the
    results it shows, and its runtime roles insert run requests (`REQUEST_COLUMNS` only) and
    read them back; row security limits each role to its own rows."""
    with conn, conn.cursor() as cur:
        work = RoleWork(cur)
        for role in sorted({APP_READER_ROLE, *APP_REQUEST_ROLES}):
            if work.role_exists(role) and not work.value(
                "SELECT has_schema_privilege(%s, 'pipelines', 'USAGE')", (role,)
            ):
                work.run(
                    sql.SQL("GRANT USAGE ON SCHEMA pipelines TO {}").format(sql.Identifier(role))
                )
        if work.role_exists(APP_READER_ROLE):
            for table in APP_READ_TABLES:
                _ensure_grant(work, APP_READER_ROLE, ("pipelines", table), "SELECT")
        for role in APP_REQUEST_ROLES:
            if work.role_exists(role):
                _ensure_grant(work, role, ("pipelines", REQUESTS_TABLE), "SELECT")
                _ensure_grant(work, role, ("pipelines", REQUESTS_TABLE), "INSERT", REQUEST_COLUMNS)
    return work.done


def _jobs_role(work: RoleWork, password: str | None) -> None:
    """The role the services connect as, created in SQL: a Cloud SQL built-in user would be
    made a member of `cloudsqlsuperuser`, which holds every table privilege."""
    jobs = sql.Identifier(JOBS_ROLE)
    if not work.role_exists(JOBS_ROLE):
        work.run(sql.SQL("CREATE ROLE {} LOGIN").format(jobs))
    if password:
        # A SCRAM verifier made here: the password itself never reaches the server's logs.
        verifier = encrypt_password(password, JOBS_ROLE, work.cur.connection, "scram-sha-256")
        work.run(
            sql.SQL("ALTER ROLE {} PASSWORD %s").format(jobs),
            (verifier,),
            shown=f"ALTER ROLE {JOBS_ROLE} PASSWORD '***'",
        )
    if not work.can_act_as(JOBS_ROLE):
        # Kept: every migrate runs our and Dagster's migrations as jobs_runtime (SET ROLE).
        work.run(sql.SQL("GRANT {} TO CURRENT_USER").format(jobs))


def _our_schemas(work: RoleWork) -> None:
    jobs = sql.Identifier(JOBS_ROLE)
    for schema in OUR_SCHEMAS:
        name = sql.Identifier(schema)
        owner = work.value(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (schema,)
        )
        if owner is None:
            work.run(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(name, jobs))
        elif owner != JOBS_ROLE:
            # Made as the admin by the app mirror (its Alembic ledger) or by an older migrate.
            # PostgreSQL checks the admin's own CREATE on the database here (15 and 16 alike),
            # not the new owner's.
            work.run(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(name, jobs))
        if work.value(
            "SELECT EXISTS (SELECT FROM pg_namespace n, aclexplode(n.nspacl) a "
            "WHERE n.nspname = %s AND a.grantee = 0)",
            (schema,),
        ):
            work.run(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(name))
    _hand_over_leftovers(work)


_RELATION_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "f": "FOREIGN TABLE",
    "S": "SEQUENCE",
}


def _hand_over_leftovers(work: RoleWork) -> None:
    """Relations in our schemas someone else made (the admin, in a migrate that stopped half
    way, or the app mirror's version table) become the jobs' own. Sequences owned by a column
    follow their table; indexes follow theirs."""
    work.cur.execute(
        """
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind = ANY(%s)
          AND pg_get_userbyid(c.relowner) <> %s
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
        ORDER BY 1, 2
        """,
        (list(OUR_SCHEMAS), list(_RELATION_KINDS), JOBS_ROLE),
    )
    for schema, relation, kind in work.cur.fetchall():
        work.run(
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(_RELATION_KINDS[kind]),
                sql.Identifier(schema, relation),
                sql.Identifier(JOBS_ROLE),
            )
        )


def _app_tables(work: RoleWork) -> None:
    """Least grants on the app's tables, and the refresh of its view through a function that
    runs with the view owner's rights (rather than making the jobs that role: it writes every
    ingester table)."""
    jobs = sql.Identifier(JOBS_ROLE)
    if not work.value("SELECT has_schema_privilege(%s, %s, 'USAGE')", (JOBS_ROLE, _APP_SCHEMA)):
        work.run(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(_APP_SCHEMA), jobs)
        )
    for table, privilege, columns in _APP_GRANTS:
        relation = (_APP_SCHEMA, table)
        if columns and _holds(work, JOBS_ROLE, relation, privilege):
            # Granted on the whole table by an older migrate: narrowed to the columns (revoking
            # the table's privilege revokes its columns' too, so the grant below follows).
            work.run(
                sql.SQL("REVOKE {} ON {} FROM {}").format(
                    sql.SQL(privilege), sql.Identifier(*relation), jobs
                )
            )
        _ensure_grant(work, JOBS_ROLE, relation, privilege, columns)
    view_owner = work.value(
        "SELECT matviewowner FROM pg_matviews WHERE schemaname = %s AND matviewname = %s",
        (_APP_SCHEMA, _VIEW),
    )
    function = _refresh_function(work)
    may_read_view = _holds(work, JOBS_ROLE, (_APP_SCHEMA, _VIEW), "SELECT")
    if may_read_view and function is not None and function.as_wanted_for(view_owner):
        return
    # Only the view's owner may grant on it and own a function that refreshes it. On Cloud SQL
    # the admin is not a member of the app's runtime roles (the app revoked that), so it joins
    # the owner for these statements only.
    with ExitStack() as acting:
        acting.enter_context(work.acting_as(view_owner))
        if function is not None and function.owner != view_owner:
            acting.enter_context(work.acting_as(function.owner))
        if not may_read_view:
            work.run(
                sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(_APP_SCHEMA, _VIEW), jobs)
            )
        _make_refresh_function(work, function, view_owner)


def _holds(
    work: RoleWork,
    role: str,
    relation: tuple[str, str],
    privilege: str,
    columns: tuple[str, ...] = (),
) -> bool:
    """Whether `role` holds `privilege` on the relation (schema, name), or on each column."""
    qualified = ".".join(relation)
    if columns:
        return all(
            work.value(
                "SELECT has_column_privilege(%s, %s, %s, %s)", (role, qualified, c, privilege)
            )
            for c in columns
        )
    return bool(work.value("SELECT has_table_privilege(%s, %s, %s)", (role, qualified, privilege)))


def _ensure_grant(
    work: RoleWork,
    role: str,
    relation: tuple[str, str],
    privilege: str,
    columns: tuple[str, ...] = (),
) -> None:
    """`GRANT privilege [(columns)] ON schema.name TO role`, unless the role holds it."""
    if _holds(work, role, relation, privilege, columns):
        return
    work.run(
        sql.SQL("GRANT {}{} ON {} TO {}").format(
            sql.SQL(privilege),
            sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
            if columns
            else sql.SQL(""),
            sql.Identifier(*relation),
            sql.Identifier(role),
        )
    )


def _refresh_function(work: RoleWork) -> RefreshFunction | None:
    work.cur.execute(
        """
        SELECT pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig, p.prosrc,
               EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0),
               EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       JOIN pg_roles r ON r.oid = a.grantee
                       WHERE r.rolname = %s AND a.privilege_type = 'EXECUTE')
        FROM pg_proc p WHERE p.oid = to_regprocedure(%s)
        """,
        (JOBS_ROLE, _REFRESH_SIGNATURE),
    )
    row = work.cur.fetchone()
    return RefreshFunction(*row) if row else None


def _make_refresh_function(
    work: RoleWork, function: RefreshFunction | None, view_owner: str
) -> None:
    name = sql.SQL(_REFRESH_SIGNATURE)
    if function is None or not function.defined_as_wanted:
        work.run(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog AS {}"
            ).format(sql.Identifier("pipelines", _REFRESH_FUNCTION), sql.Literal(_REFRESH_BODY))
        )
    owner = function.owner if function else work.value("SELECT current_user")
    if owner != view_owner:
        # The function's new owner must be able to create in its schema; only for this statement.
        owner_id = sql.Identifier(view_owner)
        with work.temporarily(
            not work.value("SELECT has_schema_privilege(%s, 'pipelines', 'CREATE')", (view_owner,)),
            sql.SQL("GRANT CREATE ON SCHEMA pipelines TO {}").format(owner_id),
            sql.SQL("REVOKE CREATE ON SCHEMA pipelines FROM {}").format(owner_id),
        ):
            work.run(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(name, owner_id))
    current = _refresh_function(work)
    assert current is not None
    if current.public_may_execute:
        work.run(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(name))
    if not current.jobs_may_execute:
        work.run(
            sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(name, sql.Identifier(JOBS_ROLE))
        )
