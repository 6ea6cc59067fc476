"""Operating the jobs end to end: a real dagster-webserver and dagster-daemon on Postgres storage.

The services are started the way the container starts them (`observing-pipelines webserver` and
`daemon`), on free ports, against a fresh migrated database and local API stand-ins. The only
change to the project's dagster.yaml is a 1-second dequeue interval, so the suite does not wait
15 s per run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClientError

from observing_pipelines_tests import fakes
from observing_pipelines_tests.services import services_on_a_copy, stand_ins, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def services(tmp_path_factory, server_url, template_database):
    with stand_ins() as apis:
        apis.gbif.red_list[9206251] = {"category": "LEAST_CONCERN", "code": "LC"}
        apis.gbif.script(
            "Helianthus annuus", fakes.json_response(["slow down"], 429, {"Retry-After": "1"})
        )
        with services_on_a_copy(
            tmp_path_factory.mktemp("ops"), server_url, template_database, apis.env(), isolate=False
        ) as running:
            running.apis = apis
            yield running


def test_health_checks(services):
    assert services.server_info()["dagster_webserver_version"]
    beats = wait_for(
        lambda: services.query("SELECT daemon_type FROM dagster.daemon_heartbeats"),
        90,
        "daemon heartbeats",
    )
    assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "BACKFILL"} <= {b for (b,) in beats}


def test_every_job_through_graphql(services):
    for job in ("resolve_taxa", "thumbnails", "conservation_status", "backbone_freshness"):
        run_id = services.client.submit_job_execution(
            job, repository_location_name="observing_pipelines"
        )
        assert services.finish(run_id) == DagsterRunStatus.SUCCESS, job
    assert services.query(
        "SELECT accepted_taxon_key FROM ingester.identifications ORDER BY uri"
    ) == [(9206251,), (5219404,)]
    assert services.query(
        "SELECT status, thumb_small_width FROM pipelines.taxon_images WHERE taxon_key = 9206251"
    ) == [("found", 120)]


def test_cli_trigger_re_resolves_and_waits(services):
    cli = str(Path(sys.executable).with_name("observing-pipelines"))
    done = subprocess.run(
        [
            cli,
            "trigger",
            "resolve_taxa",
            "--set",
            "names=[Helianthus annuus]",
            "--wait",
            "--timeout",
            "240",
        ],
        env=services.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_id, status = done.stdout.split()
    assert status == "SUCCESS"
    (event,) = services.query(
        "SELECT event FROM dagster.event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (run_id,),
    )
    assert '"names_resolved"' in event[0] and '"http_calls"' in event[0]
    (asked_again,) = services.query(
        "SELECT last_attempt_at > now() - interval '5 minutes' FROM pipelines.resolution_attempts "
        "WHERE subject = 'Helianthus annuus'"
    )
    assert asked_again == (True,)  # forgotten, then asked of GBIF afresh
    stamped = services.query("SELECT accepted_taxon_key FROM ingester.identifications ORDER BY uri")
    assert stamped[0] == (9206251,)


def test_every_job_through_the_cli(services):
    cli = str(Path(sys.executable).with_name("observing-pipelines"))
    for job in ("thumbnails", "conservation_status", "backbone_freshness"):
        done = subprocess.run(
            [cli, "trigger", job, "--set", "limit=10"],
            env=services.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert services.finish(done.stdout.strip()) == DagsterRunStatus.SUCCESS, job


def test_kingdom_backfill_through_graphql(services):
    mutation = """
    mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
      __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
    params = {
        "assetSelection": [{"path": ["ingester", "identification_taxa_by_kingdom"]}],
        "partitionNames": ["Plantae", "Fungi"],
        "title": "backfill kingdoms",
    }
    answer = requests.post(
        f"http://127.0.0.1:{services.port}/graphql",
        json={"query": mutation, "variables": {"p": params}},
        timeout=30,
    ).json()
    result = answer["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill = result["backfillId"]

    def finished_runs():
        rows = services.query(
            "SELECT r.status FROM dagster.runs r JOIN dagster.run_tags t ON t.run_id = r.run_id "
            "WHERE t.key = 'dagster/backfill' AND t.value = %s",
            (backfill,),
        )
        return (
            rows if len(rows) == 2 and all(s in ("SUCCESS", "FAILURE") for (s,) in rows) else None
        )

    assert wait_for(finished_runs, 240, "the backfill's runs") == [("SUCCESS",), ("SUCCESS",)]


def dead_letter(services, run_id: str) -> tuple[str, str, str | None, int | None]:
    (letter,) = wait_for(
        lambda: services.query(
            "SELECT job_name, error, step_key, step_attempts FROM pipelines.dead_letters "
            "WHERE run_id = %s",
            (run_id,),
        ),
        120,
        f"the dead letter of {run_id}",
    )
    return letter


def dead_letter_line(services, run_id: str) -> dict:
    def lines() -> list[dict]:
        return [
            line
            for line in services.log_lines("daemon")
            if line["severity"] == "ERROR"
            and line["message"].startswith("Dead letter")
            and line.get("event") == "dead_letter"  # through the relay, as alerting counts it
            and line["logging.googleapis.com/labels"]["run_id"] == run_id
        ]

    (line,) = wait_for(lines, 30, "the dead letter's log line")
    return line


def test_a_run_failing_for_good_becomes_a_dead_letter_with_its_cause(services):
    """No retry left (`dagster/max_retries` 0) and a run cut off by its maximum runtime: the
    letter and its ERROR line say so, instead of "Execution of run ... failed"."""
    services.apis.gbif.script("Panthera uncia", 30.0)  # the run is still asking at 3 s
    services.query(
        "INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid, "
        "scientific_name, date_identified) VALUES ('at://slow', 'c', 'd', 'at://o', 'c', "
        "'Panthera uncia', now())"
    )
    run_id = services.client.submit_job_execution(
        "resolve_taxa",
        repository_location_name="observing_pipelines",
        tags={"dagster/max_runtime": "3", "dagster/max_retries": "0"},
    )
    assert services.finish(run_id) == DagsterRunStatus.FAILURE
    job, error, step, attempts = dead_letter(services, run_id)
    assert (job, step, attempts) == ("resolve_taxa", None, None)
    assert "Exceeded maximum runtime of 3 seconds" in error, error
    assert "Exceeded maximum runtime" in dead_letter_line(services, run_id)["message"]


def test_an_in_process_run_failing_becomes_a_dead_letter_too(services, tmp_path):
    """`dagster job execute`, as the README offers it for ad-hoc runs: no daemon launched it,
    no retry can come, and its failure is recorded like any other, with the step's cause."""
    config = tmp_path / "run.yaml"
    config.write_text("ops: {pipelines__taxon_images: {config: {small_width: 321}}}")
    command = ["job", "execute", "-m", "observing_pipelines.definitions", "-j", "thumbnails"]
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *command, "-c", str(config)],
        env=services.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode != 0
    (run_id,) = services.query(
        "SELECT run_id FROM dagster.runs WHERE pipeline_name = 'thumbnails' "
        "AND status = 'FAILURE' ORDER BY id DESC LIMIT 1"
    )[0]
    job, error, step, attempts = dead_letter(services, run_id)
    assert (job, step, attempts) == ("thumbnails", "pipelines__taxon_images", 1)
    assert error.startswith("observing_pipelines.jobs.common.InvalidJobConfig: small_width: 321px")
    assert "small_width" in dead_letter_line(services, run_id)["message"]


