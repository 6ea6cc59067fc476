"""Dagster's run, event and schedule storage in the app's database, schema `dagster`.

dagster-postgres has no schema option (dagster-io/dagster#4861, #15508), so the supported
workaround is a `search_path` in the connection options. Rather than ask operators for a second,
hand-derived URL, this storage resolves the database exactly as the jobs do (`DATABASE_URL` or
`DB_*`) and adds the search path itself. `dagster.yaml` names it under `storage: custom:`.

It also keeps a small connection pool. Stock dagster-postgres opens and closes a connection for
every storage call outside the webserver (`NullPool`): an idle daemon makes well over a hundred
new connections a minute (dagster-io/dagster#20325; no pool knob yet, #33935), each paying TLS
and auth on Cloud SQL. `benchmarks/idle_db_load.py` measures both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from dagster import Field
from dagster._serdes import ConfigurableClassData
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import create_pg_engine, set_pg_statement_timeout
from sqlalchemy import event
from sqlalchemy.engine import Engine

from observing_pipelines.db.connection import (
    DAGSTER_SCHEMA,
    database_url,
    sqlalchemy_url,
    with_session_options,
)
from observing_pipelines.settings import Settings


def dagster_storage_url(url: str) -> str:
    """The app database URL as Dagster must see it: psycopg2 driver, `dagster` schema first."""
    return sqlalchemy_url(with_session_options(url, search_path=DAGSTER_SCHEMA))


@dataclass(frozen=True)
class ConnectionPool:
    """One pool per process, which the run, event log and schedule storage share.

    `size` connections stay open; bursts (the daemon's threads polling at once, a run's GBIF
    workers logging) may open `max_overflow` more, closed again when returned, so size plus
    overflow should cover `GBIF_MAX_CONCURRENCY` + 1. Connections are replaced after
    `recycle_seconds` and pinged before use, so a restarted or failed-over server costs one
    reconnect instead of a failed storage call.
    """

    size: int = 2
    max_overflow: int = 6
    recycle_seconds: int = 3600

    def engine_options(self) -> dict[str, Any]:
        return {
            "pool_size": self.size,
            "max_overflow": self.max_overflow,
            "pool_recycle": self.recycle_seconds,
            "pool_pre_ping": True,
            # A pooled connection lives for an hour: notice a dead peer (failover, a dropped
            # NAT mapping) in about a minute instead of the kernel's 15, so a ping cannot hang.
            "connect_args": {
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "connect_timeout": 10,
            },
        }


@functools.cache
def _pooled_engine(
    postgres_url: str, pool: ConnectionPool, statement_timeout_ms: int | None = None
) -> Engine:
    """One engine per URL and pool in a process, shared by every instance built in it: the
    code server builds a new `DagsterInstance` for each sensor tick and never disposes its
    storages, so engines of their own would each leave their connections open. The webserver's
    has its statement timeout too."""
    engine = create_pg_engine(postgres_url, isolation_level="AUTOCOMMIT", **pool.engine_options())
    if statement_timeout_ms is not None:
        event.listen(
            engine,
            "connect",
            lambda connection, _: set_pg_statement_timeout(connection, statement_timeout_ms),
        )
    return engine


class _PooledStorage:
    """What the three pooled storages share: the process's pool in place of dagster-postgres's
    connection-per-call engine, and in the webserver too.

    Stock `optimize_for_webserver` gives each of the three storages an engine of its own
    (pool_size 1, overflow from a CLI flag, 20 by default: up to 63 connections) and pings
    nothing, so the first request after a failover fails. Here the webserver keeps the one
    pool `connection_pool` sizes, pinged before use, with the webserver's statement timeout.
    """

    _engine: Engine
    postgres_url: str
    pool: ConnectionPool | None

    def __init__(self, postgres_url: str, autocreate: bool, pool: ConnectionPool | None) -> None:
        super().__init__(postgres_url, autocreate)  # type: ignore[call-arg]  # the storage's own
        self.pool = pool
        if pool is not None:
            # The storages read `_engine` for every call (pinned dagster-postgres 0.29.27).
            self._engine.dispose()
            self._engine = _pooled_engine(self.postgres_url, pool)

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        if self.pool is None:
            super().optimize_for_webserver(  # type: ignore[misc]
                statement_timeout, pool_recycle, max_overflow
            )
            return
        self._engine = _pooled_engine(self.postgres_url, self.pool, statement_timeout)


class _RunStorage(_PooledStorage, PostgresRunStorage):
    pass


class _EventLogStorage(_PooledStorage, PostgresEventLogStorage):
    pass


class _ScheduleStorage(_PooledStorage, PostgresScheduleStorage):
    pass


class AppDatabaseDagsterStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose URL comes from the app's database settings, optionally
    with a connection pool (`_PooledStorage`) in place of dagster-postgres's connection-per-call
    engines."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        # What DagsterPostgresStorage.__init__ does (dagster-postgres 0.29.27), with our parts.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = _RunStorage(postgres_url, should_autocreate_tables, pool)
        self._event_log_storage = _EventLogStorage(postgres_url, should_autocreate_tables, pool)
        self._schedule_storage = _ScheduleStorage(postgres_url, should_autocreate_tables, pool)
        super(DagsterPostgresStorage, self).__init__()  # type: ignore[no-untyped-call]  # past its __init__, to DagsterStorage's (untyped)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "should_autocreate_tables": Field(bool, is_required=False, default_value=True),
            "connection_pool": Field(
                {
                    "size": Field(int, is_required=False, default_value=ConnectionPool.size),
                    "max_overflow": Field(
                        int, is_required=False, default_value=ConnectionPool.max_overflow
                    ),
                    "recycle_seconds": Field(
                        int, is_required=False, default_value=ConnectionPool.recycle_seconds
                    ),
                },
                is_required=False,
                description="Keep connections open (omit for Dagster's connection per call).",
            ),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> AppDatabaseDagsterStorage:
        pool = config_value.get("connection_pool")
        return cls(
            postgres_url=dagster_storage_url(database_url(Settings.from_env().database)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            pool=ConnectionPool(**pool) if pool is not None else None,
        )
