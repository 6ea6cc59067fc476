"""Idle database load of the daemon and webserver: our dagster.yaml against Dagster's defaults.

Both instances serve the same code location (its RUNNING schedules, which do not fire in the
window, and its sensors: dead letters, job requests, new work and the view's refresh, each
finding nothing to do) on a private PostgreSQL cluster started with
`pg_stat_statements`, one after the other in the same run. After a warm-up, the script counts for
a minute: new connections (`pg_stat_database.sessions`), transactions, statements
(`pg_stat_statements`, with the pool's pre-use pings shown apart) and connections held open. The
private cluster needs the server binaries of a system PostgreSQL (`--pg-bin`, default: the newest
under /usr/lib/postgresql), because pgserver's build has no `pg_stat_statements`.

    .venv/bin/python -m benchmarks.idle_db_load [--warmup 40] [--window 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import dagster_services, print_table, scratch_database
from observing_pipelines.db.dagster_storage import dagster_storage_url
from observing_pipelines_tests.private_postgres import QUICK_AND_LOOSE, private_cluster
from observing_pipelines_tests.services import fetch
from observing_pipelines_tests.support import PROJECT_ROOT, quiet_schedules

PINGS = {"SELECT 1", "SELECT $1"}  # the pool's pre-ping, as sent and as pg_stat_statements shows it


@dataclass(frozen=True)
class Window:
    new_connections: int
    transactions: int
    statements: int
    pings: int
    held_open: int
    top: list[tuple[int, str]]


def _pg_bin(default_root: Path = Path("/usr/lib/postgresql")) -> Path:
    versions = sorted(default_root.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise SystemExit("No system PostgreSQL found; pass --pg-bin /path/to/postgresql/bin")
    return versions[-1].parent


@contextmanager
def stats_cluster(pg_bin: Path) -> Iterator[str]:
    """A throwaway cluster with pg_stat_statements preloaded; yields its admin URL."""
    settings = QUICK_AND_LOOSE | {
        "shared_preload_libraries": "'pg_stat_statements'",
        "pg_stat_statements.track": "all",
    }
    with private_cluster(pg_bin, settings) as cluster:
        cluster.admin("CREATE EXTENSION pg_stat_statements")
        yield cluster.url()


def measure(admin_url: str, database: str, seconds: float) -> Window:
    """Counters of `database` over `seconds`, read from the admin database so the reads do not
    count against it."""
    counters = (
        "SELECT oid, sessions, xact_commit + xact_rollback FROM pg_stat_database d "
        "JOIN pg_database USING (datname) WHERE datname = %s"
    )
    [(oid, sessions_before, xacts_before)] = fetch(admin_url, counters, (database,))
    fetch(admin_url, "SELECT pg_stat_statements_reset(0, %s::oid, 0)", (oid,))
    time.sleep(seconds)
    fetch(admin_url, "SELECT pg_stat_clear_snapshot()")
    [(_, sessions_after, xacts_after)] = fetch(admin_url, counters, (database,))
    calls = fetch(
        admin_url,
        "SELECT calls, query FROM pg_stat_statements WHERE dbid = %s ORDER BY calls DESC",
        (oid,),
    )
    held = fetch(
        admin_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )[0][0]
    return Window(
        new_connections=sessions_after - sessions_before,
        transactions=xacts_after - xacts_before,
        statements=sum(n for n, _ in calls),
        pings=sum(n for n, query in calls if query.strip() in PINGS),
        held_open=held,
        top=[(n, " ".join(query.split())[:90]) for n, query in calls[:8]],
    )


def instances(db_url: str) -> dict[str, dict[str, Any]]:
    """Dagster's defaults (stock Postgres storage, nothing else) and the project's dagster.yaml."""
    stock = {"storage": {"postgres": {"postgres_url": dagster_storage_url(db_url)}}}
    ours = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    return {"Dagster defaults": stock, "observing-pipelines": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds before counting")
    parser.add_argument("--window", type=float, default=60.0, help="seconds counted")
    parser.add_argument("--pg-bin", type=Path, default=None, help="PostgreSQL server binaries")
    args = parser.parse_args()
    per_minute = 60.0 / args.window
    rows, tops = [], {}
    with stats_cluster(args.pg_bin or _pg_bin()) as admin_url:
        for label in ("Dagster defaults", "observing-pipelines"):
            with scratch_database(admin_url, prefix="op_idle") as db_url:
                database = db_url.rsplit("/", 1)[-1].split("?")[0]
                instance = instances(db_url)[label]
                with (
                    tempfile.TemporaryDirectory() as workdir,
                    dagster_services(
                        db_url,
                        Path(workdir),
                        instance=instance,
                        env=quiet_schedules() | {"NEW_WORK_SENSORS": "true"},  # as deployed
                    ),
                ):
                    time.sleep(args.warmup)
                    window = measure(admin_url, database, args.window)
            rows.append(
                [
                    label,
                    round(window.new_connections * per_minute),
                    round(window.transactions * per_minute),
                    round(window.statements * per_minute),
                    round(window.pings * per_minute),
                    window.held_open,
                ]
            )
            tops[label] = window.top
    print_table(
        f"Idle load of daemon + webserver, per minute ({args.window:.0f} s after "
        f"{args.warmup:.0f} s warm-up)",
        [
            "instance",
            "new connections",
            "transactions",
            "statements",
            "of which pings",
            "connections held open",
        ],
        rows,
    )
    for label, top in tops.items():
        print_table(f"Top statements in the window: {label}", ["calls", "statement"], top)


if __name__ == "__main__":
    main()
