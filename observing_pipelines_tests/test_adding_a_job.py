"""The README's "Adding a job" example, loaded from the README itself and run."""

from __future__ import annotations

import importlib.util
import re

import dagster as dg

from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines_tests.conftest import PROJECT_ROOT
from observing_pipelines_tests.test_resolve_taxa import identify


def load_example(tmp_path):
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- example-job:start -->\n```python\n(.*?)```\n<!-- example-job:end -->", readme, re.S
    )
    assert block, "the README lost its example job"
    code = block.group(1)
    path = tmp_path / "resolve_backlog_example.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("resolve_backlog_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return code, module


def test_the_example_is_short_complete_and_runs(tmp_path, conn, db_url):
    code, example = load_example(tmp_path)
    assert len([line for line in code.splitlines() if line.strip()]) < 50
    identify(conn, ("Quercus robur", "Plantae"), ("Abies alba", "Plantae"), ("Panthera leo", None))
    defs = dg.Definitions(
        assets=[example.resolve_backlog],
        jobs=[example.resolve_backlog_job],
        schedules=[example.resolve_backlog_schedule],
        resources={"app_db": AppDatabaseResource(url=db_url)},
    )
    job = defs.resolve_job_def("resolve_backlog")
    assert example.resolve_backlog.op.retry_policy.max_retries == 3
    result = job.execute_in_process()
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata == {"pending_total": 3, "pending_Plantae": 2, "pending_unknown": 1}
    schedule = example.resolve_backlog_schedule
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")
