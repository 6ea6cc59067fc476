"""The daemon under faults: a crash across a schedule tick, and two triggers of one job at once.

Both tests share one real `observing-pipelines webserver` and `daemon` (module scope; see
`services.py`) on a fresh copy of the template database, with local GBIF, Wikidata and Commons
stand-ins. The thumbnails schedule ticks every minute through `THUMBNAILS_CRON`, so a tick is at
most a minute away; resolve_taxa's schedule is moved to once a year so that no scheduled run
joins the two triggered ones (the assertions hold even if one did).

The services run in their own process groups, so "crash" means what a killed container means:
SIGKILL to the wrapper, dagster-daemon, its code server and any run worker it launched at once.
"""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg2
import pytest
from dagster._core.scheduler.instigation import InstigatorState, TickData, TickStatus
from dagster._core.storage.tags import (
    PARENT_RUN_ID_TAG,
    SCHEDULE_NAME_TAG,
    SCHEDULED_EXECUTION_TIME_TAG,
)
from dagster._serdes import deserialize_value
from dagster_graphql import DagsterGraphQLClient

from observing_pipelines_tests import fakes
from observing_pipelines_tests.services import (
    CLOUD_RUN_GRACE_SECONDS,
    Services,
    StandIns,
    hanging_identification,
    kill_container,
    recovery,
    run_in_flight,
    services_on_a_copy,
    stand_ins,
    wait_for,
)

pytestmark = pytest.mark.timeout(480)  # a hang guard per test

LOCATION = "observing_pipelines"
SCHEDULE = "thumbnails_schedule"  # ticks every minute here (THUMBNAILS_CRON below)
TEST_TAG = "observing/test"
SLOW_GBIF_SECONDS = 6.0  # well under HTTP_TIMEOUT_SECONDS (15): slow, not failing
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
IN_FLIGHT = {"STARTING", "STARTED"}  # what Dagster's tag concurrency limit counts as running


@pytest.fixture(scope="module")
def apis() -> Iterator[StandIns]:
    with stand_ins() as running:
        yield running


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory,
    server_url: str,
    template_database: str,
    apis: StandIns,
) -> Iterator[Services]:
    env = apis.env() | {"THUMBNAILS_CRON": "* * * * *", "RESOLVE_TAXA_CRON": "0 0 1 1 *"}
    with services_on_a_copy(
        tmp_path_factory.mktemp("faults"), server_url, template_database, env, isolate=True
    ) as running:
        yield running


# --- two triggers of one job -------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    storage_id: int
    status: str
    start_time: float | None
    end_time: float | None


def run_rows(services: Services, run_ids: list[str]) -> dict[str, RunRow]:
    """One consistent snapshot of the runs' status and timestamps, from the run storage."""
    rows = services.query(
        "SELECT run_id, id, status, start_time, end_time FROM dagster.runs WHERE run_id = ANY(%s)",
        (run_ids,),
    )
    return {run_id: RunRow(*rest) for run_id, *rest in rows}