@pytest.mark.parametrize(
    ("job", "config", "reason"),
    [
        ("thumbnails", {"small_width": 321}, "321px is not a Commons standard width"),
        ("resolve_taxa", {"limit": -5}, "limit: must be a whole number from 1"),
        ("resolve_taxa", {"limit": 0}, "limit: must be a whole number from 1"),
        ("resolve_taxa", {"kingdom": "Plant\u0000ae"}, "kingdom: must be one of GBIF's kingdoms"),
        ("resolve_taxa", {"names": ["\u0000"]}, "names.0: must not contain control characters"),
        ("conservation_status", {"limit": 10**9}, "limit: must be a whole number from 1"),
    ],
)
def test_a_launch_breaking_a_rule_is_refused_before_a_run_exists(services, job, config, reason):
    (op,) = {
        "thumbnails": ["pipelines__taxon_images"],
        "resolve_taxa": ["ingester__identification_taxa"],
        "conservation_status": ["pipelines__taxon_conservation"],
    }[job]
    config = {
        k: (v.encode().decode("unicode_escape") if isinstance(v, str) else v)
        for k, v in config.items()
    }
    if "names" in config:
        config["names"] = [n.encode().decode("unicode_escape") for n in config["names"]]
    runs_before = services.query("SELECT count(*) FROM dagster.runs")
    with pytest.raises(DagsterGraphQLClientError) as refused:
        services.client.submit_job_execution(
            job,
            repository_location_name="observing_pipelines",
            run_config={"ops": {op: {"config": config}}},
        )
    assert reason in str(refused.value.__cause__)  # the webserver's GraphQL error
    assert services.query("SELECT count(*) FROM dagster.runs") == runs_before


def test_every_log_line_is_cloud_logging_json_and_retries_show(services):
    for name in ("daemon", "webserver"):
        lines = services.log_lines(name)
        assert lines and all({"severity", "message", "time"} <= line.keys() for line in lines)
        plain = [line for line in lines if " - dagster - " in line["message"]]
        assert not plain, plain[:3]  # no coloured console text passed off as a message
    retries = [line for line in services.log_lines("daemon") if "retry 1/" in line["message"]]
    assert retries and retries[0]["severity"] == "WARNING"
    assert retries[0]["logging.googleapis.com/labels"]["job_name"] == "resolve_taxa"
