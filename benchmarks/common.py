"""Shared pieces of the benchmark scripts: a Postgres server, scratch databases, bulk test data,
a GBIF stand-in with latency, the Dagster services as the container starts them, and tables.

Everything here is real (Postgres, loopback HTTP, subprocesses), so the numbers include what
production pays for; only GBIF is simulated, with a fixed answer delay.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import requests
import yaml
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from pytest_httpserver import HTTPServer

from observing_pipelines.db import migrate
from observing_pipelines_tests.cloud_sql import new_database
from observing_pipelines_tests.fakes import HELIANTHUS_LINEAGE, FakeGbif, PacedGbif, match_body
from observing_pipelines_tests.services import dagster_env, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FINISHED = frozenset(
    {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
)
FIRST_SPECIES_KEY = 100_000_000
GENUS_KEY_BASE = 9_000_000_000
"""Generated genera get keys from here up, clear of any species key a benchmark picks."""


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A markdown table, so results paste straight into an issue or PR."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- Postgres --------------------------------------------------------------------------------


@functools.cache
def server_url() -> str:
    """A server where databases may be created; the embedded one only when none is configured
    (started once per process, stopped when it exits)."""
    configured = os.environ.get("OBSERVING_BENCH_DATABASE_URL") or os.environ.get(
        "OBSERVING_TEST_DATABASE_URL"
    )
    if configured:
        return configured
    from observing_pipelines.db.embedded import start_embedded_postgres

    return start_embedded_postgres(PROJECT_ROOT / ".local" / "bench-pgdata", keep_running=False)


@contextmanager
def scratch_database(server: str | None = None, *, prefix: str = "op_bench") -> Iterator[str]:
    """A fresh database migrated like `observing-pipelines migrate --app-mirror`, dropped at exit
    even if connections are still open."""
    with new_database(server or server_url(), prefix=prefix) as url:
        migrate.upgrade_all(url, app_mirror=True)
        yield url


_INSERT_IDENTIFICATIONS = """
WITH wanted AS (
    SELECT w.i, w.name, g.n
    FROM bench_wanted w CROSS JOIN LATERAL generate_series(1, w.count) AS g(n)
), occurrences AS (
    INSERT INTO ingester.occurrences (uri, cid, did, created_at)
    SELECT %(prefix)s || 'occurrence/' || i || '-' || n, 'bench-cid',
           'did:plc:observer' || (i %% 1000), now()
    FROM wanted
)
INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid, scientific_name,
    kingdom, date_identified)
SELECT %(prefix)s || 'identification/' || i || '-' || n, 'bench-cid',
       'did:plc:identifier' || ((i + n) %% 1000), %(prefix)s || 'occurrence/' || i || '-' || n,
       'bench-cid', name, %(kingdom)s, now()
