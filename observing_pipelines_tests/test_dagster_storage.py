"""Dagster's storage as dagster.yaml configures it: pooled connections in the app database."""

from __future__ import annotations

import shutil

from dagster import DagsterInstance, DagsterRun

from observing_pipelines_tests.services import fetch
from observing_pipelines_tests.support import PROJECT_ROOT


def backends(db_url: str) -> list[tuple]:
    """Server processes connected to this database, other than the one asking."""
    return fetch(
        db_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )


def sessions(db_url: str) -> int:
    """Connections ever opened to this database (PostgreSQL 14+)."""
    return fetch(
        db_url, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )[0][0]


def test_storage_calls_reuse_pooled_connections(instance, db_url):
    instance.get_runs()
    before = sessions(db_url)
    for n in range(20):
        instance.run_storage.set_cursor_values({"probe": str(n)})
        instance.get_runs()
        instance.schedule_storage.all_instigator_state()
    # Our own `sessions` probe is the only new connection (stock dagster-postgres: over 100).
    assert sessions(db_url) - before <= 2
    assert len(backends(db_url)) <= 2  # the pool's size, shared by the three storages


def test_a_dropped_connection_is_replaced_without_a_failed_call(instance, db_url):
    """After a server restart or failover the pooled connections are dead; the pre-use ping
    replaces them, so the daemon's next storage call succeeds instead of raising."""
    instance.add_run(DagsterRun(job_name="probe"))
    assert backends(db_url)
    fetch(
        db_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert [run.job_name for run in instance.get_runs()] == ["probe"]


def test_instances_built_in_one_process_share_one_pool(tmp_path, db_url, monkeypatch):
    """The code server builds a fresh instance for every sensor tick and never disposes it:
    each must not bring connections of its own."""
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DATABASE_URL", db_url)
    instances = [DagsterInstance.from_config(str(tmp_path)) for _ in range(5)]
    for instance in instances:
        instance.get_runs()
    assert len(backends(db_url)) <= 2
