"""Memory of the Dagster services, idle and during a resolve_taxa run, against Cloud Run's 1 GiB.

Webserver and daemon start as the container starts them, with the project's dagster.yaml (only
the dequeue interval shortened to 1 s). Every process is sampled with psutil: the services,
the code servers they spawn, the run worker and its step processes. The GBIF stand-in answers
almost at once and GBIF_RATE_LIMIT_MS=0: pacing changes how long the run takes, not what it
holds. Schedules are moved to 1 January so no scheduled run joins in; the daemons and the
sensor still poll as in production.

    .venv/bin/python -m benchmarks.memory [--names 10000] [--idle-seconds 20]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from benchmarks.common import (
    dagster_services,
    gbif_standin,
    generated_names,
    insert_identifications,
    print_table,
    scratch_database,
    species_keys,
    standin_parser,
)
from observing_pipelines_tests.services import ROLES, SERVICES, Services, fetch
from observing_pipelines_tests.support import PROJECT_ROOT, quiet_schedules

MIB = 1024 * 1024
GIB = 1024 * MIB
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@dataclass
class Samples:
    """RSS sums per role, per service (Cloud Run instance) and in total, one entry a sample."""

    by_role: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_service: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    total: list[int] = field(default_factory=list)
    processes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Most processes of each role seen at once."""
    largest: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Largest single process of each role."""

    def take(self, services: Services) -> None:
        roles: dict[str, int] = dict.fromkeys(ROLES, 0)
        owners: dict[str, int] = dict.fromkeys(SERVICES, 0)
        counts: dict[str, int] = dict.fromkeys(ROLES, 0)
        for service, role, process in services.members():
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            roles[role] += rss
            owners[service] += rss
            counts[role] += 1
            self.largest[role] = max(self.largest[role], rss)
        for role in ROLES:
            self.by_role[role].append(roles[role])
            self.processes[role] = max(self.processes[role], counts[role])
        for service in SERVICES:
            self.by_service[service].append(owners[service])
        self.total.append(sum(roles.values()))


def run_status(db_url: str, run_id: str) -> tuple[str, float | None, float | None]:
    ((status, started, ended),) = fetch(
        db_url, "SELECT status, start_time, end_time FROM dagster.runs WHERE run_id = %s", (run_id,)
    )
    return status, started, ended


def stamped(db_url: str) -> int:
    ((count,),) = fetch(
        db_url, "SELECT count(*) FROM ingester.identifications WHERE accepted_taxon_key IS NOT NULL"
    )
    return int(count)


def mib(value: float) -> str:
    return f"{value / MIB:,.0f}"


def main() -> None:
    parser = standin_parser(__doc__, names=10_000, latency_ms=2.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle sampling time")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest run to wait for")
    args = parser.parse_args()

    names = generated_names(args.names)
    keys = species_keys(names)
    instance = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    instance["run_queue"]["dequeue_interval_seconds"] = 1
    idle, busy = Samples(), Samples()
    with (
        gbif_standin(args.latency_ms / 1000, keys) as (base_url, fake),
        scratch_database(prefix="op_bench_memory") as db_url,
        tempfile.TemporaryDirectory(prefix="op_bench_memory_") as workdir,
    ):
        insert_identifications(db_url, names, 1)
        env = {
            "GBIF_BASE_URL": base_url,
            "GBIF_RATE_LIMIT_MS": "0",
            **quiet_schedules(),
        }
        with dagster_services(db_url, Path(workdir), instance=instance, env=env) as services:
            print(f"services up; sampling idle for {args.idle_seconds:g}s", flush=True)
            deadline = time.monotonic() + args.idle_seconds
            while time.monotonic() < deadline:
                idle.take(services)
                time.sleep(args.interval)
            run_id = services.client.submit_job_execution(
                "resolve_taxa", repository_location_name="observing_pipelines"
            )
            print(f"submitted resolve_taxa run {run_id}", flush=True)
            deadline = time.monotonic() + args.timeout
            status, started, ended = run_status(db_url, run_id)
            while status not in FINISHED:
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run_id} still {status} after {args.timeout:g}s")
                busy.take(services)
                time.sleep(args.interval)
                status, started, ended = run_status(db_url, run_id)
        resolved, gbif_requests = stamped(db_url), fake.calls

    rows = [
        [
            role,
            busy.processes[role] or idle.processes[role],
            mib(statistics.median(idle.by_role[role])),
            mib(max(busy.by_role[role])),
            mib(busy.largest[role]),
        ]
        for role in ROLES
    ]
    for service in SERVICES:
        rows.append(
            [
                f"{service} instance (all it spawned)",
                "",
                mib(statistics.median(idle.by_service[service])),
                f"{mib(max(busy.by_service[service]))} ({max(busy.by_service[service]) / GIB:.0%}"
                " of 1 GiB)",
                "",
            ]
        )
    peak = max(busy.total)
    rows.append(
        [
            "all together",
            "",
            mib(statistics.median(idle.total)),
            f"{mib(peak)} ({peak / GIB:.0%} of 1 GiB)",
            "",
        ]
    )
    seconds = (ended or 0.0) - (started or 0.0)
    print_table(
        f"RSS in MiB: idle (median of {len(idle.total)} samples over {args.idle_seconds:g}s) and "
        f"peak while resolve_taxa ran ({len(busy.total)} samples, every {args.interval:g}s). "
        f"Run {status}: {resolved:,} of {args.names:,} names stamped, "
        f"{gbif_requests:,} GBIF requests, {seconds:.1f}s from run start to end",
        ["role", "processes", "idle RSS", "peak RSS during run", "largest single process"],
        rows,
    )


if __name__ == "__main__":
    main()
