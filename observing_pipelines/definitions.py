"""The code location: every asset, check, job, schedule, sensor and resource, wired from the
environment."""

import dagster as dg

from observing_pipelines.jobs import conservation, freshness, operations, resolve_taxa, thumbnails
from observing_pipelines.jobs.common import cloud_logging_logger
from observing_pipelines.resources import build_resources
from observing_pipelines.settings import Settings

settings = Settings.from_env()
timezone = settings.schedule_timezone

defs = dg.Definitions(
    assets=[
        resolve_taxa.identification_taxa,
        resolve_taxa.identification_taxa_by_kingdom,
        thumbnails.taxon_images,
        conservation.taxon_conservation,
        freshness.backbone_changes,
    ],
    asset_checks=[
        *resolve_taxa.resolve_taxa_checks,
        *thumbnails.thumbnails_checks,
        *conservation.conservation_checks,
        *freshness.freshness_checks,
    ],
    jobs=[
        resolve_taxa.resolve_taxa_job,
        thumbnails.thumbnails_job,
        conservation.conservation_job,
        freshness.freshness_job,
    ],
    schedules=[
        resolve_taxa.resolve_taxa_schedule(settings.resolve_taxa_cron, timezone),
        thumbnails.thumbnails_schedule(settings.thumbnails_cron, timezone),
        conservation.conservation_schedule(settings.conservation_cron, timezone),
        freshness.freshness_schedule(settings.freshness_cron, timezone),
    ],
    sensors=[operations.dead_letter_sensor],
    resources=build_resources(settings),
    loggers={"console": cloud_logging_logger},  # replaces Dagster's coloured console output
    # Each job is one asset and its checks, run one after the other: steps in the run's own
    # process instead of a Python interpreter each (120 MiB apiece; benchmarks/memory.py).
    # Retry policies and pools work the same; a crashed run is retried by run_retries.
    executor=dg.in_process_executor,
)