FROM wanted
"""


def insert_identifications(
    db_url: str,
    names: Sequence[str],
    per_name: int | Sequence[int],
    kingdom: str | None = "Plantae",
) -> int:
    """Add `per_name` identifications (each on its own occurrence) for every name; return how
    many were added.

    The rows are what `identifications.insert_identifications` writes, but made inside Postgres by
    one `INSERT ... SELECT` over the names COPYed in: a million rows cost the index upkeep and
    little else. Repeated calls never collide (each uses its own URI prefix).
    """
    counts = [per_name] * len(names) if isinstance(per_name, int) else list(per_name)
    if len(counts) != len(names):
        raise ValueError(f"{len(names)} names but {len(counts)} counts")
    rows = io.StringIO()
    csv.writer(rows).writerows(zip(range(len(names)), names, counts, strict=True))
    rows.seek(0)
    prefix = f"at://did:plc:bench/{uuid.uuid4().hex[:8]}/"
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TEMPORARY TABLE bench_wanted (i bigint, name text, count int) "
                "ON COMMIT DROP"
            )
            cur.copy_expert("COPY bench_wanted FROM STDIN WITH (FORMAT csv)", rows)
            cur.execute(_INSERT_IDENTIFICATIONS, {"prefix": prefix, "kingdom": kingdom})
            added = cur.rowcount
            cur.execute("ANALYZE ingester.identifications, ingester.occurrences")
        return added
    finally:
        conn.close()


# -- names and the GBIF stand-in -------------------------------------------------------------

_ONSETS = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "ph", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "io")
_GENUS_ENDINGS = ("us", "a", "um", "is", "ella", "odon", "anthus", "opsis", "ites")
_EPITHET_ENDINGS = ("us", "a", "um", "is", "ensis", "oides", "ata", "ii", "ica", "ifolia")


def _word(rng: random.Random, endings: Sequence[str]) -> str:
    syllables = rng.randint(2, 3)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + (
        rng.choice(endings)
    )


def generated_names(n: int, seed: int = 0) -> list[str]:
    """`n` distinct binomials ("Genus epithet"), about ten species per genus, the same for
    the same seed: plausible names without any list of real ones."""
    rng = random.Random(seed)
    genera: set[str] = set()
    while len(genera) < max(1, n // 10):
        genera.add(_word(rng, _GENUS_ENDINGS).capitalize())
    pool = sorted(genera)
    names: dict[str, None] = {}  # insertion-ordered set
    while len(names) < n:
        names.setdefault(f"{rng.choice(pool)} {_word(rng, _EPITHET_ENDINGS)}", None)
    return list(names)


def standin_parser(doc: str, *, names: int, latency_ms: float) -> argparse.ArgumentParser:
    """Options every benchmark against the GBIF stand-in takes: how many names, how slow."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--names", type=int, default=names, help="distinct unstamped names")
    parser.add_argument("--latency-ms", type=float, default=latency_ms, help="stand-in delay")
    return parser


def species_keys(names: Sequence[str]) -> dict[str, int]:
    """A backbone key for each generated name, for the GBIF stand-in to answer with."""
    return {name: FIRST_SPECIES_KEY + i for i, name in enumerate(names)}


@contextmanager
def gbif_standin(
    latency_seconds: float, names: Mapping[str, int] | None = None
) -> Iterator[tuple[str, FakeGbif]]:
    """A threaded loopback server answering `/v2/species/match` like GBIF after
    `latency_seconds`; it knows each name as an accepted species with the given key (its genus
    gets a generated key under a fixed plant lineage) and answers NONE otherwise."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with HTTPServer(host="127.0.0.1", threaded=True) as server:
        fake = PacedGbif(server, delay=latency_seconds)
        genus_keys: dict[str, int] = {}
        family_lineage = HELIANTHUS_LINEAGE[:-1]  # kingdom to family; the genus is generated
        for name, key in (names or {}).items():
            genus = name.split()[0]
            genus_key = genus_keys.setdefault(genus, GENUS_KEY_BASE + len(genus_keys))
            lineage = [*family_lineage, (genus_key, genus, "GENUS")]
            fake.add_name(name, match_body("EXACT", (key, name, "SPECIES"), lineage))
        yield server.url_for("").rstrip("/"), fake


# -- Dagster services ------------------------------------------------------------------------

SERVICES = ("webserver", "daemon")
ROLES = ("webserver", "daemon", "code server", "run worker")


@dataclass
class DagsterServices:
    """The running webserver and daemon (`observing-pipelines webserver|daemon`) and what they
    spawned: code servers (`dagster api grpc`), run workers and their step processes."""

    port: int
    processes: dict[str, psutil.Popen]
    graphql: DagsterGraphQLClient
    logs: dict[str, Path]

    def wait_for_run(self, run_id: str, timeout: float = 600.0) -> DagsterRunStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.graphql.get_run_status(run_id)
            if status in FINISHED:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status.value} after {timeout:g}s")
            time.sleep(0.5)

    def members(self) -> list[tuple[str, str, psutil.Process]]:
        """(service, role, process) for both services and every live descendant. A service's
        wrapper (`observing-pipelines ...`, which relays its logs) has the service's role;
        step processes have their run worker's."""
        return [
            (service, role, member)
            for service, process in self.processes.items()
            for member, role in _walk(process, service)
        ]

    def all_processes(self) -> list[psutil.Process]:
        """Both services and every live descendant (for RSS sums)."""
        return [member for _, _, member in self.members()]

    def by_role(self) -> dict[str, list[psutil.Process]]:
        roles: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
        for _, role, member in self.members():
            roles[role].append(member)
        return roles

    def tree(self, service: str) -> list[psutil.Process]:
        """One service and everything below it: what one Cloud Run instance holds."""
        return [member for owner, _, member in self.members() if owner == service]


