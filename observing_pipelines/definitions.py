"""The code location: every asset, job, schedule and resource, wired from the environment."""

import dagster as dg

from observing_pipelines.jobs import resolve_taxa
from observing_pipelines.resources import build_resources
from observing_pipelines.settings import Settings

settings = Settings.from_env()

defs = dg.Definitions(
    assets=[resolve_taxa.identification_taxa],
    jobs=[resolve_taxa.resolve_taxa_job],
    schedules=[
        resolve_taxa.resolve_taxa_schedule(settings.resolve_taxa_cron, settings.schedule_timezone)
    ],
    resources=build_resources(settings),
)
