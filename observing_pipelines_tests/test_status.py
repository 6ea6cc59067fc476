"""`observing-pipelines status` on a real Postgres database and a Dagster instance on it (the
project's dagster.yaml): runs made the way Dagster records them (the run, then its start and end
events), heartbeats as the daemon writes them, schedule states as the scheduler stores them,
dead letters and failing items in our ledgers."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.types import DaemonHeartbeat

from observing_pipelines.cli import LOCATION, main
from observing_pipelines.db import dead_letters
from observing_pipelines.definitions import JOBS
from observing_pipelines.status import success_within
from observing_pipelines_tests.cloud_sql import run_sql
from observing_pipelines_tests.support import PROJECT_ROOT
from observing_pipelines_tests.test_cli import command

JOB_NAMES = sorted(module.SPEC.name for module in JOBS)
"""The scheduled jobs."""
SENSOR_JOBS = ["refresh_community_ids"]
"""Jobs only sensors start: no next tick, never late."""
ALL_JOBS = sorted(JOB_NAMES + SENSOR_JOBS)


@pytest.fixture
def home(tmp_path, db_url, monkeypatch):
    """A DAGSTER_HOME with the project's dagster.yaml, and the environment pointing at it."""
    for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def instance(home):
    with dg.DagsterInstance.from_config(str(home)) as loaded:
        yield loaded


def ago(**delta: float) -> float:
    return time.time() - timedelta(**delta).total_seconds()