def test_two_triggers_at_once_one_runs_and_one_queues(services: Services, apis: StandIns):
    """dagster.yaml's `observing/job` limit of 1 is what keeps two resolve_taxa passes from
    stamping the same identifications at once; the gbif pool would only serialise their steps,
    not their runs. So: submit the job twice at the same moment through GraphQL while its first
    run is held up by a slow GBIF answer, and sample the run storage until both are done. The
    second must wait QUEUED while the first is STARTED, never be in flight beside it, and start
    only after the first ended (its timestamps prove there was no overlap); both succeed, in
    submission order (the queue is FIFO)."""
    apis.gbif.script("Helianthus annuus", SLOW_GBIF_SECONDS)  # whichever run asks first
    barrier = threading.Barrier(2)

    def submit(_: int) -> str:
        client = DagsterGraphQLClient("127.0.0.1", port_number=services.port)  # one per thread
        barrier.wait(timeout=30)
        return client.submit_job_execution(
            "resolve_taxa", repository_location_name=LOCATION, tags={TEST_TAG: "two_triggers"}
        )

    with ThreadPoolExecutor(2) as pool:
        run_ids = list(pool.map(submit, range(2)))

    samples: list[dict[str, RunRow]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        samples.append(run_rows(services, run_ids))
        if len(samples[-1]) == 2 and all(r.status in TERMINAL_RUN for r in samples[-1].values()):
            break
        time.sleep(0.2)
    final = samples[-1]
    assert {r.status for r in final.values()} == {"SUCCESS"}, final

    first, second = sorted(run_ids, key=lambda run_id: final[run_id].storage_id)
    both_in_flight = [
        s for s in samples if len(s) == 2 and all(r.status in IN_FLIGHT for r in s.values())
    ]
    assert not both_in_flight, both_in_flight[0]
    waiting = [s for s in samples if len(s) == 2 and s[first].status == "STARTED"]
    assert waiting, "never saw the first run STARTED"
    assert all(s[second].status == "QUEUED" for s in waiting), waiting
    first_started, first_ended = final[first].start_time, final[first].end_time
    second_started = final[second].start_time
    assert first_started and first_ended and second_started, final
    assert first_ended <= second_started, final  # first done, then second
    assert not apis.gbif.scripted["helianthus annuus"]  # the slow answer was served...
    assert first_ended - first_started >= SLOW_GBIF_SECONDS  # ...to the first

    # No two runs of the job overlapped at all, whoever launched them.
    spans = sorted(
        services.query(
            "SELECT r.start_time, r.end_time FROM dagster.runs r JOIN dagster.run_tags t "
            "ON t.run_id = r.run_id WHERE t.key = 'observing/job' AND t.value = 'resolve_taxa' "
            "AND r.start_time IS NOT NULL"
        )
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and end <= start, spans


# --- a daemon crash across a schedule tick -----------------------------------------------------


def scheduled_runs(services: Services) -> dict[float, list[str]]:
    """Run ids by scheduled execution time (epoch seconds) for the every-minute schedule, from
    the run storage. Automatic re-executions (`dagster/parent_run_id`) copy their parent's tags
    but are retries of a run, not runs of a tick, so they are left out."""
    rows = services.query(
        "SELECT t.value, r.run_id FROM dagster.runs r "
        "JOIN dagster.run_tags s ON s.run_id = r.run_id AND s.key = %(name)s AND s.value = %(s)s "
        "LEFT JOIN dagster.run_tags t ON t.run_id = r.run_id AND t.key = %(time)s "
        "WHERE NOT EXISTS (SELECT 1 FROM dagster.run_tags p "
        "WHERE p.run_id = r.run_id AND p.key = %(parent)s) ORDER BY r.id",
        {
            "name": SCHEDULE_NAME_TAG,
            "s": SCHEDULE,
            "time": SCHEDULED_EXECUTION_TIME_TAG,  # hidden: `.dagster/scheduled_execution_time`
            "parent": PARENT_RUN_ID_TAG,
        },
    )
    runs: dict[float, list[str]] = {}
    for scheduled, run_id in rows:
        assert scheduled, f"scheduled run {run_id} has no scheduled execution time"
        runs.setdefault(datetime.datetime.fromisoformat(scheduled).timestamp(), []).append(run_id)
    return runs


def schedule_ticks(services: Services) -> list[TickData]:
    """The schedule's ticks, oldest first, from the schedule storage (Dagster's own records)."""
    rows = services.query(
        "SELECT tick_body FROM dagster.job_ticks WHERE type = 'SCHEDULE' ORDER BY id"
    )
    ticks = [deserialize_value(body, TickData) for (body,) in rows]
    return [tick for tick in ticks if tick.instigator_name == SCHEDULE]


def schedule_is_running(services: Services) -> bool:
    """The scheduler has stored the schedule's state: it ticks from the next minute on."""
    rows = services.query(
        "SELECT instigator_body FROM dagster.instigators WHERE instigator_type = 'SCHEDULE'"
    )
    return any(deserialize_value(b, InstigatorState).instigator_name == SCHEDULE for (b,) in rows)


def sleep_until(timestamp: float) -> None:
    time.sleep(max(0.0, timestamp - time.time()))


def wait_for_tick_run(services: Services, tick: float, seconds: float) -> None:
    """Return as soon as a run for `tick` is in the run storage: one open connection polled
    every 10 ms, so the crash lands inside the tick's evaluation as often as possible."""
    scheduled = datetime.datetime.fromtimestamp(tick, datetime.UTC).isoformat()  # Dagster's form
    conn = psycopg2.connect(services.db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT 1 FROM dagster.run_tags WHERE key = %s AND value = %s",
                    (SCHEDULED_EXECUTION_TIME_TAG, scheduled),
                )
                if cur.fetchone():
                    return
                time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError(f"no run for the {scheduled} tick within {seconds} s")


def test_daemon_crash_across_a_tick_never_duplicates_a_run(
    services: Services, record_property: Callable[[str, object], None]
):
    """A daemon can die at any moment (deploy, OOM, preemption) and is simply started again, so
    a schedule tick must never yield two runs: two resolve_taxa or thumbnails passes for one
    tick would double the API calls and race on the same rows. The dangerous moment is the
    tick's own evaluation, after its run is created and before the tick is marked done, so we
    SIGKILL the whole daemon the instant the tick's run appears in the run storage (about a
    second after the minute boundary), keep it down across the next minute boundary, and start
    a fresh daemon. Then, from the run and schedule storage: every scheduled execution time has
    exactly one run (fails on any duplicate), the interrupted tick kept its one run, and the
    tick missed while down was either launched once, late, by the new daemon, or skipped.

    Observed (Dagster 1.13.27): the crash lands 0.2-0.7 s after the boundary, the tick either
    still STARTED with its run created (QUEUED, or NOT_STARTED: between create_run and
    submit_run) or already SUCCESS. The new daemon never resumes the interrupted tick: a
    schedule without partitions does not catch up, so with the missed tick also due it
    evaluates only the latest one. The missed tick is launched once, 7-12 s late (the daemon's
    start-up). The interrupted tick stays STARTED; a QUEUED run of it is launched by the new
    daemon's queue, a NOT_STARTED one never is (the next tick does that work)."""
    wait_for(lambda: schedule_is_running(services), 120, "the scheduler to pick up the schedule")
    crashed_tick = float(int(time.time()) // 60 * 60 + 60)
    sleep_until(crashed_tick)
    wait_for_tick_run(services, crashed_tick, 45)
    services.crash("daemon")
    crashed_at = time.time()
    runs_at_crash = scheduled_runs(services)
    tick_at_crash = {t.timestamp: t.status for t in schedule_ticks(services)}.get(crashed_tick)
    assert len(runs_at_crash[crashed_tick]) == 1, runs_at_crash  # one run before the crash
    (crashed_run,) = runs_at_crash[crashed_tick]
    run_at_crash = run_rows(services, [crashed_run])[crashed_run].status

    missed_tick = crashed_tick + 60
    sleep_until(missed_tick + 1)  # a whole boundary passes with no daemon
    assert scheduled_runs(services) == runs_at_crash, "runs were created with no daemon up"
    restarted_at = time.time()
    services.start("daemon")

    def evaluated_after_restart() -> list[TickData]:
        return [
            tick
            for tick in schedule_ticks(services)
            if tick.timestamp >= missed_tick
            and tick.status in (TickStatus.SUCCESS, TickStatus.SKIPPED)  # FAILURE is retried
        ]

    (first_new_tick, *_) = wait_for(evaluated_after_restart, 150, "the new daemon's first tick")
    assert first_new_tick.status == TickStatus.SUCCESS, first_new_tick
    runs = scheduled_runs(services)
    ticks = schedule_ticks(services)

    duplicates = {when: ids for when, ids in runs.items() if len(ids) != 1}
    assert not duplicates, f"scheduled execution times with more than one run: {duplicates}"
    assert runs[crashed_tick] == runs_at_crash[crashed_tick]  # kept, not created again
    assert len({tick.timestamp for tick in ticks}) == len(ticks), "two ticks for one time"
    for tick in ticks:
        assert set(tick.run_ids) <= set(runs.get(tick.timestamp, [])), tick

    if missed_tick in runs:
        outcome = "launched once, late, by the new daemon"
        (missed_run,) = runs[missed_tick]
        assert missed_run in first_new_tick.run_ids and first_new_tick.timestamp == missed_tick
        (created,) = services.query(
            "SELECT extract(epoch FROM create_timestamp) FROM dagster.runs WHERE run_id = %s",
            (missed_run,),
        )
        assert float(created[0]) >= restarted_at - 1, "the missed tick's run predates the restart"
        lateness = float(created[0]) - missed_tick
    else:  # the new daemon came up after a second boundary: Dagster runs only the latest tick
        outcome = "skipped (no catch-up for schedules without partitions)"
        assert first_new_tick.timestamp > missed_tick
        assert missed_tick not in {tick.timestamp for tick in ticks}
        lateness = None

    interrupted = {t.timestamp: t.status for t in ticks}.get(crashed_tick)
    observed = {
        "crashed_at_seconds_after_boundary": round(crashed_at - crashed_tick, 2),
        "crashed_tick_status_at_crash": tick_at_crash and tick_at_crash.value,
        "crashed_tick_status_after_restart": interrupted and interrupted.value,
        "crashed_tick_run_status_at_crash": run_at_crash,
        "crashed_tick_run_status_now": run_rows(services, [crashed_run])[crashed_run].status,
        "missed_tick": outcome,
        "missed_tick_run_created_seconds_late": lateness and round(lateness, 1),
        "daemon_down_seconds": round(restarted_at - crashed_at, 1),
    }
    record_property("observed", json.dumps(observed))
    print(f"daemon crash across a tick: {json.dumps(observed)}")  # shown with -s / -rP
    resumed = [
        line
        for line in services.logs["daemon"].read_text().splitlines()  # a SIGKILL may cut a line
        if "interrupted schedule execution" in line
        or "already created" in line
        or "already completed" in line
    ]
    print(f"new daemon on the interrupted tick: {resumed or 'nothing (not resumed)'}")


# --- a deploy (or a lost container) in the middle of a run -------------------------------------


PANTHERA_ONCA: fakes.Entry = (5219426, "Panthera onca", "SPECIES")


def assert_nothing_held(services: Services, run_id: str, uri: str, key: int) -> None:
    """The identification carries the stand-in's key once, and the failed run holds no pool
    slot nor pending step: later GBIF steps are not blocked behind it."""
    assert services.query(
        "SELECT accepted_taxon_key FROM ingester.identifications WHERE uri = %s", (uri,)
    ) == [(key,)]
    assert services.query(
        "SELECT count(*) FROM pipelines.identification_stamps WHERE uri = %s", (uri,)
    ) == [(1,)]
    assert services.query(
        "SELECT count(*) FROM dagster.concurrency_slots WHERE run_id = %s", (run_id,)
    ) == [(0,)]
    assert services.query(
        "SELECT count(*) FROM dagster.pending_steps WHERE run_id = %s", (run_id,)
    ) == [(0,)]


def test_a_deploy_mid_run_stops_the_daemon_in_time_and_the_run_is_retried(
    services: Services, apis: StandIns, record_property: Callable[[str, object], None]
):
    """What Cloud Run does on a deploy: SIGTERM to the daemon's container, SIGKILL to what is
    left 10 s later, then a new daemon. The command must be gone inside those 10 s, with exit
    code 0, and the run it had in flight must not stay STARTED (holding the job's one run slot
    and the gbif pool slot for good): it is failed, retried by the new daemon, and the retry
    stamps the identification once, with the right key."""
    uri = hanging_identification(services, fakes.PANTHERA_UNCIA, apis)
    # Dagster retries the step the SIGTERM interrupted, after its policy's jittered delay (0 to
    # 60 s): when that is short, the retry would ask GBIF again inside the grace period. Its
    # answer is slow too, so the run is still in flight when the rest is killed, whatever the
    # jitter; the run's own retry then gets it in 12 s.
    apis.gbif.script(fakes.PANTHERA_UNCIA[1], 12.0)
    run_id = run_in_flight(services, apis, fakes.PANTHERA_UNCIA[1])
    stopped = time.time()
    services.terminate("daemon")
    daemon = services.process("daemon")
    try:
        code = daemon.wait(timeout=CLOUD_RUN_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        kill_container(daemon)  # Cloud Run's SIGKILL: the test fails below
        code = None
    exited = round(time.time() - stopped, 1)
    status_at_exit = run_rows(services, [run_id])[run_id].status
    services.start("daemon")
    timeline = {"daemon_exited": exited, "run_status_when_it_exited": status_at_exit}
    timeline |= recovery(services, run_id, stopped)
    record_property("timeline", json.dumps(timeline))
    print(f"deploy mid-run, seconds after SIGTERM: {json.dumps(timeline)}")
    assert code == 0 and exited < CLOUD_RUN_GRACE_SECONDS, timeline
    assert_nothing_held(services, run_id, uri, fakes.PANTHERA_UNCIA[0])


def test_a_run_whose_container_vanished_is_failed_by_monitoring_and_retried(
    services: Services, apis: StandIns, record_property: Callable[[str, object], None]
):
    """No SIGTERM this time (an OOM kill, a lost instance): the run worker dies with the rest
    and reports nothing, so the run stays STARTED. The new daemon's run monitoring asks the
    launcher, which finds the run's code server gone; the run is failed and retried."""
    uri = hanging_identification(services, PANTHERA_ONCA, apis)
    run_id = run_in_flight(services, apis, PANTHERA_ONCA[1])
    killed = time.time()
    services.crash("daemon")
    assert run_rows(services, [run_id])[run_id].status == "STARTED"
    services.start("daemon")
    timeline = recovery(services, run_id, killed)
    record_property("timeline", json.dumps(timeline))
    print(f"container lost mid-run, seconds after the kill: {json.dumps(timeline)}")
    (message,) = services.query(
        "SELECT event::json #>> '{dagster_event,event_specific_data,error,message}' "
        "FROM dagster.event_logs WHERE run_id = %s AND dagster_event_type = 'PIPELINE_FAILURE'",
        (run_id,),
    )[0]
    log_text = services.logs["daemon"].read_text()
    assert "code server is unreachable" in log_text or "no longer executes" in log_text, message
    assert_nothing_held(services, run_id, uri, PANTHERA_ONCA[0])


# --- two daemons during a rollout --------------------------------------------------------------


def test_two_daemons_overlapping_in_a_rollout_never_run_at_once(services: Services):
    """A rollout starts the new daemon before stopping the old one. Dagster supports one
    daemon per instance (two would each launch a tick, each dequeue a run), so the second
    waits for the first's lock: across a schedule tick with both up, and across the next one
    after the handover, each tick has exactly one run."""
    wait_for(lambda: schedule_is_running(services), 120, "the scheduler to pick up the schedule")
    second = services.start_second_daemon()
    wait_for(
        lambda: "holds the lock" in services.logs["daemon-2"].read_text(),
        60,
        "the second daemon to wait for the lock",
    )
    both_up_tick = float(int(time.time()) // 60 * 60 + 60)
    sleep_until(both_up_tick)
    wait_for_tick_run(services, both_up_tick, 45)
    time.sleep(5)  # both daemons had the chance to launch it
    assert len(scheduled_runs(services)[both_up_tick]) == 1
    assert "Holding the daemon lock" not in services.logs["daemon-2"].read_text()

    stopped = time.time()
    services.terminate("daemon")
    assert services.process("daemon").wait(timeout=CLOUD_RUN_GRACE_SECONDS) == 0
    first_gone = time.time()
    services.adopt("daemon", second)
    wait_for(
        lambda: "Holding the daemon lock" in services.logs["daemon-2"].read_text(),
        30,
        "the second daemon to take over",
    )
    took_over = time.time()
    handover_tick = float(int(took_over) // 60 * 60 + 60)
    sleep_until(handover_tick)
    wait_for_tick_run(services, handover_tick, 60)
    time.sleep(5)
    runs = scheduled_runs(services)
    duplicates = {when: ids for when, ids in runs.items() if len(ids) != 1}
    assert not duplicates, duplicates
    assert len(runs[handover_tick]) == 1
    print(
        f"rollout: first daemon gone {first_gone - stopped:.1f} s after SIGTERM, second "
        f"holding the lock {took_over - first_gone:.1f} s later"
    )
