"""`observing-pipelines status`: what an operator needs to know on one screen, as facts, and
whether they say the system is healthy. Nothing here prints; `cli.py` renders the facts as a
table or as JSON (`Status.as_json`).

Per job of the code location (a new job shows up without a change here): its last run (status,
start, duration), its last success, its schedule's state and next tick (a job only sensors
start, such as refresh_community_ids, has none), and its items failing, waiting for their next
try. For the instance: the dead letters nobody
has resolved, and the age of each daemon's last heartbeat.

Degraded, with one reason each, when:

- a dead letter is unresolved;
- a daemon the instance requires has no heartbeat, or one older than `STALE_HEARTBEAT`;
- a job is late: its last success (before its first: the start of its schedule) is older than
  `success_within`, the one rule for every job: two cron periods (one tick may be missed) plus
  the time a run may take, which is its max runtime but at most four periods (a job that runs
  every few minutes must keep up, whatever its limit). resolve_taxa, every 5 minutes with a
  3-hour limit, is late after 30 minutes; thumbnails, daily with a 1-hour limit, after 49 hours.

The database cost is small and indexed: three queries of our ledgers, two of Dagster's runs per
job (`idx_runs_by_job`, one row each), one of the daemon heartbeats, one of the schedule states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)
from dagster._core.storage.dagster_run import RunRecord
from dagster._utils.schedules import schedule_execution_time_iterator
from psycopg2.extensions import connection as Connection

from observing_pipelines.db import dead_letters, item_failures, resolution_attempts
from observing_pipelines.db.dead_letters import OpenDeadLetters
from observing_pipelines.jobs.common import MAX_RUNTIME_TAG
from observing_pipelines.taxa.resolve_taxa import SPEC as RESOLVE_TAXA

STALE_HEARTBEAT = timedelta(minutes=5)
"""A daemon beats every 30 seconds; ten missed beats mean it is gone or stuck."""
RUNTIME_PERIODS = 4
"""The most cron periods a run may take before its job counts as late (see `success_within`)."""


@dataclass(frozen=True)
class Ledgers:
    """What our own tables say: failing items per job, and the open dead letters."""

    pending_failures: Mapping[str, int]
    dead_letters: OpenDeadLetters


def read_ledgers(conn: Connection) -> Ledgers:
    """Items failing per job (the enrichment jobs' ledger, and resolve_taxa's errors in its
    own) and the unresolved dead letters."""
    pending = item_failures.pending_by_job(conn)
    pending[RESOLVE_TAXA.name] = resolution_attempts.pending_errors(conn)
    return Ledgers(pending, dead_letters.open_dead_letters(conn))


@dataclass(frozen=True)
class LastRun:
    run_id: str
    status: str
    """Dagster's run status: QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration: timedelta | None
    """Start to end, or to now for a run still going; None before it starts."""


@dataclass(frozen=True)
class ScheduleState:
    name: str
    cron: str | Sequence[str]
    timezone: str
    running: bool
    """Stopped in the UI (or by default), the schedule starts no run until started again."""
    started_at: datetime | None
    """When the scheduler first ran it (or it was last started); None before that."""
    next_tick: datetime | None
    """None while stopped."""


@dataclass(frozen=True)
class JobStatus:
    name: str
    schedule: ScheduleState | None
    """None for a job that only sensors start: it is never late."""
    last_run: LastRun | None
    last_success_at: datetime | None
    success_within: timedelta | None
    late: bool
    pending_failures: int


@dataclass(frozen=True)
class DaemonHealth:
    daemon_type: str
    required: bool
    """This instance's configuration needs it (`DagsterInstance.get_required_daemon_types`)."""
    last_heartbeat_at: datetime | None
    age: timedelta | None
    stale: bool
    """Required, and without a heartbeat in the last `STALE_HEARTBEAT`."""


@dataclass(frozen=True)
class Status:
    checked_at: datetime
    jobs: tuple[JobStatus, ...]
    dead_letters: OpenDeadLetters
    daemons: tuple[DaemonHealth, ...]
    reasons: tuple[str, ...]
    """Why the system is degraded, one line each; empty when it is healthy."""

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict[str, Any]:
        """The same facts as plain JSON values: times in ISO 8601 (UTC), durations in seconds."""
        return {"healthy": self.healthy, **_plain(dataclasses.asdict(self))}


def read_status(
    instance: dg.DagsterInstance,
    ledgers: Ledgers,
    repository: dg.RepositoryDefinition,
    location: str,
) -> Status:
    """The status of every job of `repository` (code location `location`) in `instance`,
    with `ledgers` read beforehand from our schema."""
    now = datetime.now(UTC)
    states = {
        state.instigator_name: state
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        if state.origin.repository_origin.code_location_origin.location_name == location
    }
    schedules = {schedule.job_name: schedule for schedule in repository.schedule_defs}
    jobs = tuple(
        _job_status(instance, repository, name, schedules.get(name), states, ledgers, now)
        for name in sorted(job.name for job in repository.get_all_jobs())
        if not name.startswith("__")  # Dagster's own implicit asset job
    )
    daemons = _heartbeats(instance, now)
    return Status(
        checked_at=now,
        jobs=jobs,
        dead_letters=ledgers.dead_letters,
        daemons=daemons,
        reasons=_reasons(jobs, ledgers.dead_letters, daemons, now),
    )


