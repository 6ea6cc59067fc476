"""Database URLs as the app builds them, and connections that say who they are.

One URL serves three consumers: psycopg2 (the jobs), SQLAlchemy/Alembic (our migrations) and
dagster-postgres (Dagster's storage, pinned to the `dagster` schema through `search_path`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

from observing_pipelines.settings import DatabaseSettings


class AdvisoryLock(IntEnum):
    """Every PostgreSQL advisory lock key we take, in one place, so that no two collide."""

    WRITES = 0x7461786100000001
    """Our writers of identifications and taxa, one at a time (transaction-scoped)."""
    DAEMON_LEADER = 0x7461786100000002
    """The one daemon of an instance (session-scoped, `supervisor.py`)."""
    VIEW_REFRESH = 0x7461786100000003
    """One refresher of community_ids at a time (transaction-scoped)."""


PIPELINES_SCHEMA = "pipelines"
DAGSTER_SCHEMA = "dagster"
APPLICATION_NAME = "observing_pipelines"


class DatabaseNotConfiguredError(RuntimeError):
    """Neither DATABASE_URL nor DB_HOST is set."""

    def __init__(self) -> None:
        super().__init__(
            "no database configured: set DATABASE_URL, or DB_HOST (a host name or a "
            "/cloudsql/... socket directory) with DB_NAME, DB_USER and DB_PASSWORD"
        )


def database_url(settings: DatabaseSettings) -> str:
    """The libpq URL for the configured database, as the app's `pg-url-env` assembles it.

    `DATABASE_URL` wins. Otherwise a `DB_HOST` starting with `/` is a Unix socket directory
    (Cloud Run's `/cloudsql/<project>:<region>:<instance>`) and goes into the `host` query
    parameter, which libpq, psycopg2 and SQLAlchemy all understand.
    """
    if settings.url:
        return settings.url
    if not settings.host:
        raise DatabaseNotConfiguredError()
    credentials = quote(settings.user or "postgres", safe="")
    if settings.password:
        credentials += ":" + quote(settings.password, safe="")
    name = quote(settings.name or "postgres", safe="")
    if settings.host.startswith("/"):
        query = urlencode({"host": settings.host, "port": settings.port})
        return f"postgresql://{credentials}@/{name}?{query}"
    return f"postgresql://{credentials}@{settings.host}:{settings.port}/{name}"


def with_session_options(
    url: str, *, search_path: str | None = None, role: str | None = None
) -> str:
    """`url` whose sessions start with this `search_path` and as this `role`, added to the
    libpq `options` it already has (a later `-c` wins; other query parameters kept).

    `role` is `SET ROLE` at connection start: `migrate` runs our and Dagster's migrations as
    the jobs' role, so what they create belongs to it from the start.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    options = [v for k, v in query if k == "options"]
    options += [f"-c{k}={v}" for k, v in (("search_path", search_path), ("role", role)) if v]
    query = [(k, v) for k, v in query if k != "options"]
    if options:
        query.append(("options", " ".join(options)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def sqlalchemy_url(url: str) -> str:
    """Pin the psycopg2 driver: a bare `postgresql://` means psycopg 3 on SQLAlchemy 2.1."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg2://{rest}"
    return url


_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):[^@/?#]*@", re.IGNORECASE)
_PARAMETER_PASSWORD = re.compile(
    r"((?:^|[?&\s])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&#\s]*)", re.IGNORECASE
)


def redact(dsn: str) -> str:
    """The connection string with its password replaced by `***`, whatever its form: a URL
    (`postgresql://user:pw@host/db`), a URL with `password=` among its parameters (the
    `/cloudsql` socket form), or libpq's `key=value` words (`host=... password='...'`). The
    rest is left exactly as given, so the line still says which database was meant."""
    return _PARAMETER_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", dsn))


@contextmanager
def connect(
    url: str, *, statement_timeout_ms: int = 0, connect_timeout_seconds: int | None = None
) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection tagged with our application name; closed on exit.

    Transactions are explicit (`with conn:` commits or rolls back), so a crash mid-pass leaves
    only whole batches behind. `connect_timeout_seconds` bounds the wait for a server that does
    not answer (libpq's default waits for the operating system, minutes).
    """
    options = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else None
    conn = psycopg2.connect(
        url,
        application_name=APPLICATION_NAME,
        options=options,
        connect_timeout=connect_timeout_seconds,  # None: left out, as `options` is
    )
    try:
        yield conn
    finally:
        conn.close()


PROBE_TIMEOUT_MS = 10_000
_kept: dict[str, psycopg2.extensions.connection] = {}
_kept_lock = threading.Lock()


@contextmanager
def kept_connection(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection kept open across calls in this process, for the sensors' probes: a probe
    every few seconds must not cost a connection each time (`benchmarks/idle_db_load.py`). One
    caller at a time holds it; a connection that failed is closed and the next call opens a
    fresh one. Its statements time out after `PROBE_TIMEOUT_MS`, so a lock never hangs a tick.
    """
    with _kept_lock:
        conn = _kept.get(url)
        if conn is None or conn.closed:
            conn = _kept[url] = psycopg2.connect(
                url,
                application_name=f"{APPLICATION_NAME}_sensors",
                options=f"-c statement_timeout={PROBE_TIMEOUT_MS}",
            )
        try:
            yield conn
        except psycopg2.Error:
            del _kept[url]
            conn.close()
            raise
        finally:
            if not conn.closed and conn.status != psycopg2.extensions.STATUS_READY:
                conn.rollback()  # never leave a transaction open between ticks


def fetch_count(cur: psycopg2.extensions.cursor) -> int:
    """The one number a `SELECT count(*)`-like statement just returned."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {cur.query!r}")
    return int(row[0])


def count_rows(conn: psycopg2.extensions.connection, query: str) -> int:
    """How many rows `query` returns (an invariant's violations, for its asset check)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM ({query}) v")
        return fetch_count(cur)
