"""Dead letters: every run that failed for good lands in `pipelines.dead_letters`, saying why.

"For good" means no automatic retry is coming: Dagster tags each failed run with
`dagster/will_retry`, and `true` means a retry run is on its way, unless the run has no origin
a daemon could launch again (`dagster job execute` runs: the sensor watches every code location
so that it sees them too). The letter names the failed step, how many times it was tried (its
retry policy's attempts) and the root cause of the last attempt: the exception type and message
raised in our code, not Dagster's "Execution of run ... failed" summary. Each is logged at ERROR
as a Cloud Logging JSON line too, with `"event": "dead_letter"`, which alerting matches
(`infra/alerts.tf`).
"""

from dataclasses import dataclass

import dagster as dg

from observing_pipelines.db import dead_letters
from observing_pipelines.logging_json import DEAD_LETTER, event, event_logger, root_cause
from observing_pipelines.resources import AppDatabaseResource

WILL_RETRY_TAG = "dagster/will_retry"


@dataclass(frozen=True)
class DeadLetter:
    cause: str
    step_key: str | None
    step_attempts: int | None


def dead_letter(context: dg.RunFailureSensorContext) -> DeadLetter:
    """Why the sensor's failed run failed (`failure_cause`)."""
    return failure_cause(context.instance, context.dagster_run.run_id, context.failure_event)


def failure_cause(
    instance: dg.DagsterInstance, run_id: str, failure: dg.DagsterEvent | None = None
) -> DeadLetter:
    """Why a run failed: its last failed step's root cause and attempts, or, for a run that
    failed outside any step (run monitoring, max runtime, an interrupted worker), the run
    failure's own message and cause (`failure`, else the run's last RUN_FAILURE event)."""
    step_failures = [  # in the order they happened
        entry.dagster_event
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if entry.dagster_event is not None
    ]
    if step_failures:
        last = step_failures[-1]
        error = last.step_failure_data.error
        step_key = last.step_key
        restarts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_RESTARTED)
        attempts = 1 + sum(1 for entry in restarts if entry.step_key == step_key)
        cause = root_cause(error) if error is not None else last.message or "step failed"
        return DeadLetter(cause, step_key, attempts)
    if failure is None:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = events[-1].dagster_event if events else None
    if failure is None:
        return DeadLetter("run failed", None, None)
    error = getattr(failure.event_specific_data, "error", None)
    cause = failure.message or "run failed"
    if error is not None:
        cause = f"{cause} {root_cause(error)}"
    return DeadLetter(cause, None, None)


@dg.run_failure_sensor(
    name="dead_letters",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    monitor_all_code_locations=True,
    description="Records runs that failed for good in pipelines.dead_letters, with their cause.",
)
def dead_letter_sensor(context: dg.RunFailureSensorContext, app_db: AppDatabaseResource) -> None:
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true" and run.remote_job_origin is not None:
        return
    letter = dead_letter(context)
    with app_db.connect() as conn, conn:
        recorded = dead_letters.record_dead_letter(
            conn,
            run_id=run.run_id,
            job_name=run.job_name,
            root_run_id=run.tags.get("dagster/root_run_id"),
            retry_number=int(run.tags.get("dagster/retry_number", "0")),
            error=letter.cause,
            step_key=letter.step_key,
            step_attempts=letter.step_attempts,
        )
    if recorded:
        where = (
            f" at {letter.step_key} after {letter.step_attempts} attempt(s)"
            if letter.step_key
            else ""
        )
        event_logger().error(
            "Dead letter: %s run %s failed for good%s: %s",
            run.job_name,
            run.run_id,
            where,
            letter.cause,
            extra={
                "dagster_meta": {"run_id": run.run_id, "job_name": run.job_name},
                **event(DEAD_LETTER),
            },
        )