def run(
    instance: dg.DagsterInstance,
    job: str,
    ended: dg.DagsterEventType | None,
    started: float,
    seconds: float = 10.0,
) -> str:
    """A run of `job` started at `started` and, unless `ended` is None, ended `seconds` later."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name=job, run_id=run_id))
    for event_type, at in ((dg.DagsterEventType.RUN_START, started), (ended, started + seconds)):
        if event_type is not None:
            event = dg.DagsterEvent(event_type_value=event_type.value, job_name=job)
            instance.report_dagster_event(event, run_id, timestamp=at)
    return run_id


def beat(instance: dg.DagsterInstance, *daemon_types: str, at: float | None = None) -> None:
    for daemon_type in daemon_types or instance.get_required_daemon_types():
        instance.add_daemon_heartbeat(DaemonHeartbeat(at or time.time(), daemon_type, "test"))


def healthy(instance: dg.DagsterInstance) -> None:
    """Every job succeeded a minute ago in 10 seconds; every daemon beats."""
    for job in JOB_NAMES:
        run(instance, job, dg.DagsterEventType.RUN_SUCCESS, ago(seconds=70))
    beat(instance)


def schedule_state(
    instance: dg.DagsterInstance, job: str, status: InstigatorStatus, started: float
) -> None:
    """The schedule's state as the scheduler (or the UI's toggle) stores it."""
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(module_name="observing_pipelines.definitions"), LOCATION
    )
    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(location, "__repository__"), f"{job}_schedule"
    )
    data = ScheduleInstigatorData("*/5 * * * *", start_timestamp=started)
    instance.add_instigator_state(InstigatorState(origin, InstigatorType.SCHEDULE, status, data))


def status(capsys, *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


def table_rows(out: str, names: list[str] = ALL_JOBS) -> dict[str, list[str]]:
    """The rows of a table (jobs, or daemons), by their first column, split into their columns
    (two spaces or more apart)."""
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := re.split(r"\s{2,}", line.strip()))[0] in names
    }


def test_a_healthy_instance_exits_0_with_a_row_per_job(instance, db_url, capsys):
    healthy(instance)
    with_failures(db_url)
    code, out = status(capsys)
    assert code == 0, out
    assert out.startswith("healthy at ")
    table = table_rows(out)
    assert list(table) == ALL_JOBS
    assert table["refresh_community_ids"][1:] == ["none", "-", "never", "by sensor", "0"]
    for job, (_, last_run, took, last_success, next_tick, failing) in table.items():
        if job in SENSOR_JOBS:
            continue
        assert re.fullmatch(r"SUCCESS 1m\d*s? ago", last_run), (job, last_run)
        assert took == "10s" and re.fullmatch(r"1m\d*s? ago", last_success), (job, took)
        assert next_tick.startswith("in "), (job, next_tick)
        assert failing == {"thumbnails": "2", "resolve_taxa": "1"}.get(job, "0"), (job, failing)
    assert "dead letters: 0 unresolved" in out
    required = list(instance.get_required_daemon_types())
    daemons = table_rows(out, required)
    assert list(daemons) == required
    for daemon_type, (_, heartbeat) in daemons.items():
        assert re.fullmatch(r"\d+s ago", heartbeat), (daemon_type, heartbeat)
    assert "degraded" not in out.lower()


def with_failures(db_url: str) -> None:
    """Two thumbnails failing, one resolve_taxa error, and a name GBIF cannot match (an
    answer, not a failure)."""
    run_sql(
        db_url,
        """
        INSERT INTO pipelines.job_item_failures (job, item_key, last_error, next_attempt_at)
        VALUES ('thumbnails', 1, 'HTTP 503', now() + interval '6 hours'),
               ('thumbnails', 2, 'HTTP 503', now() + interval '6 hours')
        """,
        """
        INSERT INTO pipelines.resolution_attempts
            (subject_kind, subject_digest, subject, outcome, last_error, next_attempt_at)
        VALUES ('name', 'd1', 'Quercus robur', 'error', 'HTTP 503', now()),
               ('name', 'd2', 'Aaasdfadsf', 'not_found', NULL, now() + interval '1 day')
        """,
    )


def test_json_has_the_documented_keys(instance, capsys):
    healthy(instance)
    code, out = status(capsys, "--json")
    assert code == 0
    facts = json.loads(out)
    assert set(facts) == {"healthy", "checked_at", "jobs", "dead_letters", "daemons", "reasons"}
    assert facts["healthy"] is True and facts["reasons"] == []
    assert [job["name"] for job in facts["jobs"]] == ALL_JOBS
    (sensor_job,) = [job for job in facts["jobs"] if job["name"] in SENSOR_JOBS]
    assert (sensor_job["schedule"], sensor_job["success_within"], sensor_job["late"]) == (
        None,
        None,
        False,
    )
    for job in facts["jobs"]:
        if job["name"] in SENSOR_JOBS:
            continue
        assert set(job) == {
            "name",
            "schedule",
            "last_run",
            "last_success_at",
            "success_within",
            "late",
            "pending_failures",
        }
        assert set(job["schedule"]) == {
            "name",
            "cron",
            "timezone",
            "running",
            "started_at",
            "next_tick",
        }
        assert set(job["last_run"]) == {
            "run_id",
            "status",
            "created_at",
            "started_at",
            "ended_at",
            "duration",
        }
        assert job["last_run"]["status"] == "SUCCESS" and job["last_run"]["duration"] == 10.0
        assert job["schedule"]["running"] is True and job["late"] is False
        assert datetime.fromisoformat(job["schedule"]["next_tick"]) > datetime.now(UTC)
    resolve_taxa = next(job for job in facts["jobs"] if job["name"] == "resolve_taxa")
    assert resolve_taxa["success_within"] == 1800.0
    assert resolve_taxa["schedule"]["cron"] == "*/5 * * * *"
    assert set(facts["dead_letters"]) == {
        "count",
        "latest_job",
        "latest_run_id",
        "latest_failed_at",
    }
    assert {daemon["daemon_type"] for daemon in facts["daemons"]} == set(
        instance.get_required_daemon_types()
    )
    for daemon in facts["daemons"]:
        assert set(daemon) == {"daemon_type", "required", "last_heartbeat_at", "age", "stale"}
        assert daemon["stale"] is False and 0 <= daemon["age"] < 60


def test_an_unresolved_dead_letter_is_degraded(instance, conn, capsys):
    healthy(instance)
    failed = run(instance, "thumbnails", dg.DagsterEventType.RUN_FAILURE, ago(seconds=30))
    with conn:
        dead_letters.record_dead_letter(conn, failed, "thumbnails", None, 1, "HTTP 503")
        dead_letters.record_dead_letter(conn, "older-run", "thumbnails", None, 1, "HTTP 503")
        dead_letters.record_dead_letter(conn, "done-run", "resolve_taxa", None, 0, "fixed")
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE pipelines.dead_letters SET failed_at = now() - interval '1 day', "
                "resolved_at = CASE WHEN run_id = 'done-run' THEN now() END "
                "WHERE run_id <> %s",
                (failed,),
            )
    code, out = status(capsys)
    assert code == 1, out
    assert out.startswith("DEGRADED at ")
    assert "dead letters: 2 unresolved" in out
    (reason,) = out.split("degraded:\n", 1)[1].splitlines()
    assert reason.startswith(f"  - 2 unresolved dead letter(s) (latest: thumbnails run {failed}, ")
    assert table_rows(out)["thumbnails"][1].startswith("FAILURE ")
    code, out = status(capsys, "--json")
    facts = json.loads(out)
    assert code == 1 and facts["healthy"] is False
    assert facts["dead_letters"]["count"] == 2 and facts["dead_letters"]["latest_run_id"] == failed
    assert facts["reasons"] == [reason.removeprefix("  - ")]


def test_a_stale_or_missing_heartbeat_is_degraded(instance, capsys):
    for job in JOB_NAMES:
        run(instance, job, dg.DagsterEventType.RUN_SUCCESS, ago(seconds=70))
    required = instance.get_required_daemon_types()
    beat(instance, *[t for t in required if t not in ("SCHEDULER", "SENSOR")])
    beat(instance, "SCHEDULER", at=ago(minutes=10))
    code, out = status(capsys)
    assert code == 1, out
    scheduler, sensor = sorted(out.split("degraded:\n", 1)[1].splitlines())
    assert re.fullmatch(
        r"  - daemon SCHEDULER: last heartbeat 10m\d*s? ago \(stale after 5m\)", scheduler
    ), scheduler
    assert sensor == "  - daemon SENSOR: no heartbeat (stale after 5m)"
    daemons = table_rows(out, list(required))
    assert daemons["SENSOR"][1] == "never STALE"
    assert re.fullmatch(r"10m\d*s? ago STALE", daemons["SCHEDULER"][1]), daemons


def test_a_heartbeat_inside_the_limit_is_healthy(instance, capsys):
    healthy(instance)
    beat(instance, "SCHEDULER", at=ago(minutes=4))
    code, out = status(capsys)
    assert code == 0, out
    assert re.fullmatch(r"4m\d*s? ago", table_rows(out, ["SCHEDULER"])["SCHEDULER"][1])


def test_a_job_past_its_success_interval_is_degraded(instance, capsys):
    """resolve_taxa must succeed every 30 minutes; thumbnails (daily, 1 hour) within 49 hours."""
    for job in JOB_NAMES:
        started = {"resolve_taxa": ago(minutes=45), "thumbnails": ago(hours=48)}.get(
            job, ago(seconds=70)
        )
        run(instance, job, dg.DagsterEventType.RUN_SUCCESS, started)
    run(instance, "resolve_taxa", dg.DagsterEventType.RUN_FAILURE, ago(minutes=5), 30)
    run(instance, "resolve_taxa", None, ago(seconds=90))
    beat(instance)
    code, out = status(capsys)
    assert code == 1, out
    (reason,) = out.split("degraded:\n", 1)[1].splitlines()
    assert re.fullmatch(
        r"  - resolve_taxa late: last success 4[45]m\d*s? ago, expected within 30m", reason
    ), reason
    table = table_rows(out)
    assert re.fullmatch(r"STARTED 1m\d+s ago", table["resolve_taxa"][1]), table
    assert re.fullmatch(r"1m\d+s so far", table["resolve_taxa"][2]), table
    assert table["resolve_taxa"][3].endswith(" LATE")
    assert not table["thumbnails"][3].endswith("LATE")  # 48 hours: not yet
    facts = json.loads(status(capsys, "--json")[1])
    late = {job["name"]: job["late"] for job in facts["jobs"]}
    assert late == {job: job == "resolve_taxa" for job in ALL_JOBS}


def test_a_job_never_successful_is_late_from_its_schedule_start(instance, capsys):
    beat(instance)
    schedule_state(instance, "resolve_taxa", InstigatorStatus.DECLARED_IN_CODE, ago(hours=2))
    schedule_state(instance, "thumbnails", InstigatorStatus.STOPPED, ago(hours=2))
    code, out = status(capsys)
    assert code == 1, out
    assert out.split("degraded:\n", 1)[1].splitlines() == [
        "  - resolve_taxa late: no success since its schedule started, expected within 30m"
    ]
    table = table_rows(out)
    assert table["thumbnails"][1:5] == ["none", "-", "never", "stopped"]
    assert table["resolve_taxa"][4].startswith("in ")
    jobs = {job["name"]: job for job in json.loads(status(capsys, "--json")[1])["jobs"]}
    assert jobs["thumbnails"]["schedule"]["running"] is False
    assert jobs["thumbnails"]["schedule"]["next_tick"] is None
    assert jobs["resolve_taxa"]["schedule"]["started_at"] is not None


@pytest.mark.parametrize(
    ("cron", "max_runtime", "within"),
    [
        ("*/5 * * * *", timedelta(hours=3), timedelta(minutes=30)),  # runtime: 4 periods
        ("30 3 * * *", timedelta(hours=1), timedelta(hours=49)),
        ("0 4 * * 1", timedelta(hours=2), timedelta(days=14, hours=2)),
        ("0 9,17 * * *", timedelta(0), timedelta(hours=32)),  # last gap: 17:00 to 09:00, 16 h
    ],
)
def test_the_success_interval_is_two_periods_plus_the_runtime(cron, max_runtime, within):
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert success_within(cron, "UTC", max_runtime, now) == within


def test_an_unreachable_database_is_exit_2_in_one_line(home):
    dsn = "postgresql://jobs:st-s3cret-pw@127.0.0.1:1/observing"
    code, lines, stdout = command("status", DATABASE_URL=dsn, DAGSTER_HOME=str(home))
    assert code == 2 and stdout == ""
    (line,) = lines
    assert line["severity"] == "ERROR", line
    assert line["message"].startswith("Cannot read the database (postgresql://jobs:***@"), line
    assert "st-s3cret-pw" not in json.dumps(line)


def test_no_database_configured_is_exit_2(home, monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL")
    assert status(capsys) == (2, "")


def test_a_database_without_dagsters_tables_is_exit_2(home, db_url):
    """Our ledgers read, then Dagster's storage fails (SQLAlchemy's error, wrapped): the
    database's own words, in one line."""
    run_sql(db_url, "DROP SCHEMA dagster CASCADE")
    code, lines, stdout = command("status", DATABASE_URL=db_url, DAGSTER_HOME=str(home))
    assert code == 2 and stdout == ""
    (line,) = lines
    assert line["message"].startswith("Cannot read the database"), line
    assert "does not exist" in line["message"] and "SELECT" not in line["message"], line
