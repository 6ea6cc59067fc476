"""The code location: every job module's definitions, merged, with the sensors, resources and
logger they share, wired from the environment. A new job is one more module in `JOBS`
(`resolve_taxa`'s brings `community_ids`, the view it refreshes, with its own job and sensor)."""

import dagster as dg

from observing_pipelines.jobs import (
    backbone_freshness,
    conservation_status,
    job_requests,
    operations,
    resolve_taxa,
    thumbnails,
    vernacular_names,
)
from observing_pipelines.jobs.common import cloud_logging_logger
from observing_pipelines.resources import build_resources
from observing_pipelines.settings import Settings, SettingsError, cron_variable

JOBS = (resolve_taxa, thumbnails, conservation_status, backbone_freshness, vernacular_names)

settings = Settings.from_env()


def code_location(settings: Settings) -> dg.Definitions:
    """Every job, with the sensors that take requests for them, and what they share."""
    jobs = dg.Definitions.merge(*(module.definitions(settings) for module in JOBS))
    return dg.Definitions.merge(
        jobs,
        dg.Definitions(
            sensors=[
                operations.dead_letter_sensor,
                job_requests.requests_sensor(settings, list(jobs.jobs or ())),
            ],
            resources=build_resources(settings),
            loggers={"console": cloud_logging_logger},  # replaces Dagster's coloured output
            # Each job is an asset or two and their checks, run one after the other: steps in
            # the run's own process instead of a Python interpreter each (120 MiB apiece;
            # benchmarks/memory.py). Retry policies and pools work the same; a crashed run is
            # retried by run_retries.
            executor=dg.in_process_executor,
        ),
    )


defs = code_location(settings)

_unknown_crons = set(settings.crons) - {cron_variable(module.SPEC.name) for module in JOBS}
if _unknown_crons:
    raise SettingsError(
        f"{', '.join(sorted(_unknown_crons))} names no job; a job's schedule is <JOB>_CRON"
    )
