"""Seconds from a new identification to stamped and to visible in `community_ids`, with the
new-work sensors on and off (today's 5-minute schedule), side by side in one run.

For each size (identifications already present, stamped, the view refreshed: `benchmarks.scale`'s
data set) the webserver and daemon run with the project's dagster.yaml on Postgres, GBIF
answering after 100 ms. In each mode, in order: a quiet minute (no inserts: runs launched must
be zero), identifications arriving at a steady rate (one every 2 s), then a burst of 200 at
once, each with a new name GBIF is asked about. Every half second the script reads which of them
are stamped and which are visible in the view (an index lookup each). Per phase it prints p50,
p95 and max of both latencies, the runs launched, and the share of wall time the view spent
refreshing (`pipelines.view_refreshes`), and the mean start-up of the runs (created to started,
started to the pass's step, the step itself).

    .venv/bin/python -m benchmarks.latency [--sizes 10000,1000000] [--steady-seconds 180]
        [--modes "sensors on; sensors off (schedule); sensors on, view every 10 s"]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import yaml

from benchmarks.common import (
    dagster_services,
    gbif_standin,
    generated_names,
    print_table,
    scratch_database,
)
from benchmarks.scale import CLOSED_PORT_URL, load, run_pass
from observing_pipelines.db import identifications
from observing_pipelines_tests.services import Services, fetch
from observing_pipelines_tests.support import PROJECT_ROOT, quiet_schedules

NEW_NAME_KEY_BASE = 700_000_000
"""Keys of the names that arrive during the benchmark, clear of the data set's."""
MODES = {
    "sensors on": {"NEW_WORK_SENSORS": "true"},
    "sensors off (schedule)": {"NEW_WORK_SENSORS": "false"},
    "sensors on, view every 10 s": {"NEW_WORK_SENSORS": "true", "COMMUNITY_IDS_MIN_INTERVAL": "10"},
}
"""The default run compares the first two; the third shows the refresh budget's floor."""


@dataclass
class Arrival:
    uri: str
    occurrence: str
    inserted: float
    stamped: float | None = None
    visible: float | None = None


@dataclass
class Phase:
    name: str
    arrivals: list[Arrival] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


