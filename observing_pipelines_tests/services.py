"""A real dagster-webserver and dagster-daemon, started as the container does: the one harness of
the end-to-end tests and the benchmarks.

`Services` runs `observing-pipelines webserver` and `observing-pipelines daemon` on a free port
against one test database and local API stand-ins, with the project's dagster.yaml changed in
two places only, so tests do not wait on production's intervals: a 1-second dequeue (not 15 s),
and run monitoring every 2 s, freeing a dead run's pool slots 2 s after its end (not 30 s and
60 s).

Each command runs its Dagster service in a process group of its own (`supervisor.py`); with
`isolate=True` the command itself gets one too, so a test can stop a service the way Cloud Run
does (`terminate`: SIGTERM to the command) or kill it the way a container dies (`crash`: SIGKILL
to the command, the Dagster service, its code server and every run worker at once) and start a
fresh one (`start`), or start a second daemon beside the first (`start_second_daemon`). The
benchmarks give their own dagster.yaml (`instance`), wait for every daemon's heartbeat
(`wait_until_ready`) and read each process's role and memory (`members`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg2
import requests
import yaml
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from pytest_httpserver import HTTPServer

from observing_pipelines.db import identifications
from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines_tests import fakes
from observing_pipelines_tests.cloud_sql import ADMIN, as_user, copy_of
from observing_pipelines_tests.fakes import CommonsFile, FakeCommons, FakeGbif, FakeWikidata
from observing_pipelines_tests.support import PROJECT_ROOT

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
SERVICES = ("webserver", "daemon")
ROLES = ("webserver", "daemon", "code server", "run worker")

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dagster_env(db_url: str, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command of ours or of Dagster's, as its container has it: this
    process's, without its database and Dagster settings, then `db_url`, the Dagster home and
    the project's workspace, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DAGSTER_"))}
    return (
        env
        | {
            "DATABASE_URL": db_url,
            "DAGSTER_HOME": str(home),
            "DAGSTER_WORKSPACE": str(PROJECT_ROOT / "workspace.yaml"),
        }
        | dict(extra or {})
    )


def fetch(
    db_url: str, sql: str, params: tuple | dict | None = None, *, autocommit: bool = False
) -> list[tuple]:
    """Run one statement on a connection of its own and return its rows (none for a statement
    that returns none). `autocommit` for statements that refuse a transaction (VACUUM)."""
    conn = psycopg2.connect(db_url)
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        if not autocommit:
            conn.commit()
        return rows
    finally:
        conn.close()


def wait_for(predicate: Callable[[], T | None], seconds: float, what: str) -> T:
    """Poll `predicate` every half second until it returns something truthy, and return that."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Services:
    def __init__(
        self,
        tmp: Path,
        db_url: str,
        apis: dict[str, str],
        *,
        isolate: bool = False,
        production_intervals: bool = False,
        instance: dict[str, Any] | None = None,
    ) -> None:
        """`apis` is extra environment for both services (API URLs, rate limits, crons;
        `NEW_WORK_SENSORS` is off unless it turns them on);
        `production_intervals` keeps the project's dagster.yaml exactly as it is; `instance`
        replaces it.

        The services connect as `jobs_runtime`, as they do in production; `query` uses
        `db_url` (the test harness's superuser) to look and to set up."""
        home = tmp / "dagster_home"
        home.mkdir()
        config = instance or yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
        if not (production_intervals or instance):
            config["run_queue"]["dequeue_interval_seconds"] = 1
            config["run_monitoring"] |= {
                "poll_interval_seconds": 2,
                "free_slots_after_run_end_seconds": 2,
            }
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.db_url = db_url
        self.tmp = tmp
        self.isolate = isolate
        self.env = dagster_env(
            as_user(db_url, JOBS_ROLE),
            home,
            {"NEW_WORK_SENSORS": "false"}  # runs only as a test starts them, unless it asks
            | apis
            | {
                "PORT": str(self.port),
                "DAGSTER_GRAPHQL_PORT": str(self.port),
                "HTTP_MAX_ATTEMPTS": "3",
            },
        )
        self.cli = str(Path(sys.executable).with_name("observing-pipelines"))
        self.logs = {name: tmp / f"{name}.log" for name in SERVICES}
        self.processes = [self._launch(name, "w") for name in SERVICES]
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def _launch(self, name: str, log_mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [self.cli, name],
            env=self.env,
            cwd=self.tmp,
            stdout=self.logs[name].open(log_mode),
            stderr=subprocess.STDOUT,
            start_new_session=self.isolate,
        )

    def process(self, name: str) -> subprocess.Popen:
        return self.processes[SERVICES.index(name)]

    def crash(self, name: str) -> None:
        """SIGKILL the command and everything it started, as when its container is killed:
        nothing gets to clean up, not even the code server or run workers."""
        assert self.isolate, "crash() needs Services(isolate=True): one process group per service"
        kill_container(self.process(name))

    def terminate(self, name: str) -> None:
        """SIGTERM to the command, as Cloud Run stops a container."""
        self.process(name).send_signal(signal.SIGTERM)

    def adopt(self, name: str, process: subprocess.Popen) -> None:
        """`process` is the service `name` from now on (the second daemon, once the first is
        gone); its log is the one `start_second_daemon` gave it."""
        assert self.process(name).poll() is not None, f"the {name} is still running"
        self.processes[SERVICES.index(name)] = process
        self.logs[name] = self.logs["daemon-2"]

    def start_second_daemon(self) -> subprocess.Popen:
        """Another `daemon` beside the running one, as a rollout starts the new revision's
        before the old one stops; logs to `daemon-2.log`."""
        self.logs["daemon-2"] = self.tmp / "daemon-2.log"
        return subprocess.Popen(
            [self.cli, "daemon"],
            env=self.env,
            cwd=self.tmp,
            stdout=self.logs["daemon-2"].open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, name: str) -> None:
        """Start a fresh process for a crashed (or stopped) service, appending to its log."""
        assert self.process(name).poll() is not None, f"the {name} is still running"
        self.processes[SERVICES.index(name)] = self._launch(name, "a")

    def server_info(self) -> dict[str, Any] | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/server_info", timeout=2).json()
        except requests.RequestException:
            return None

    def wait_until_ready(self, started: float, timeout: float = 240.0) -> None:
        """Until /graphql answers and every required daemon has a heartbeat newer than
        `started`; a service that exits meanwhile fails with the end of its log."""
        query = (
            "{ instance { daemonHealth { allDaemonStatuses "
            "{ required healthy lastHeartbeatTime } } } }"
        )

        def ready() -> bool:
            for name, process in zip(SERVICES, self.processes, strict=True):
                if process.poll() is not None:
                    tail = self.logs[name].read_text()[-2000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{self.port}/graphql", json={"query": query}, timeout=5
                ).json()
                statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
            except (requests.RequestException, ValueError, KeyError, TypeError):
                return False
            required = [status for status in statuses if status["required"]]
            return bool(required) and all(
                status["healthy"] and (status["lastHeartbeatTime"] or 0) >= started
                for status in required
            )

        wait_for(ready, timeout, f"webserver and daemon (logs in {self.tmp})")

    def members(self) -> list[tuple[str, str, psutil.Process]]:
        """(service, role, process) for both services and every live descendant. A service's
        wrapper (`observing-pipelines ...`, which relays its logs) has the service's role;
        step processes have their run worker's."""
        return [
            (name, role, member)
            for name, process in zip(SERVICES, self.processes, strict=True)
            for member, role in _walk(psutil.Process(process.pid), name)
        ]

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        return fetch(self.db_url, sql, params)

    def finish(self, run_id: str, seconds: float = 180) -> DagsterRunStatus:
        def done() -> DagsterRunStatus | None:
            status = self.client.get_run_status(run_id)
            return status if status in FINISHED else None

        return wait_for(done, seconds, f"run {run_id}")

    def log_lines(self, name: str) -> list[dict]:
        return [
            json.loads(line) for line in self.logs[name].read_text().splitlines() if line.strip()
        ]

    def stop(self) -> None:
        """SIGTERM to each command (they stop their services within Cloud Run's grace
        period); whatever is left after that is killed, leaving no code server or run worker."""
        trees = {process.pid: process_tree(process.pid) for process in self.processes}
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            kill_groups(trees[process.pid])


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