def _walk(process: psutil.Process, inherited: str) -> Iterator[tuple[psutil.Process, str]]:
    """The process and its descendants with their roles. A code server starts each run as a
    multiprocessing child (which starts the step processes and their log tails), so whatever
    a code server spawned belongs to a run."""
    try:
        argv = process.cmdline()
        children = process.children()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return
    if inherited in ("code server", "run worker") or "execute_run" in argv:
        role = "run worker"
    elif "grpc" in argv or "code-server" in argv:
        role = "code server"
    else:
        role = inherited
    yield process, role
    for child in children:
        yield from _walk(child, role)


@contextmanager
def dagster_services(
    db_url: str,
    workdir: Path,
    *,
    instance: dict[str, Any],
    env: Mapping[str, str] | None = None,
) -> Iterator[DagsterServices]:
    """Start webserver and daemon as the container does, on a free port, with `instance` as
    dagster.yaml; yield once /server_info answers and every required daemon has a fresh
    heartbeat; stop them (and anything they left behind) at exit. Logs: workdir/<service>.log.
    """
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    port = free_port()
    service_env = dagster_env(
        db_url, home, {"PORT": str(port), "DAGSTER_GRAPHQL_PORT": str(port), **(env or {})}
    )
    cli = str(Path(sys.executable).with_name("observing-pipelines"))
    logs = {service: workdir / f"{service}.log" for service in SERVICES}
    started = time.time()
    processes: dict[str, psutil.Popen] = {}
    try:
        for service in SERVICES:
            with logs[service].open("w") as log_file:
                processes[service] = psutil.Popen(
                    [cli, service],
                    env=service_env,
                    cwd=workdir,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
        services = DagsterServices(
            port, processes, DagsterGraphQLClient("127.0.0.1", port_number=port), logs
        )
        _wait_until_ready(services, started)
        yield services
    finally:
        _stop(list(processes.values()))


def _wait_until_ready(services: DagsterServices, started: float, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    query = (
        "{ instance { daemonHealth { allDaemonStatuses { required healthy lastHeartbeatTime } } } }"
    )
    while time.monotonic() < deadline:
        for service, process in services.processes.items():
            if process.poll() is not None:
                tail = services.logs[service].read_text()[-2000:]
                raise RuntimeError(f"{service} exited with {process.returncode}:\n{tail}")
        try:
            answer = requests.post(
                f"http://127.0.0.1:{services.port}/graphql", json={"query": query}, timeout=5
            ).json()
            statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            statuses = []
        required = [status for status in statuses if status["required"]]
        if required and all(
            status["healthy"] and (status["lastHeartbeatTime"] or 0) >= started
            for status in required
        ):
            return
        time.sleep(1)
    raise TimeoutError(
        f"webserver or daemon not ready after {timeout:g}s (logs in {services.logs})"
    )


def _stop(services: list[psutil.Popen]) -> None:
    """SIGTERM (the services pass it on and stop their code servers), then SIGKILL; then the
    same for any descendant that outlived its parent."""
    everything: list[psutil.Process] = []
    for service in services:
        with contextlib.suppress(psutil.NoSuchProcess):
            everything += service.children(recursive=True)
    _terminate_then_kill(services, timeout=30)
    _terminate_then_kill([process for process in everything if process.is_running()], timeout=10)


def _terminate_then_kill(processes: Sequence[psutil.Process], timeout: float) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
