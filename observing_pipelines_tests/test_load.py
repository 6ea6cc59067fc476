"""A burst of launches against the whole system stays within a connection budget.

The app's Cloud SQL instance is shared, so the jobs must not take connections in proportion to
their queue: a burst of 50 launches once took webserver, daemon, code servers and run workers
from 5 to 38 connections (and the webserver's own pools could grow to 63). Here the real
webserver and daemon take 50 launches of all four jobs at once, through GraphQL, while the
connections to the database are counted every 100 ms.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dagster_graphql import DagsterGraphQLClient

from observing_pipelines_tests.cloud_sql import database_name
from observing_pipelines_tests.services import (
    ConnectionSampler,
    services_on_a_copy,
    stand_ins,
)

pytestmark = pytest.mark.timeout(600)

BURST = 50
BUDGET = 20
JOBS = ("resolve_taxa", "thumbnails", "conservation_status", "backbone_freshness")


def test_a_burst_of_50_launches_stays_within_20_connections(
    tmp_path, server_url, template_database, record_property
):
    with (
        stand_ins() as apis,
        services_on_a_copy(
            tmp_path, server_url, template_database, apis.env(), isolate=True
        ) as services,
    ):
        database = database_name(services.db_url)
        with ConnectionSampler(server_url, database) as idle:
            time.sleep(5)
        jobs = list(itertools.islice(itertools.cycle(JOBS), BURST))

        def launch(job: str) -> str:
            client = DagsterGraphQLClient("127.0.0.1", port_number=services.port)
            return client.submit_job_execution(job, repository_location_name="observing_pipelines")

        with ConnectionSampler(server_url, database) as burst:
            with ThreadPoolExecutor(10) as pool:
                run_ids = list(pool.map(launch, jobs))
            statuses = [services.finish(run_id, 300) for run_id in run_ids]
    assert {status.value for status in statuses} == {"SUCCESS"}
    observed = {"idle_peak": idle.peak, "burst_peak": burst.peak, "samples": len(burst.counts)}
    record_property("connections", observed)
    print(f"connections under a burst of {BURST} launches: {observed}")
    assert burst.peak <= BUDGET, observed