def process_tree(pid: int) -> set[int]:
    """A live process and all its descendants."""
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def kill_groups(pids: set[int]) -> None:
    """SIGKILL the process groups of these processes (never the test's own), and wait until
    none of them lives."""
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            continue
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the killed processes to exit")


def kill_container(process: subprocess.Popen) -> None:
    """What a container's end does to a command: SIGKILL to it and all it started, at once."""
    kill_groups(process_tree(process.pid))
    process.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class StandIns:
    """GBIF, Wikidata and Commons on loopback, knowing two names and a picture for one."""

    gbif: FakeGbif
    wikidata: FakeWikidata
    commons: FakeCommons

    def env(self) -> dict[str, str]:
        """Where the services find them, unthrottled."""
        return {
            "GBIF_BASE_URL": self.gbif.server.url_for(""),
            "GBIF_RATE_LIMIT_MS": "0",
            "WIKIDATA_SPARQL_URL": self.wikidata.server.url_for("/sparql"),
            "WIKIDATA_RATE_LIMIT_MS": "0",
            "COMMONS_API_URL": self.commons.server.url_for("/w/api.php"),
        }


@contextmanager
def stand_ins() -> Iterator[StandIns]:
    servers = [HTTPServer(host="127.0.0.1", threaded=True) for _ in range(3)]
    for server in servers:
        server.start()
    apis = StandIns(FakeGbif(servers[0]), FakeWikidata(servers[1]), FakeCommons(servers[2]))
    helianthus = fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    apis.gbif.add_name("Helianthus annuus", helianthus)
    apis.gbif.add_key(9206251, helianthus)
    apis.gbif.add_name(
        "Panthera leo", fakes.match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE)
    )
    apis.wikidata.images[9206251] = ("Q171497", [("Sunflower.jpg", "preferred")])
    apis.commons.files["Sunflower.jpg"] = CommonsFile()
    try:
        yield apis
    finally:
        for server in servers:
            server.stop()


