"""How long a deploy (or a lost container) keeps a run from finishing, with the project's
dagster.yaml exactly as it is: run monitoring every 30 s, a dead run's pool slots freed 60 s
after its end, a 15 s dequeue.

Each scenario starts webserver and daemon as the container does, on a fresh database, with a
resolve_taxa run in flight (GBIF's stand-in holds its first answer), then:

- deploy: SIGTERM to the `daemon` command, SIGKILL to what is left 10 s later (Cloud Run), a
  new daemon at once;
- lost container: SIGKILL to the command and everything it started, a new daemon at once.

It prints, in seconds after the stop: the daemon gone, the run failed, its retry started, its
retry succeeded.

    .venv/bin/python -m benchmarks.orphaned_run [--rounds 1]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, scratch_database
from observing_pipelines_tests.services import (
    CLOUD_RUN_GRACE_SECONDS,
    Services,
    hanging_identification,
    kill_container,
    recovery,
    run_in_flight,
    stand_ins,
    wait_for,
)
from observing_pipelines_tests.support import quiet_schedules


def scenario(kind: str, round_number: int) -> list[object]:
    with (
        scratch_database(prefix="op_orphan") as db_url,
        stand_ins() as apis,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = apis.env() | quiet_schedules()
        services = Services(Path(tmp), db_url, env, isolate=True, production_intervals=True)
        try:
            wait_for(services.server_info, 120, "the webserver")
            entry = (5219426 + round_number, f"Panthera onca{'x' * round_number}", "SPECIES")
            hanging_identification(services, entry, apis)
            run_id = run_in_flight(services, apis, entry[1])
            stopped = time.time()
            daemon = services.process("daemon")
            if kind == "deploy":
                services.terminate("daemon")
                try:
                    daemon.wait(timeout=CLOUD_RUN_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    kill_container(daemon)
            else:
                services.crash("daemon")
            gone = round(time.time() - stopped, 1)
            services.start("daemon")
            timeline = recovery(services, run_id, stopped)
        finally:
            services.stop()
    return [
        kind,
        round_number + 1,
        gone,
        timeline["failed"],
        timeline["retry_started"],
        timeline["retry_succeeded"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rows = [
        scenario(kind, round_number)
        for round_number in range(args.rounds)
        for kind in ("deploy", "lost container")
    ]
    print_table(
        "A run in flight when its daemon goes: seconds after the stop (project dagster.yaml)",
        ["scenario", "round", "daemon gone", "run failed", "retry started", "retry succeeded"],
        rows,
    )


if __name__ == "__main__":
    main()
