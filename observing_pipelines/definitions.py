"""The code location: every job module's definitions, merged, with the sensors, resources and
logger they share, wired from the environment. A new job is one more module in `JOBS`."""

import dagster as dg

from observing_pipelines.jobs import (
    backbone_freshness,
    conservation_status,
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

defs = dg.Definitions.merge(
    *(module.definitions(settings) for module in JOBS),
    dg.Definitions(
        sensors=[operations.dead_letter_sensor],
        resources=build_resources(settings),
        loggers={"console": cloud_logging_logger},  # replaces Dagster's coloured console output
        # Each job is one asset and its checks, run one after the other: steps in the run's
        # own process instead of a Python interpreter each (120 MiB apiece;
        # benchmarks/memory.py). Retry policies and pools work the same; a crashed run is
        # retried by run_retries.
        executor=dg.in_process_executor,
    ),
)

_unknown_crons = set(settings.crons) - {cron_variable(module.SPEC.name) for module in JOBS}
if _unknown_crons:
    raise SettingsError(
        f"{', '.join(sorted(_unknown_crons))} names no job; a job's schedule is <JOB>_CRON"
    )
