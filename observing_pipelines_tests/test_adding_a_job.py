"""The README's "Adding a job" example, loaded from the README itself and run: its table made by
the jobs' role, its job run through Dagster against a local stand-in for GBIF."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import dagster as dg
import pytest
from werkzeug import Request, Response

from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines.jobs.common import cloud_logging_logger
from observing_pipelines.resources import AppDatabaseResource, GbifResource
from observing_pipelines.settings import Settings
from observing_pipelines_tests.fakes import html_error, json_response
from observing_pipelines_tests.support import PROJECT_ROOT
from observing_pipelines_tests.test_thumbnails import cache_taxa, failures

COUNTS = {101: 48_213, 102: 0}


def readme_block(name: str, language: str) -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(
        rf"<!-- example-{name}:start -->\n```{language}\n(.*?)```\n<!-- example-{name}:end -->",
        readme,
        re.S,
    )
    assert block, f"the README lost its example {name}"
    return block.group(1)


def load_example(tmp_path) -> tuple[str, ModuleType]:
    code = readme_block("job", "python")
    path = tmp_path / "occurrence_counts.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("occurrence_counts", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return code, module


@pytest.fixture
def gbif_counts(gbif_server):
    """GBIF's `/v1/occurrence/count`: a bare number; an HTML error page for taxon 103."""

    def answer(request: Request) -> Response:
        key = int(request.args["taxonKey"])
        return html_error(502) if key == 103 else json_response(COUNTS[key])

    gbif_server.expect_request("/v1/occurrence/count").respond_with_handler(answer)
    return gbif_server


def run_example(example, db_url, gbif_server, **env):
    defs = dg.Definitions.merge(
        example.definitions(Settings.from_env(env)),
        dg.Definitions(
            resources={
                "app_db": AppDatabaseResource(url=db_url),
                "gbif": GbifResource(
                    base_url=gbif_server.url_for(""), min_interval_ms=0, max_attempts=2
                ),
            },
            loggers={"console": cloud_logging_logger},
        ),
    )
    result = defs.resolve_job_def("occurrence_counts").execute_in_process()
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return defs, {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_example_is_short_complete_and_runs(tmp_path, conn, db_url, gbif_counts):
    code, example = load_example(tmp_path)
    assert len([line for line in code.splitlines() if line.strip()]) < 50
    with conn, conn.cursor() as cur:  # the migration runs as the jobs' role (`migrate`)
        cur.execute(f"SET ROLE {JOBS_ROLE}")
        cur.execute(readme_block("table", "sql"))
        cur.execute("RESET ROLE")
    cache_taxa(conn, (101, "Helianthus annuus"), (102, "Nullus ignotus"), (103, "Panthera leo"))

    defs, first = run_example(example, db_url, gbif_counts)
    assert {k: first[k] for k in ("taxa_seen", "taxa_changed", "taxa_failed")} == {
        "taxa_seen": 3,
        "taxa_changed": 2,
        "taxa_failed": 1,
    }
    with conn, conn.cursor() as cur:
        cur.execute("SELECT taxon_key, occurrences FROM pipelines.taxon_occurrence_counts")
        assert dict(cur.fetchall()) == {101: 48_213, 102: 0}
    ((attempts, error),) = failures(conn, "occurrence_counts").values()
    assert attempts == 1 and "HTTP 502" in error and "<html" not in error

    _, second = run_example(example, db_url, gbif_counts)
    assert second["taxa_seen"] == 0 and second["http_calls"] == 0  # fresh, or backing off

    (schedule,) = defs.schedules or ()
    assert (schedule.name, schedule.cron_schedule) == ("occurrence_counts_schedule", "0 6 * * 0")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    asset = defs.get_assets_def(["pipelines", "taxon_occurrence_counts"])
    assert asset.op.retry_policy is not None and asset.op.retry_policy.max_retries == 3
    job = defs.resolve_job_def("occurrence_counts")
    assert job.tags["observing/job"] == "occurrence_counts"

    moved = example.definitions(Settings.from_env({"OCCURRENCE_COUNTS_CRON": "15 1 * * *"}))
    assert [s.cron_schedule for s in moved.schedules or ()] == ["15 1 * * *"]
