"""Plain helpers the tests and the benchmarks share (conftest.py keeps the fixtures only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from observing_pipelines.clients.http import HttpPolicy, PoliteHttpClient
from observing_pipelines.jobs.common import VIOLATIONS_QUERY
from observing_pipelines.settings import cron_variable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_POLICY = HttpPolicy(
    user_agent="observing-pipelines-tests/1.0 (https://observ.ing; tests)",
    timeout_seconds=2.0,
    max_attempts=3,
    max_retry_after_seconds=5.0,
    min_interval_ms=0,
    max_concurrency=4,
    backoff_initial_seconds=0.01,
    backoff_max_seconds=0.05,
)


@contextmanager
def polite(service: str, url: str) -> Iterator[PoliteHttpClient]:
    """A client of `service` at `url` under the tests' quick policy, closed afterwards."""
    http = PoliteHttpClient(service, url, TEST_POLICY)
    try:
        yield http
    finally:
        http.close()


def location() -> dg.Definitions:
    """The code location as `definitions.py` builds it from this environment."""
    from observing_pipelines.definitions import defs

    return defs


NEVER = "0 0 1 1 *"


def quiet_schedules() -> dict[str, str]:
    """`<JOB>_CRON` for every job at New Year's midnight: the schedules stay RUNNING (the
    scheduler evaluates them every minute) but no run of theirs lands while we measure."""
    from observing_pipelines.definitions import JOBS

    return {cron_variable(module.SPEC.name): NEVER for module in JOBS}


def invariant_queries() -> dict[str, str]:
    """Every invariant the jobs' asset checks count, by check name, from the definitions."""
    return {
        spec.name: str(spec.metadata[VIOLATIONS_QUERY])
        for checks in location().asset_checks or ()
        if isinstance(checks, dg.AssetChecksDefinition)
        for spec in checks.check_specs
        if VIOLATIONS_QUERY in spec.metadata
    }
