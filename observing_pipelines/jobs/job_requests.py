"""Runs the app asks for, without an API exposed to it: a row in `pipelines.job_requests`.

The app's runtime roles insert a job name, a run config as JSON and who asked (README, "Runs
the app asks for"); the `job_requests` sensor turns each pending row into a run whose run key
is the request's id, so a request is run once whatever the daemon goes through, and writes the
run's id and status back on the row until it ends, with the cause of a failure. A request the
job would refuse (an unknown job, a run config that fails the job's config schema or its rules,
one over `MAX_RUN_CONFIG_BYTES`) is rejected on its row with the reason, and never reaches the
run queue.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not re-exported by dagster
)

from observing_pipelines.db import job_requests
from observing_pipelines.db.job_requests import MAX_RUN_CONFIG_BYTES, JobRequest
from observing_pipelines.jobs.common import (
    InvalidJobConfig,
    check_run_config,
    config_classes,
)
from observing_pipelines.jobs.operations import failure_cause
from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines.settings import Settings
from observing_pipelines.text import storable

SENSOR = "job_requests"
REQUEST_TAG = "observing/request_id"
REQUESTED_BY_TAG = "observing/requested_by"


def refusal(
    request: JobRequest, repository: dg.RepositoryDefinition, jobs: Sequence[str]
) -> str | None:
    """Why the request cannot run, in one line; None when it can."""
    if request.job_name not in jobs:
        return f"no job {storable(request.job_name, 80)!r}; jobs: {', '.join(sorted(jobs))}"
    if request.run_config is None:
        return f"run_config is {request.run_config_bytes} bytes, over {MAX_RUN_CONFIG_BYTES}"
    if not isinstance(request.run_config, Mapping):
        return f"run_config must be a JSON object, got {type(request.run_config).__name__}"
    job = repository.get_job(request.job_name)
    try:
        dg.validate_run_config(job, dict(request.run_config))
        check_run_config(request.run_config, config_classes(repository.assets_defs_by_key.values()))
    except dg.DagsterInvalidConfigError as error:
        return storable("invalid run_config: " + "; ".join(e.message for e in error.errors))
    except InvalidJobConfig as error:
        return storable(f"invalid run_config: {error.reason}")
    return None


def requests_sensor(
    settings: Settings, jobs: Sequence[dg.JobDefinition | UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """The sensor over `pipelines.job_requests` for these jobs: one indexed query a tick on a
    kept connection, and the run storage only for the requests still open."""
    names = [job.name for job in jobs]

    @dg.sensor(
        name=SENSOR,
        jobs=list(jobs),
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turns the app's rows in pipelines.job_requests into runs, and reports back.",
    )
    def sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
    ) -> dg.SensorResult | dg.SkipReason:
        repository = context.repository_def
        assert repository is not None  # a sensor in a code location always has one
        run_requests: list[dg.RunRequest] = []
        with app_db.kept_connection() as conn, conn:
            open_requests = job_requests.open_requests(conn)
            for request in open_requests:
                run = _run_of(context.instance, request)
                if run is not None:
                    job_requests.record_run(
                        conn, request.id, run.run_id, run.status.value, _error(context, run)
                    )
                elif reason := refusal(request, repository, names):
                    context.log.warning(f"Job request {request.id} rejected: {reason}")
                    job_requests.reject(conn, request.id, reason)
                else:
                    run_requests.append(_run_request(request))
        if not run_requests:
            return dg.SkipReason(
                f"followed {len(open_requests)} open request(s)"
                if open_requests
                else "no open request"
            )
        return dg.SensorResult(run_requests=run_requests)

    return sensor


def _run_of(instance: dg.DagsterInstance, request: JobRequest) -> dg.DagsterRun | None:
    if request.run_id is not None:
        return instance.get_run_by_id(request.run_id)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: str(request.id)}), limit=1)
    return runs[0] if runs else None


def _error(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> str | None:
    if run.status != dg.DagsterRunStatus.FAILURE:
        return None
    return failure_cause(context.instance, run.run_id).cause


def _run_request(request: JobRequest) -> dg.RunRequest:
    run_config: dict[str, Any] = dict(request.run_config)
    return dg.RunRequest(
        run_key=f"{SENSOR}:{request.id}",
        job_name=request.job_name,
        run_config=run_config,
        tags={REQUEST_TAG: str(request.id), REQUESTED_BY_TAG: storable(request.requested_by, 200)},
    )
