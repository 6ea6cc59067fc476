"""Wiring every job module shares: retry policy, schedules, run metadata, invariant checks,
the JSON console logger."""

import logging
import sys
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not re-exported by dagster
)

from observing_pipelines.db import app_tables
from observing_pipelines.logging_json import CloudLoggingFormatter
from observing_pipelines.resources import AppDatabaseResource

RUN_MILESTONES = frozenset(
    {
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_UP_FOR_RETRY,
        dg.DagsterEventType.STEP_RESTARTED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    }
)
"""Dagster's events a run prints: Dagster logs all its events at DEBUG, failures at ERROR."""


class RunLineFilter(logging.Filter):
    """A run's lines at INFO and above, and Dagster's milestone events (`RUN_MILESTONES`),
    which Dagster logs at DEBUG, lifted to INFO: what an operator reads in Cloud Logging to
    follow a run. Dagster's other bookkeeping events (resource set-up, captured logs, engine
    notes) and DEBUG lines are left to the event log in the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if getattr(event, "event_type", None) in RUN_MILESTONES:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        return False


@dg.logger(None, description="Every run line as one Cloud Logging JSON object on stdout.")
def cloud_logging_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("observing_pipelines_run", level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    handler.addFilter(RunLineFilter())
    logger.addHandler(handler)
    return logger


def retry_policy(delay_seconds: int) -> dg.RetryPolicy:
    """Three more tries, `delay`, 2x, 4x (±jitter): rides out an API or database blip without
    stampeding; per-item failures are recorded by the passes and never fail the step."""
    return dg.RetryPolicy(
        max_retries=3,
        delay=delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


JOB_TAG = "observing/job"


def asset_job(
    name: str, asset: dg.AssetsDefinition, description: str | None = None
) -> UnresolvedAssetJobDefinition:
    """A job for one asset, tagged so `dagster.yaml` allows one queued-or-running run of it at
    a time, and logging through the code location's JSON `console` logger (without a `loggers`
    entry in its run config, Dagster would print coloured text instead)."""
    return dg.define_asset_job(
        name,
        selection=[asset],
        tags={JOB_TAG: name},
        config={"loggers": {"console": {}}},
        description=description,
    )


def schedule(
    name: str, job: UnresolvedAssetJobDefinition, cron: str, timezone: str, description: str
) -> dg.ScheduleDefinition:
    """A schedule that is on by default: the daemon replaces Cloud Scheduler."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


def materialize_result(
    metadata: dict[str, Any], failures: list[str], **extra: Any
) -> dg.MaterializeResult:
    """Run metadata as the asset page shows it, with a sample of per-item failures."""
    values: dict[str, Any] = {**metadata, **extra}
    if failures:
        values["failures_sample"] = dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))
    return dg.MaterializeResult(metadata=values)


def invariant_check(
    asset: dg.AssetsDefinition,
    invariant: str,
    description: str,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetChecksDefinition:
    """An asset check passing when no row breaks `app_tables.INVARIANTS[invariant]`."""

    @dg.asset_check(asset=asset, name=invariant, description=description)
    def check(app_db: AppDatabaseResource) -> dg.AssetCheckResult:
        with app_db.connect() as conn:
            violations = app_tables.count_violations(conn, invariant)
        return dg.AssetCheckResult(
            passed=violations == 0, severity=severity, metadata={"violations": violations}
        )

    return check