class Watcher:
    """Polls the arrivals' stamps and view rows, and the view's refreshes, every half second."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pending: list[Arrival] = []
        self.refreshes: dict[object, tuple[float, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:  # refreshes before the window are not counted
                cur.execute("SELECT refreshed_at FROM pipelines.view_refreshes")
                self.refreshes = {at: (float("-inf"), 0.0) for (at,) in cur.fetchall()}
        finally:
            conn.close()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def watch(self, arrivals: Sequence[Arrival]) -> None:
        with self.lock:
            self.pending.extend(arrivals)

    def _run(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            while not self.stop.wait(0.5):
                self._look(conn)
        finally:
            conn.close()

    def _look(self, conn: psycopg2.extensions.connection) -> None:
        now = time.monotonic()
        with self.lock:
            waiting = [a for a in self.pending if a.visible is None]
        with conn.cursor() as cur:
            cur.execute(
                "SELECT refreshed_at, seconds FROM pipelines.view_refreshes "
                "WHERE view_name = 'community_ids'"
            )
            for refreshed_at, seconds in cur.fetchall():
                self.refreshes.setdefault(refreshed_at, (now, seconds))
            if not waiting:
                return
            cur.execute(
                "SELECT uri FROM ingester.identifications "
                "WHERE uri = ANY(%s) AND accepted_taxon_key IS NOT NULL",
                ([a.uri for a in waiting if a.stamped is None],),
            )
            stamped = {uri for (uri,) in cur.fetchall()}
            cur.execute(
                "SELECT occurrence_uri FROM ingester.community_ids "
                "WHERE occurrence_uri = ANY(%s) AND accepted_taxon_key IS NOT NULL",
                ([a.occurrence for a in waiting],),
            )
            visible = {uri for (uri,) in cur.fetchall()}
        for arrival in waiting:
            if arrival.uri in stamped:
                arrival.stamped = now
            if arrival.occurrence in visible:
                arrival.stamped = arrival.stamped or now
                arrival.visible = now

    def refresh_seconds(self, start: float, end: float) -> float:
        """Seconds the view spent refreshing inside the window: each refresh is the
        `seconds` before it was seen (half a second late at most), cut to the window."""
        return sum(
            max(0.0, min(end, seen) - max(start, seen - seconds))
            for seen, seconds in self.refreshes.values()
        )


class Ingester:
    """Inserts identifications as the ingester does: one transaction each, on one session."""

    def __init__(self, url: str, prefix: str) -> None:
        self.conn = psycopg2.connect(url)
        self.prefix = prefix
        self.count = 0

    def close(self) -> None:
        self.conn.close()

    def insert(self, names: Sequence[str]) -> list[Arrival]:
        rows = []
        for name in names:
            self.count += 1
            n = f"{self.prefix}-{self.count}"
            rows.append(
                identifications.NewIdentification(
                    f"at://did:plc:latency/identification/{n}",
                    f"did:plc:latency{self.count}",
                    f"at://did:plc:latency/occurrence/{n}",
                    name,
                    "Plantae",
                )
            )
        with self.conn:
            identifications.insert_identifications(self.conn, rows)
        now = time.monotonic()
        return [Arrival(row.uri, row.subject_uri, now) for row in rows]


def percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def runs_between(services: Services, start: float, end: float, clock_offset: float) -> dict:
    """Runs created in the window (monotonic seconds), by job, and their start-up figures."""
    rows = services.query(
        """
        SELECT r.pipeline_name, r.create_timestamp, r.start_time,
               (SELECT min(e.timestamp) FROM dagster.event_logs e
                WHERE e.run_id = r.run_id AND e.dagster_event_type = 'STEP_START')
        FROM dagster.runs r
        WHERE extract(epoch FROM r.create_timestamp) BETWEEN %s AND %s
        """,
        (start + clock_offset, end + clock_offset),
    )
    by_job: dict[str, int] = {}
    queued, launched = [], []
    for job, created, started, step_start in rows:
        by_job[job] = by_job.get(job, 0) + 1
        if started is not None:
            queued.append(started - created.timestamp())
        if started is not None and step_start is not None:
            launched.append(step_start.timestamp() - started)
    return {
        "runs": by_job,
        "created_to_started": statistics.mean(queued) if queued else None,
        "started_to_step": statistics.mean(launched) if launched else None,
    }


def wait_until_visible(arrivals: Sequence[Arrival], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(a.visible is None for a in arrivals):
        time.sleep(0.5)


@contextmanager
def services_for(
    url: str, workdir: Path, gbif_url: str, mode: dict[str, str]
) -> Iterator[Services]:
    env = quiet_schedules()
    env.pop("RESOLVE_TAXA_CRON")  # today's 5-minute schedule stays
    env |= mode | {
        "GBIF_BASE_URL": gbif_url,
        "WIKIDATA_SPARQL_URL": CLOSED_PORT_URL,
    }
    instance = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    with dagster_services(url, workdir, instance=instance, env=env) as services:
        yield services


def measure_mode(
    url: str, gbif_url: str, mode: dict[str, str], names: Iterator[str], args: argparse.Namespace
) -> list[list[object]]:
    clock_offset = time.time() - time.monotonic()
    ingester = Ingester(url, f"mode-{time.monotonic_ns()}")
    rows: list[list[object]] = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        services_for(url, Path(workdir), gbif_url, mode) as services,
        Watcher(url) as watcher,
    ):
        phases = []
        quiet = Phase("no inserts", started=time.monotonic())
        time.sleep(args.quiet_seconds)
        quiet.ended = time.monotonic()
        phases.append(quiet)

        steady = Phase(f"one every {args.interval:g} s", started=time.monotonic())
        while time.monotonic() < steady.started + args.steady_seconds:
            arrivals = ingester.insert([next(names)])
            watcher.watch(arrivals)
            steady.arrivals += arrivals
            time.sleep(
                max(0.0, steady.started + len(steady.arrivals) * args.interval - time.monotonic())
            )
        wait_until_visible(steady.arrivals, args.settle_seconds)
        steady.ended = time.monotonic()
        phases.append(steady)

        burst = Phase(f"burst of {args.burst}", started=time.monotonic())
        burst.arrivals = ingester.insert([next(names) for _ in range(args.burst)])
        watcher.watch(burst.arrivals)
        wait_until_visible(burst.arrivals, args.settle_seconds)
        burst.ended = time.monotonic()
        phases.append(burst)

        for phase in phases:
            stamped = [a.stamped - a.inserted for a in phase.arrivals if a.stamped]
            visible = [a.visible - a.inserted for a in phase.arrivals if a.visible]
            runs = runs_between(services, phase.started, phase.ended, clock_offset)
            wall = phase.ended - phase.started
            rows.append(
                [
                    phase.name,
                    len(phase.arrivals),
                    percentile(stamped, 0.5),
                    percentile(stamped, 0.95),
                    max(stamped, default=None),
                    percentile(visible, 0.5),
                    percentile(visible, 0.95),
                    max(visible, default=None),
                    len(phase.arrivals) - len(visible),
                    ", ".join(f"{job} {n}" for job, n in sorted(runs["runs"].items())) or "0",
                    f"{100 * watcher.refresh_seconds(phase.started, phase.ended) / wall:.1f} %",
                    runs["created_to_started"],
                    runs["started_to_step"],
                ]
            )
    ingester.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="identifications present")
    parser.add_argument("--steady-seconds", type=float, default=180.0)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between inserts")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--quiet-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=420.0, help="wait for the rest")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="GBIF stand-in delay")
    parser.add_argument(
        "--modes", default=";".join(list(MODES)[:2]), help="';'-separated, of: " + "; ".join(MODES)
    )
    args = parser.parse_args()
    per_mode = int(args.steady_seconds / args.interval) + args.burst + 10
    modes = [mode.strip() for mode in args.modes.split(";")]
    table: list[list[object]] = []
    for rows in (int(size) for size in args.sizes.split(",")):
        new_names = generated_names(per_mode * len(modes), seed=rows + 7)
        keys = {name: NEW_NAME_KEY_BASE + i for i, name in enumerate(new_names)}
        with (
            scratch_database(prefix="op_latency") as url,
            gbif_standin(args.latency_ms / 1000, keys) as (gbif_url, _),
        ):
            load(url, rows)
            seeded = run_pass(url)  # all stamped, the view refreshed: the steady state
            print(f"{rows:,} identifications loaded and stamped ({seeded.seconds:.0f} s)")
            fetch(url, "VACUUM ANALYZE", autocommit=True)
            names = iter(new_names)
            for mode in modes:
                for row in measure_mode(url, gbif_url, MODES[mode], names, args):
                    table.append([f"{rows:,}", mode, *row])
                    print(" | ".join(map(str, table[-1])), flush=True)
    print_table(
        f"Insert to stamped and to visible in community_ids (seconds), GBIF at "
        f"{args.latency_ms:g} ms; the project's dagster.yaml",
        [
            "identifications",
            "mode",
            "phase",
            "inserted",
            "stamped p50",
            "p95",
            "max",
            "visible p50",
            "p95",
            "max",
            "not visible",
            "runs launched",
            "refresh share",
            "run created to started",
            "started to step",
        ],
        table,
    )


if __name__ == "__main__":
    main()
