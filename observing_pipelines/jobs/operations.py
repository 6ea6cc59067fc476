"""Dead letters: every run that failed for good lands in `pipelines.dead_letters`.

"For good" means its retries are exhausted: Dagster tags each failed run with
`dagster/will_retry`, and `true` means an automatic retry run is on its way. The sensor also logs
each dead letter at ERROR as a Cloud Logging JSON line, where alerting can pick it up.
"""

import dagster as dg

from observing_pipelines.db import state
from observing_pipelines.logging_json import event_logger
from observing_pipelines.resources import AppDatabaseResource

WILL_RETRY_TAG = "dagster/will_retry"


@dg.run_failure_sensor(
    name="dead_letters",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Records runs whose retries are exhausted in pipelines.dead_letters.",
)
def dead_letter_sensor(context: dg.RunFailureSensorContext, app_db: AppDatabaseResource) -> None:
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return
    step_errors = [
        f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
        for event in context.get_step_failure_events()
        if event.step_failure_data.error
    ]
    error = "; ".join([context.failure_event.message or "run failed", *step_errors])
    with app_db.connect() as conn, conn:
        recorded = state.record_dead_letter(
            conn,
            run_id=run.run_id,
            job_name=run.job_name,
            root_run_id=run.tags.get("dagster/root_run_id"),
            retry_number=int(run.tags.get("dagster/retry_number", "0")),
            error=error,
        )
    if recorded:
        event_logger().error(
            "Dead letter: %s run %s failed for good: %s",
            run.job_name,
            run.run_id,
            error,
            extra={"dagster_meta": {"run_id": run.run_id, "job_name": run.job_name}},
        )
