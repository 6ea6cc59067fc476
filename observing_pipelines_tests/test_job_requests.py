"""Runs the app asks for: rows in `pipelines.job_requests`, turned into runs by the sensor and
answered on the row, with the app's two statements taken from the README and run as the app's
roles."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id
from psycopg2 import errors

from observing_pipelines.db.job_requests import MAX_RUN_CONFIG_BYTES
from observing_pipelines.definitions import defs
from observing_pipelines.jobs.job_requests import REQUEST_TAG, SENSOR
from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines_tests.cloud_sql import as_user
from observing_pipelines_tests.support import PROJECT_ROOT
from observing_pipelines_tests.test_roles import as_role


def readme_statement(verb: str) -> str:
    """The app's statement starting with `verb` in the README's "Runs the app asks for"."""
    section = (PROJECT_ROOT / "README.md").read_text().split("### Runs the app asks for")[1]
    section = re.split(r"\n#{2,3} ", section)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    (statement,) = [block for block in blocks if block.lstrip().upper().startswith(verb)]
    return re.sub(r"\$\d", "%s", statement.strip().rstrip(";"))  # sqlx's $n, psycopg2's %s


REQUEST = readme_statement("INSERT")
POLL = readme_statement("SELECT")


def request(conn, role: str, job_name: str, run_config, requested_by: str = "did:plc:alice"):
    """Insert a request as `role` with the README's statement; its id."""
    with conn, conn.cursor() as cur:
        cur.execute(f"SET ROLE {role}")
        cur.execute(REQUEST, (job_name, json.dumps(run_config), requested_by))
        (request_id,) = cur.fetchone()
        cur.execute("RESET ROLE")
    return request_id


def poll(conn, role: str, request_id: int) -> tuple | None:
    with conn, conn.cursor() as cur:
        cur.execute(f"SET ROLE {role}")
        cur.execute(POLL, (request_id,))
        row = cur.fetchone()
        cur.execute("RESET ROLE")
    return row


@pytest.fixture
def sensor() -> dg.SensorDefinition:
    return defs.get_repository_def().get_sensor_def(SENSOR)


def tick(sensor, instance, db_url):
    context = dg.build_sensor_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        resources={"app_db": AppDatabaseResource(url=as_user(db_url, "jobs_runtime"))},
    )
    return sensor(context)


def run_requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []


RE_RESOLVE = {"ops": {"ingester__identification_taxa": {"config": {"names": ["Puma concolor"]}}}}


def test_a_valid_request_becomes_one_run_and_its_row_follows_the_run(
    sensor, instance, db_url, conn
):
    request_id = request(conn, "appview_runtime", "resolve_taxa", RE_RESOLVE)
    assert poll(conn, "appview_runtime", request_id)[:2] == ("PENDING", None)
    (run_request,) = run_requests(tick(sensor, instance, db_url))
    assert run_request.run_key == f"{SENSOR}:{request_id}"
    assert run_request.job_name == "resolve_taxa"
    assert run_request.run_config == RE_RESOLVE
    assert run_request.tags[REQUEST_TAG] == str(request_id)
    assert run_request.tags["observing/requested_by"] == "did:plc:alice"
    # Until the daemon has made the run, the same request is asked for again, under the
    # same run key: Dagster makes one run of it, however many ticks ask.
    (again,) = run_requests(tick(sensor, instance, db_url))
    assert again.run_key == run_request.run_key

    run = instance.add_run(
        dg.DagsterRun(
            job_name="resolve_taxa",
            run_id=make_new_run_id(),
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={REQUEST_TAG: str(request_id)},
        )
    )
    assert tick(sensor, instance, db_url).skip_message == "followed 1 open request(s)"
    status, run_id, reason, finished_at = poll(conn, "appview_runtime", request_id)[:4]
    assert (status, run_id, reason, finished_at) == ("NOT_STARTED", run.run_id, None, None)

    instance.report_run_failed(run, "the worker died")
    assert tick(sensor, instance, db_url).skip_message == "followed 1 open request(s)"
    assert tick(sensor, instance, db_url).skip_message == "no open request"
    status, run_id, reason, finished_at = poll(conn, "appview_runtime", request_id)[:4]
    assert (status, run_id) == ("FAILURE", run.run_id)
    assert "the worker died" in reason and finished_at is not None


@pytest.mark.parametrize(
    ("job_name", "run_config", "reason"),
    [
        ("drop_everything", {}, "no job 'drop_everything'; jobs: backbone_freshness, "),
        ("resolve_taxa", [1, 2], "run_config must be a JSON object, got list"),
        (
            "resolve_taxa",
            {"ops": {"ingester__identification_taxa": {"config": {"nmes": ["x"]}}}},
            'invalid run_config: Received unexpected config entry "nmes"',
        ),
        (
            "resolve_taxa",
            {"ops": {"ingester__identification_taxa": {"config": {"limit": -1}}}},
            "invalid run_config: ingester__identification_taxa: limit:",
        ),
        (
            "resolve_taxa",
            {"ops": {"ingester__identification_taxa": {"config": {"names": ["x" * 70_000]}}}},
            f"bytes, over {MAX_RUN_CONFIG_BYTES}",
        ),
    ],
    ids=["unknown job", "not an object", "schema", "a rule", "oversized"],
)
def test_a_request_the_job_would_refuse_is_rejected_on_its_row(
    sensor, instance, db_url, conn, job_name, run_config, reason
):
    request_id = request(conn, "ingester_runtime", job_name, run_config)
    good = request(conn, "ingester_runtime", "thumbnails", {})
    (run_request,) = run_requests(tick(sensor, instance, db_url))  # the bad one never stops it
    assert run_request.run_key == f"{SENSOR}:{good}"
    status, run_id, why, finished_at = poll(conn, "ingester_runtime", request_id)[:4]
    assert (status, run_id) == ("REJECTED", None) and finished_at is not None
    assert reason in why, why
    assert len(why) <= 2000


def test_each_app_role_sees_only_its_own_requests(conn):
    mine = request(conn, "appview_runtime", "thumbnails", {})
    theirs = request(conn, "ingester_runtime", "thumbnails", {})
    assert poll(conn, "appview_runtime", mine) is not None
    assert poll(conn, "appview_runtime", theirs) is None
    assert poll(conn, "ingester_runtime", mine) is None
    with conn, conn.cursor() as cur:
        cur.execute("SELECT requested_role, requested_by FROM pipelines.job_requests ORDER BY id")
        assert cur.fetchall() == [
            ("appview_runtime", "did:plc:alice"),
            ("ingester_runtime", "did:plc:alice"),
        ]


@pytest.mark.parametrize("role", ["appview_runtime", "ingester_runtime"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE pipelines.job_requests SET status = 'SUCCESS'",
        "DELETE FROM pipelines.job_requests",
        "INSERT INTO pipelines.job_requests (job_name, status) VALUES ('thumbnails', 'SUCCESS')",
        "INSERT INTO pipelines.job_requests (job_name, requested_role) "
        "VALUES ('thumbnails', 'jobs_runtime')",
        "INSERT INTO pipelines.job_requests (job_name, run_id) VALUES ('thumbnails', 'x')",
        "SELECT count(*) FROM pipelines.view_refreshes",
        "SELECT count(*) FROM pipelines.dead_letters",
    ],
)
def test_the_app_roles_may_do_nothing_else_with_it(conn, role, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(conn, role, statement)
