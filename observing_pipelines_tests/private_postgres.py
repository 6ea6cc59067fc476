"""A throwaway PostgreSQL server of our own, for what must not happen to a shared one.

Tests restart it mid-run (`test_faults.py`); the idle-load benchmark starts it with
`pg_stat_statements` preloaded. It runs from a given set of server binaries (pgserver's, which
every test environment has, or a system PostgreSQL's) on a free port and a fresh data directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from observing_pipelines_tests.cloud_sql import autocommit
from observing_pipelines_tests.services import free_port

QUICK_AND_LOOSE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""For throwaway data: no durability work slows a test down."""


@dataclass
class PrivateCluster:
    """The running server: its binaries, data directory, port and the system user it runs as
    (None unless we are root, which PostgreSQL refuses to run as)."""

    bin_dir: Path
    pgdata: Path
    port: int
    system_user: str | None

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        credentials = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self.system_user,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def pg_ctl(self, *args: str) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"), *args)

    def restart(self) -> None:
        """Fast shutdown (every session terminated, open transactions rolled back), then start."""
        self.pg_ctl("-m", "fast", "-w", "restart")

    def admin(self, statement: str) -> None:
        autocommit(self.url(), statement)


def pgserver_bin_dir() -> Path | None:
    """pgserver's PostgreSQL binaries, found without importing pgserver (its import warns)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@contextmanager
def private_cluster(bin_dir: Path, settings: Mapping[str, str]) -> Iterator[PrivateCluster]:
    """initdb, start with these `postgresql.conf` settings, yield; stop and delete at exit.

    As root, do what pgserver (and so `db/embedded.py`) does: run the server as the system user
    `pgserver` (created if missing), which must own the data directory and be able to reach it.
    The directory is a fresh one in the system temp directory, not under pytest's `tmp_path`:
    every pytest session starting on the machine resets `/tmp/pytest-of-<user>` to mode 0700,
    which would lock the server out of its own data in the middle of a run.
    """
    root = Path(tempfile.mkdtemp(prefix="observing-private-pg-"))
    pgdata = root / "pgdata"
    pgdata.mkdir()
    system_user = None
    if os.geteuid() == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists
        system_user = "pgserver"
        ensure_user_exists(system_user)
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(system_user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    cluster = PrivateCluster(bin_dir, pgdata, free_port(), system_user)
    try:
        cluster.run(
            "initdb",
            "-D",
            str(pgdata),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": "''",
            "max_connections": "50",
            **settings,
        }
        with open(pgdata / "postgresql.conf", "a") as postgresql_conf:
            postgresql_conf.writelines(f"\n{key} = {value}" for key, value in conf.items())
        cluster.pg_ctl("-w", "start")
        yield cluster
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
            user=system_user,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def migrated_private_cluster(database: str) -> Iterator[PrivateCluster]:
    """A private cluster from pgserver's binaries holding `database`, migrated as `dev` does
    (app mirror included); the test is skipped where pgserver is not installed."""
    import pytest

    from observing_pipelines.db import migrate

    bin_dir = pgserver_bin_dir()
    if bin_dir is None:
        pytest.skip("pgserver is not installed")
    with private_cluster(bin_dir, QUICK_AND_LOOSE) as cluster:
        cluster.admin(f"CREATE DATABASE {database}")
        migrate.upgrade_all(cluster.url(database), app_mirror=True)
        yield cluster