TWO_IDENTIFICATIONS = [("Helianthus annuus", "Plantae"), ("Panthera leo", "Animalia")]


@contextmanager
def services_on_a_copy(
    tmp: Path, server_url: str, template_database: str, env: dict[str, str], *, isolate: bool
) -> Iterator[Services]:
    """Webserver and daemon on a fresh copy of the template database holding two
    identifications (`TWO_IDENTIFICATIONS`), ready to serve; stopped and dropped at exit."""
    with copy_of(server_url, template_database, owner=ADMIN) as db_url:
        _add_two_identifications(db_url)
        running = Services(tmp, db_url, env, isolate=isolate)
        try:
            wait_for(running.server_info, 120, "the webserver's /server_info")
            yield running
        finally:
            running.stop()


def _add_two_identifications(db_url: str) -> None:
    conn = psycopg2.connect(db_url)
    with conn:
        identifications.insert_identifications(
            conn,
            [
                identifications.NewIdentification(
                    f"at://did:plc:t/identification/{n}",
                    f"did:plc:u{n}",
                    f"at://did:plc:t/occurrence/{n}",
                    scientific_name,
                    kingdom,
                )
                for n, (scientific_name, kingdom) in enumerate(TWO_IDENTIFICATIONS)
            ],
        )
    conn.close()


