"""What a dead letter says: the failed step, how many times it was tried, and the root cause of
the last try (the error raised in our code, not Dagster's wrapper around it).

Before, every step failure read "Exceeded max_retries of 3": the real error sat in the event's
`error.cause`. Here a real Dagster run (on a Postgres instance) fails for good and the sensor's
function reads it as the daemon would.
"""

from __future__ import annotations

import dagster as dg

from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.jobs.operations import DeadLetter, dead_letter, dead_letter_sensor
from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines_tests.cloud_sql import rows


def failed_run_context(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> object:
    result = dg.materialize([asset], instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dg.build_run_status_sensor_context(
        sensor_name="dead_letters",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0))
def flaky_upstream() -> None:
    raise UpstreamError("gbif", "HTTP 503: <html> \x00 down")


def test_a_step_that_exhausted_its_retries_is_named_with_its_attempts_and_cause():
    with dg.instance_for_test() as instance:
        letter = dead_letter(failed_run_context(instance, flaky_upstream))
    assert letter == DeadLetter(
        "observing_pipelines.clients.http.UpstreamError: gbif: HTTP 503: <html> \x00 down",
        "flaky_upstream",
        3,
    )


def test_the_sensor_records_the_cause_storably(db_url):
    with dg.instance_for_test() as instance:
        context = failed_run_context(instance, flaky_upstream)
        dead_letter_sensor(context, app_db=AppDatabaseResource(url=db_url))
    ((error, step, attempts),) = rows(
        db_url, "SELECT error, step_key, step_attempts FROM pipelines.dead_letters"
    )
    assert (step, attempts) == ("flaky_upstream", 3)
    assert error == "observing_pipelines.clients.http.UpstreamError: gbif: HTTP 503: <html> down"
