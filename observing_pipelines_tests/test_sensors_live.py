"""The sensors of new work in a real daemon on Postgres: new identifications are stamped and
visible within seconds, an app's request runs once and reports back, across a daemon killed
mid-way, and nothing runs while nothing arrives."""

from __future__ import annotations

import json
import time

from observing_pipelines.jobs.job_requests import REQUEST_TAG
from observing_pipelines_tests.services import (
    TWO_IDENTIFICATIONS,
    fetch,
    services_on_a_copy,
    stand_ins,
    wait_for,
)
from observing_pipelines_tests.support import quiet_schedules
from observing_pipelines_tests.test_job_requests import POLL, REQUEST


def visible(services, names: list[str]) -> bool:
    rows = services.query(
        "SELECT count(*) FROM ingester.community_ids WHERE scientific_name = ANY(%s) "
        "AND accepted_taxon_key IS NOT NULL",
        (names,),
    )
    return rows[0][0] == len(names)


def runs(services) -> list[tuple[str, str]]:
    return services.query("SELECT pipeline_name, status FROM dagster.runs ORDER BY id")


def test_new_identifications_and_a_request_become_runs_across_a_daemon_crash(
    tmp_path, server_url, template_database
):
    env = quiet_schedules() | {"NEW_WORK_SENSORS": "true", "SENSOR_INTERVAL_SECONDS": "2"}
    with (
        stand_ins() as apis,
        services_on_a_copy(
            tmp_path, server_url, template_database, apis.env() | env, isolate=True
        ) as services,
    ):
        started = time.monotonic()
        names = [name for name, _ in TWO_IDENTIFICATIONS]
        wait_for(lambda: visible(services, names), 120, "both identifications in community_ids")
        first_seconds = time.monotonic() - started

        app = services.db_url.replace("postgres@", "appview_runtime@", 1)
        ops = {"ingester__identification_taxa": {"config": {"names": ["Panthera leo"]}}}
        (request_id,) = fetch(app, REQUEST, ("resolve_taxa", json.dumps({"ops": ops}), "did:x"))[0]
        wait_for(
            lambda: fetch(app, POLL, (request_id,))[0][1], 60, "the request's run id on its row"
        )
        services.crash("daemon")  # the request's run may be queued, going, or done
        services.start("daemon")
        status = wait_for(
            lambda: (
                (row := fetch(app, POLL, (request_id,))[0])[0] in {"SUCCESS", "FAILURE"} and row
            ),
            180,
            "the request's final status",
        )
        assert status[0] == "SUCCESS", status
        tagged = services.query(
            "SELECT run_id FROM dagster.run_tags WHERE key = %s AND value = %s",
            (REQUEST_TAG, str(request_id)),
        )
        assert [run_id for (run_id,) in tagged] == [status[1]]  # one run, on the row

        settled = runs(services)
        assert all(state == "SUCCESS" for _, state in settled), settled
        time.sleep(8)  # four sensor intervals with nothing new: no run
        assert runs(services) == settled
    print(f"first identifications visible after {first_seconds:.1f} s; runs: {settled}")