def success_within(
    cron: str | Sequence[str], timezone: str, max_runtime: timedelta, now: datetime
) -> timedelta:
    """How long a job may go without a success: two cron periods plus its max runtime, the
    runtime counted at most `RUNTIME_PERIODS` periods. The period is the gap between the last
    two ticks before `now`, so an irregular cron is judged by its current rhythm."""
    ticks = schedule_execution_time_iterator(now.timestamp(), cron, timezone, ascending=False)
    period = next(ticks) - next(ticks)
    return 2 * period + min(max_runtime, RUNTIME_PERIODS * period)


def short_duration(span: timedelta) -> str:
    """`42s`, `3m5s`, `2h`, `2d6h`: the two largest units, for a terminal."""
    seconds = max(int(span.total_seconds()), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2 or (parts and seconds == 0):
            break
    return "".join(parts)


def _job_status(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition,
    name: str,
    schedule: dg.ScheduleDefinition | None,
    states: Mapping[str, InstigatorState],
    ledgers: Ledgers,
    now: datetime,
) -> JobStatus:
    last = _latest_run(instance, dg.RunsFilter(job_name=name))
    success = _latest_run(
        instance, dg.RunsFilter(job_name=name, statuses=[dg.DagsterRunStatus.SUCCESS])
    )
    last_success_at = _ended_at(success) if success else None
    schedule_state = within = None
    late = False
    if schedule is not None:
        schedule_state = _schedule_state(schedule, states.get(schedule.name), now)
        tags = repository.get_job(name).tags
        max_runtime = timedelta(seconds=float(tags.get(MAX_RUNTIME_TAG, 0)))
        within = success_within(schedule_state.cron, schedule_state.timezone, max_runtime, now)
        since = last_success_at or schedule_state.started_at
        late = since is not None and now - since > within
    return JobStatus(
        name=name,
        schedule=schedule_state,
        last_run=_last_run(last, now) if last else None,
        last_success_at=last_success_at,
        success_within=within,
        late=late,
        pending_failures=ledgers.pending_failures.get(name, 0),
    )


def _schedule_state(
    schedule: dg.ScheduleDefinition, state: InstigatorState | None, now: datetime
) -> ScheduleState:
    """A schedule's stored state wins over its default; `DECLARED_IN_CODE` (or no state yet)
    means the default decides."""
    if state is None or state.status == InstigatorStatus.DECLARED_IN_CODE:
        running = schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    else:
        running = state.status == InstigatorStatus.RUNNING
    data = state.instigator_data if state else None
    start = data.start_timestamp if isinstance(data, ScheduleInstigatorData) else None
    timezone = schedule.execution_timezone or "UTC"
    ticks = schedule_execution_time_iterator(now.timestamp(), schedule.cron_schedule, timezone)
    return ScheduleState(
        name=schedule.name,
        cron=schedule.cron_schedule,
        timezone=timezone,
        running=running,
        started_at=datetime.fromtimestamp(start, UTC) if start else None,
        next_tick=next(ticks).astimezone(UTC) if running else None,
    )


def _latest_run(instance: dg.DagsterInstance, filters: dg.RunsFilter) -> RunRecord | None:
    """The newest run matching `filters`: one row from the runs' job index."""
    return next(iter(instance.get_run_records(filters, limit=1)), None)


def _ended_at(record: RunRecord) -> datetime:
    """When a finished run ended (its last update, where the storage kept no end time)."""
    return (
        datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
    )


def _last_run(record: RunRecord, now: datetime) -> LastRun:
    started = datetime.fromtimestamp(record.start_time, UTC) if record.start_time else None
    ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else None
    return LastRun(
        run_id=record.dagster_run.run_id,
        status=record.dagster_run.status.value,
        created_at=record.create_timestamp,
        started_at=started,
        ended_at=ended,
        duration=(ended or now) - started if started else None,
    )


def _heartbeats(instance: dg.DagsterInstance, now: datetime) -> tuple[DaemonHealth, ...]:
    """Every daemon the instance requires, in Dagster's order, then any other that beats."""
    beats = instance.get_daemon_heartbeats()
    required = list(instance.get_required_daemon_types())
    found: list[DaemonHealth] = []
    for daemon_type in [*required, *sorted(set(beats) - set(required))]:
        beat = beats.get(daemon_type)
        at = datetime.fromtimestamp(beat.timestamp, UTC) if beat else None
        age = now - at if at else None
        is_required = daemon_type in required
        stale = is_required and (age is None or age > STALE_HEARTBEAT)
        found.append(DaemonHealth(daemon_type, is_required, at, age, stale))
    return tuple(found)


def _reasons(
    jobs: Sequence[JobStatus],
    letters: OpenDeadLetters,
    daemons: Sequence[DaemonHealth],
    now: datetime,
) -> tuple[str, ...]:
    reasons = []
    if letters.count and letters.latest_failed_at:
        latest = f"{letters.latest_job} run {letters.latest_run_id}"
        age = short_duration(now - letters.latest_failed_at)
        reasons.append(f"{letters.count} unresolved dead letter(s) (latest: {latest}, {age} ago)")
    for daemon in daemons:
        if daemon.stale:
            beat = (
                f"last heartbeat {short_duration(daemon.age)} ago"
                if daemon.age is not None
                else "no heartbeat"
            )
            limit = short_duration(STALE_HEARTBEAT)
            reasons.append(f"daemon {daemon.daemon_type}: {beat} (stale after {limit})")
    for job in jobs:
        if job.late and job.success_within is not None:
            since = (
                f"last success {short_duration(now - job.last_success_at)} ago"
                if job.last_success_at
                else "no success since its schedule started"
            )
            reasons.append(
                f"{job.name} late: {since}, expected within {short_duration(job.success_within)}"
            )
    return tuple(reasons)


def _plain(value: Any) -> Any:
    """JSON's types for `dataclasses.asdict` output."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
