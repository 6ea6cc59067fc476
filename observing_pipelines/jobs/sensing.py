"""What the sensors of new work share: the runs of a job still to come or going, and a cursor
whose request count makes each run key once.

A run key is the sensor's name and its request count, kept in the cursor. Dagster saves the
cursor with the tick, and creates at most one run per run key: a tick the daemon did not finish
(a restart) is evaluated again with the old cursor, makes the same key, and so neither loses
nor doubles its run.
"""

from __future__ import annotations

from typing import Self

import dagster as dg
from pydantic import BaseModel, ValidationError

from observing_pipelines.settings import Settings

WAITING = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
)
"""Runs that have not begun their work: whatever is in the tables when they do, they take."""
GOING = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def new_work_status(settings: Settings) -> dg.DefaultSensorStatus:
    """How the sensors of new work start: running, unless `NEW_WORK_SENSORS` is off."""
    return (
        dg.DefaultSensorStatus.RUNNING
        if settings.new_work_sensors
        else dg.DefaultSensorStatus.STOPPED
    )


def runs_in_flight(instance: dg.DagsterInstance, job_name: str) -> list[dg.DagsterRun]:
    """The job's runs queued, starting or going (one indexed query on the run storage)."""
    return list(
        instance.get_runs(
            filters=dg.RunsFilter(job_name=job_name, statuses=[*WAITING, *GOING]), limit=10
        )
    )


def waiting_run(runs: list[dg.DagsterRun]) -> dg.DagsterRun | None:
    return next((run for run in runs if run.status in WAITING), None)


class SensorCursor(BaseModel):
    """A sensor's cursor as JSON; one that does not parse (an older shape) starts afresh."""

    requests: int = 0

    @classmethod
    def load(cls, text: str | None) -> Self:
        try:
            return cls.model_validate_json(text) if text else cls()
        except ValidationError:
            return cls()

    def dump(self) -> str:
        return self.model_dump_json()

    def next_run_key(self, sensor: str) -> str:
        """Count one more request and name its run."""
        self.requests += 1
        return f"{sensor}:{self.requests}"