class ConnectionSampler:
    """The database's client connections (`pg_stat_activity`), counted every `interval`
    seconds in a thread from a connection to another database (so it never counts itself)."""

    def __init__(self, server_url: str, database: str, interval: float = 0.1) -> None:
        self.server_url = server_url
        self.database = database
        self.interval = interval
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)

    def _sample(self) -> None:
        conn = psycopg2.connect(self.server_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                        "AND backend_type = 'client backend'",
                        (self.database,),
                    )
                    row = cur.fetchone()
                    self.counts.append(int(row[0]) if row else 0)
                    self._stop.wait(self.interval)
        finally:
            conn.close()


# --- a deploy in the middle of a run (test_daemon_faults.py, benchmarks/orphaned_run.py) -------

HANG_SECONDS = 40.0
"""The first GBIF answer a run waits for: it is still in flight when the stop comes."""
CLOUD_RUN_GRACE_SECONDS = 10.0
"""Cloud Run's SIGTERM-to-SIGKILL."""
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")


def hanging_identification(services: Services, entry: fakes.Entry, apis: StandIns) -> str:
    """A new identification of a name GBIF's stand-in knows and nobody has asked about; its
    first lookup hangs `HANG_SECONDS`. Returns its URI."""
    _, name, _ = entry
    apis.gbif.add_name(name, fakes.match_body("EXACT", entry, fakes.PANTHERA_LINEAGE))
    apis.gbif.script(name, HANG_SECONDS)
    uri = f"at://did:plc:t/identification/{name.replace(' ', '-')}"
    conn = psycopg2.connect(services.db_url)
    try:
        with conn:
            identifications.insert_identifications(
                conn,
                [
                    identifications.NewIdentification(
                        uri, "did:plc:deploy", f"{uri}/o", name, "Animalia"
                    )
                ],
            )
    finally:
        conn.close()
    return uri


def run_in_flight(services: Services, apis: StandIns, name: str) -> str:
    """A resolve_taxa run, returned once it is STARTED and waiting on GBIF for `name`."""
    run_id = services.client.submit_job_execution(
        "resolve_taxa", repository_location_name="observing_pipelines"
    )
    wait_for(
        lambda: any(r.get("scientificName") == name for r in apis.gbif.requests),
        120,
        f"the run to ask GBIF about {name}",
    )
    ((status,),) = services.query("SELECT status FROM dagster.runs WHERE run_id = %s", (run_id,))
    assert status == "STARTED", status
    return run_id


def recovery(services: Services, run_id: str, since: float) -> dict[str, float]:
    """Wait until the run has failed and its automatic retry has succeeded; when each
    happened, in seconds after `since`."""

    def retry_done() -> tuple[str, str] | None:
        rows = services.query(
            "SELECT r.run_id, r.status FROM dagster.runs r JOIN dagster.run_tags t "
            "ON t.run_id = r.run_id WHERE t.key = 'dagster/parent_run_id' AND t.value = %s",
            (run_id,),
        )
        return rows[0] if rows and rows[0][1] in TERMINAL else None

    retry_id, retry_status = wait_for(retry_done, 600, f"the retry of {run_id} to finish")
    assert retry_status == "SUCCESS", retry_id
    ((status,),) = services.query("SELECT status FROM dagster.runs WHERE run_id = %s", (run_id,))
    assert status == "FAILURE", status
    ((failed_at,),) = services.query(
        "SELECT extract(epoch FROM timestamp) FROM dagster.event_logs WHERE run_id = %s "
        "AND dagster_event_type = 'PIPELINE_FAILURE'",
        (run_id,),
    )
    ((started, ended),) = services.query(
        "SELECT start_time, end_time FROM dagster.runs WHERE run_id = %s", (retry_id,)
    )
    return {
        "failed": round(float(failed_at) - since, 1),
        "retry_started": round(float(started) - since, 1),
        "retry_succeeded": round(float(ended) - since, 1),
    }
