"""Invariants of infra/ (no Terraform providers can be downloaded here, so the .tf files are
parsed with python-hcl2 and checked directly)."""

from __future__ import annotations

import inspect
import io
import json
import logging
import re
import textwrap
from pathlib import Path

import dagster as dg
import hcl2
import pytest

from observing_pipelines_tests.support import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"


def _unquote(value):
    """python-hcl2 keeps HCL's quotes on strings and keys; drop them and its block markers."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(directory: Path) -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for kind, blocks in _unquote(hcl2.load(handle)).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


def resources(module: dict, kind: str) -> dict[str, dict]:
    return {
        name: body
        for block in module.get("resource", [])
        for k, named in block.items()
        if k == kind
        for name, body in named.items()
    }


@pytest.fixture(scope="module")
def module():
    return load(INFRA)


def test_every_tf_file_parses():
    files = sorted(INFRA.rglob("*.tf"))
    assert len(files) >= 8
    for path in files:
        with path.open() as handle:
            assert hcl2.load(handle) is not None, path


def test_no_cloud_scheduler_is_created(module):
    kinds = {kind for block in module.get("resource", []) for kind in block}
    assert not {k for k in kinds if "scheduler" in k}
    teardown = load(INFRA / "legacy-teardown")
    assert "resource" not in teardown  # it only imports the old resources, to destroy them
    assert {i["to"] for i in teardown["import"]} == {
        "${google_cloud_scheduler_job.legacy_resolve_taxa}",
        "${google_cloud_run_v2_job.legacy_resolve_taxa}",
    }


def test_daemon_runs_exactly_one_always_on_instance_without_ingress(module):
    (daemon,) = resources(module, "google_cloud_run_v2_worker_pool").values()
    (scaling,) = daemon["scaling"]
    assert (scaling["scaling_mode"], scaling["manual_instance_count"]) == ("MANUAL", 1)
    assert "ingress" not in daemon  # a worker pool has no endpoint at all
    (template,) = daemon["template"]
    assert template["containers"][0]["args"] == ["daemon"]
    assert not resources(module, "google_cloud_run_v2_worker_pool_iam_member")


def test_webserver_is_behind_iap_and_not_public(module):
    (webserver,) = resources(module, "google_cloud_run_v2_service").values()
    assert webserver["iap_enabled"] is True
    container = webserver["template"][0]["containers"][0]
    assert container["startup_probe"][0]["http_get"][0]["path"] == "/health"
    assert container["liveness_probe"][0]["http_get"][0]["path"] == "/health"
    (invoker,) = resources(module, "google_cloud_run_v2_service_iam_member").values()
    assert invoker["role"] == "roles/run.invoker" and "gcp-sa-iap" in invoker["member"]
    text = "\n".join(p.read_text() for p in INFRA.rglob("*.tf"))
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text


def test_secrets_come_from_secret_manager(module):
    text = json.dumps(module)
    for secret in ("DB_PASSWORD", "IUCN_API_TOKEN", "DATABASE_URL", "JOBS_RUNTIME_PASSWORD"):
        assert not re.search(rf'"name": "{secret}", "value": ', text), secret
    (locals_,) = [block for block in module["locals"] if "secret_env" in block]
    assert "DB_PASSWORD" in locals_["secret_env"] and "IUCN_API_TOKEN" in locals_["secret_env"]
    for kind in (
        "google_cloud_run_v2_worker_pool",
        "google_cloud_run_v2_service",
        "google_cloud_run_v2_job",
    ):
        for name, body in resources(module, kind).items():
            refs = json.dumps(body)
            assert "secret_key_ref" in refs, f"{kind}.{name} gets no secret from Secret Manager"


def test_database_over_the_cloudsql_socket_and_image_from_artifact_registry(module):
    (locals_,) = [block for block in module["locals"] if "plain_env" in block]
    assert 'DB_HOST = "/cloudsql/${local.sql_connection}"' in locals_["plain_env"]
    assert 'DB_USER = "jobs_runtime"' in locals_["plain_env"]
    (image,) = [v for block in module["variable"] for k, v in block.items() if k == "image"]
    assert "-docker" in image["validation"][0]["condition"]
    assert "pkg" in image["validation"][0]["condition"]


def test_service_account_holds_only_the_roles_it_uses(module):
    roles = {body["role"] for body in resources(module, "google_project_iam_member").values()}
    assert roles == {"roles/cloudsql.client", "roles/logging.logWriter"}
    assert not {r for r in roles if r.endswith(("owner", "editor", "admin"))}


def test_provider_is_pinned(module):
    (terraform,) = module["terraform"]
    google = terraform["required_providers"][0]["google"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", google["version"])


def test_the_jobs_role_is_never_a_cloud_sql_built_in_user():
    """`migrate` creates jobs_runtime in SQL. A `google_sql_user` (a built-in user) would be
    made a member of cloudsqlsuperuser, holding every table privilege."""
    for path in sorted(INFRA.rglob("*.tf")):
        with path.open() as handle:
            blocks = _unquote(hcl2.load(handle)).get("resource", [])
        assert not [kind for block in blocks for kind in block if kind == "google_sql_user"], path


@pytest.mark.parametrize(
    ("parts", "launcher"),
    [
        (["dagster.yaml"], "HealthCheckingRunLauncher"),
        (["dagster.yaml", "infra/instance/compute-logs-gcs.yaml"], "HealthCheckingRunLauncher"),
        (
            [
                "dagster.yaml",
                "infra/instance/compute-logs-gcs.yaml",
                "infra/instance/run-launcher-cloud-run.yaml",
            ],
            "CloudRunRunLauncher",
        ),
    ],
    ids=["home-local", "home", "home-cloud-run"],
)
def test_each_image_home_has_the_launcher_it_is_for(tmp_path, parts, launcher):
    """The Dockerfile builds the instance homes by concatenating these files; the scaling-out
    home's `run_launcher` replaces ours (the last key wins in Dagster's YAML loading)."""
    from dagster._core.instance.config import dagster_instance_config

    text = "\n".join((PROJECT_ROOT / part).read_text() for part in parts)
    (tmp_path / "dagster.yaml").write_text(text)
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == launcher


# Alerts (infra/alerts.tf): policies, the metrics they watch, and the lines those metrics count.
# The filters are evaluated here against lines the code really prints, the way Cloud Logging
# files them (`severity` and `logging.googleapis.com/labels` lifted out of `jsonPayload`).

README = (PROJECT_ROOT / "README.md").read_text()
WORKER_POOL = {"type": "cloud_run_worker_pool", "labels": {"worker_pool_name": "d"}}


def heredoc(text: str) -> str:
    """A heredoc's text as Terraform makes it (python-hcl2 keeps the markers)."""
    body = text.split("\n", 1)[1].rsplit("\n", 1)[0] if text.startswith("<<") else text
    return textwrap.dedent(body)


@pytest.fixture(scope="module")
def metrics(module):
    return resources(module, "google_logging_metric")


@pytest.fixture(scope="module")
def policies(module):
    return resources(module, "google_monitoring_alert_policy")


@pytest.fixture(scope="module")
def alert_locals(module):
    (block,) = [block for block in module["locals"] if "pipeline_lines" in block]
    return block


@pytest.fixture(scope="module")
def rendered(module, metrics, alert_locals):
    """Each metric's filter with its references filled in (project `p`, worker pool `d`)."""
    (daemon,) = resources(module, "google_cloud_run_v2_worker_pool").values()
    assert daemon["name"] == "observing-pipelines-daemon"
    (run_worker_job,) = [b["run_worker_job"] for b in module["locals"] if "run_worker_job" in b]
    values = {
        "${local.pipeline_lines}": heredoc(alert_locals["pipeline_lines"]),
        "${var.project_id}": "p",
        "${google_cloud_run_v2_worker_pool.daemon.name}": "d",
        "${local.run_worker_job}": run_worker_job,
    }

    def render(text: str) -> str:
        for reference, value in values.items():
            text = text.replace(reference, value)
        assert "${" not in text, text
        return text

    return {name: render(heredoc(body["filter"])) for name, body in metrics.items()}


_TOKEN = re.compile(
    r'\s*(?:(?P<paren>[()])|(?P<op>AND|OR)\b|(?P<field>[A-Za-z][\w.]*)\s*(?P<cmp>=~|=)\s*"'
    r'(?P<value>(?:[^"\\]|\\.)*)")'
)


def matches(query: str, entry: dict) -> bool:
    """Cloud Logging's query language, as much as alerts.tf uses: comparisons (`=`, `=~`),
    parentheses, AND and OR, adjacent terms ANDed, and OR binding tighter than AND."""
    tokens, at = [], 0
    while query[at:].strip():
        token = _TOKEN.match(query, at)
        assert token, f"cannot read {query[at:]!r}"
        tokens.append(token)
        at = token.end()

    def value_of(path: str) -> object:
        node: object = entry
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def conjunction(i: int) -> tuple[bool, int]:
        result, i = disjunction(i)
        while i < len(tokens) and tokens[i]["paren"] != ")":
            i += tokens[i]["op"] == "AND"
            right, i = disjunction(i)
            result = result and right
        return result, i

    def disjunction(i: int) -> tuple[bool, int]:
        result, i = term(i)
        while i < len(tokens) and tokens[i]["op"] == "OR":
            right, i = term(i + 1)
            result = result or right
        return result, i

    def term(i: int) -> tuple[bool, int]:
        token = tokens[i]
        if token["paren"] == "(":
            result, i = conjunction(i + 1)
            assert tokens[i]["paren"] == ")"
            return result, i + 1
        actual, wanted = value_of(token["field"]), token["value"].replace('\\"', '"')
        if token["cmp"] == "=~":
            return isinstance(actual, str) and re.search(wanted, actual) is not None, i + 1
        return actual == wanted, i + 1

    result, end = conjunction(0)
    assert end == len(tokens)
    return result


def entry(line: dict, resource: dict = WORKER_POOL, log: str = "stdout") -> dict:
    """A JSON line as Cloud Logging stores it."""
    payload = dict(line)
    severity = payload.pop("severity")
    payload.pop("time", None)
    return {
        "logName": f"projects/p/logs/run.googleapis.com%2F{log}",
        "resource": resource,
        "severity": severity,
        "labels": payload.pop("logging.googleapis.com/labels", {}),
        "jsonPayload": payload,
    }


def extract(extractor: str, log_entry: dict) -> str | None:
    """A label extractor (`EXTRACT(field)`, `REGEXP_EXTRACT(field, "re")`) on an entry."""
    unescaped = extractor.replace('\\"', '"')  # python-hcl2 keeps HCL's escapes
    found = re.fullmatch(r'(EXTRACT|REGEXP_EXTRACT)\(([\w.]+)(?:, "(.*)")?\)', unescaped)
    assert found, extractor
    node: object = log_entry
    for part in found[2].split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if found[1] == "EXTRACT" or not isinstance(node, str):
        return node if isinstance(node, str) else None
    hit = re.search(found[3], node)
    return hit[1] if hit else None


def counted(metrics, rendered, lines: list[dict], resource: dict = WORKER_POOL) -> dict:
    """Which metric counts which line, with the labels it extracts."""
    found: dict[str, list[dict]] = {}
    for line in lines:
        log_entry = entry(line, resource)
        for name, query in rendered.items():
            if matches(query, log_entry):
                extractors = metrics[name]["label_extractors"]
                found.setdefault(name, []).append(
                    {key: extract(x, log_entry) for key, x in extractors.items()}
                )
    return found


def conditions(policy: dict) -> list[tuple[str, dict]]:
    """A policy's conditions, static and dynamic, as (kind, body)."""
    blocks = list(policy.get("conditions", []))
    for dynamic in policy.get("dynamic", []):
        blocks += dynamic.get("conditions", {}).get("content", [])
    return [
        (kind, body[0] if isinstance(body, list) else body)
        for block in blocks
        for kind, body in block.items()
        if kind.startswith("condition_")
    ]


def runbook_headings() -> list[str]:
    section = README.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### (.+)$", section, re.MULTILINE)


def test_every_policy_says_what_to_do_and_names_its_runbook_section(policies):
    headings = runbook_headings()
    assert len(headings) == len(policies) == 4
    named = set()
    for name, policy in policies.items():
        (documentation,) = policy["documentation"]
        assert documentation["mime_type"] == "text/markdown"
        content = heredoc(documentation["content"])
        assert "${local.runbook}" in content, name
        sections = [h for h in headings if f'"{h}"' in content]
        assert len(sections) == 1, f"{name} names no runbook section of README.md"
        assert re.search(r"^1\. ", content, re.MULTILINE), f"{name} gives no steps"
        named |= set(sections)
        assert policy["notification_channels"] == "${local.alert_channels}", name
    assert named == set(headings)


def test_every_metric_a_policy_watches_is_defined_with_the_labels_it_filters_on(policies, metrics):
    watched = set()
    for name, policy in policies.items():
        for kind, condition in conditions(policy):
            if kind == "condition_matched_log":
                assert re.fullmatch(
                    r"\$\{google_logging_metric\.(\w+)\.filter\}", condition["filter"]
                )
                continue
            metric = re.fullmatch(
                r'metric\.type="logging\.googleapis\.com/user/\$\{google_logging_metric\.(\w+)'
                r'\.name\}"(.*)',
                condition["filter"].replace('\\"', '"'),
            )
            assert metric, f"{name}: {condition['filter']}"
            assert metric[1] in metrics, f"{name} watches an undefined metric {metric[1]}"
            watched.add(metric[1])
            labels = {
                label["key"] for label in metrics[metric[1]]["metric_descriptor"][0]["labels"]
            }
            used = set(re.findall(r"metric\.label\.(\w+)", metric[2]))
            used |= {
                field.removeprefix("metric.label.")
                for field in condition["aggregations"][0]["group_by_fields"]
            }
            assert used <= labels, f"{name} filters on labels {used - labels} its metric lacks"
    assert watched == {"run_successes", "daemon_ticks", "item_failures"}
    for name, metric in metrics.items():
        assert metric["name"] == f"observing-pipelines/{name}"
        keys = {label["key"] for label in metric["metric_descriptor"][0]["labels"]}
        assert keys == set(metric["label_extractors"]), name


def test_log_match_policies_are_rate_limited_and_close_themselves(policies):
    log_matched = [n for n, p in policies.items() if "condition_matched_log" in dict(conditions(p))]
    assert log_matched == ["dead_letter"]
    for policy in policies.values():
        (strategy,) = policy["alert_strategy"]
        assert strategy["auto_close"].endswith("s")
    (strategy,) = policies["dead_letter"]["alert_strategy"]
    assert strategy["notification_rate_limit"][0]["period"] == "300s"


def test_resolve_taxa_alerts_after_30_minutes_without_a_success(policies):
    found = conditions(policies["resolve_taxa_stalled"])
    assert sorted(kind for kind, _ in found) == ["condition_absent", "condition_threshold"]
    for kind, condition in found:
        assert condition["duration"] == "1800s"
        assert 'metric.label.job=\\"resolve_taxa\\"' in condition["filter"]
        assert "google_logging_metric.run_successes" in condition["filter"]
        if kind == "condition_threshold":
            assert (condition["comparison"], condition["threshold_value"]) == ("COMPARISON_LT", 1)


def test_no_channel_configured_means_no_notification_not_a_failed_apply(module, alert_locals):
    variables = {k: v for block in module["variable"] for k, v in block.items()}
    assert variables["alert_emails"]["default"] == []
    assert variables["alert_notification_channels"]["default"] == []
    (email,) = resources(module, "google_monitoring_notification_channel").values()
    assert email["for_each"] == "${toset(var.alert_emails)}"
    assert (email["type"], email["labels"]) == ("email", {"email_address": "${each.value}"})
    assert alert_locals["alert_channels"] == (
        "${concat([for channel in google_monitoring_notification_channel.email : channel.id], "
        "var.alert_notification_channels)}"
    )


def test_metrics_read_only_our_services_stdout(metrics, alert_locals):
    lines = heredoc(alert_locals["pipeline_lines"])
    assert 'logName="projects/${var.project_id}/logs/run.googleapis.com%2Fstdout"' in lines
    assert "${google_cloud_run_v2_worker_pool.daemon.name}" in lines
    assert "${local.run_worker_job}" in lines
    for name, metric in metrics.items():
        assert heredoc(metric["filter"]).startswith("${local.pipeline_lines}\n"), name


def test_the_filters_name_fields_and_values_the_code_writes(rendered, metrics):
    from dagster._daemon import sensor
    from dagster._scheduler import scheduler

    from observing_pipelines.jobs.common import RUN_MILESTONES
    from observing_pipelines.logging_json import (
        DEAD_LETTER,
        EVENT_FIELD,
        ITEM_FAILED,
        LABEL_KEYS,
        cloud_logging_line,
    )

    text = "\n".join(rendered.values()) + "\n".join(
        x for m in metrics.values() for x in m["label_extractors"].values()
    )
    written = set(json.loads(cloud_logging_line("INFO", "m", logger="l")))
    fields = set(re.findall(r"jsonPayload\.(\w+)", text))
    assert fields <= (written - {"severity", "time"}) | {EVENT_FIELD, "dagster_event_type"}
    assert set(re.findall(r"(?<![\w.])labels\.(\w+)", text)) <= {*LABEL_KEYS, "process"}
    assert set(re.findall(r'jsonPayload\.event="(\w+)"', text)) == {DEAD_LETTER, ITEM_FAILED}
    milestones = {event.name for event in RUN_MILESTONES}
    assert set(re.findall(r'dagster_event_type="(\w+)"', text)) <= milestones
    # The daemon's words are Dagster's; an upgrade that rewords them breaks this, not the alert.
    assert 'logger.info(f"Evaluating schedule `{schedule_name}` at' in inspect.getsource(scheduler)
    assert 'logger.info(f"Checking for new runs for sensor: {' in inspect.getsource(sensor)


def run_lines(capsys, name: str, body, retries: int = 0) -> list[dict]:
    """The JSON lines a run of job `name` (one op calling `body`) prints through the code
    location's console logger, our `observing_pipelines` loggers captured as dagster.yaml has
    them."""
    from observing_pipelines.jobs.common import cloud_logging_logger

    @dg.op(name="work", retry_policy=dg.RetryPolicy(max_retries=retries, delay=0))
    def work(context) -> None:  # Dagster reads the annotation: a string one it refuses
        body(context)

    @dg.job(name=name, logger_defs={"console": cloud_logging_logger})
    def job() -> None:
        work()

    managed = {"python_logs": {"managed_python_loggers": ["observing_pipelines"]}}
    with dg.instance_for_test(overrides=managed) as instance:
        capsys.readouterr()
        job.execute_in_process(
            run_config={"loggers": {"console": {}}}, instance=instance, raise_on_error=False
        )
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_runs_lines_feed_the_run_metrics_under_its_job(capsys, metrics, rendered):
    def fails_once(context: dg.OpExecutionContext) -> None:
        if context.retry_number == 0:
            raise RuntimeError("blip")

    def fails(context: dg.OpExecutionContext) -> None:
        raise RuntimeError("down")

    lines = run_lines(capsys, "some_new_job", fails_once, retries=1)
    lines += run_lines(capsys, "another_job", fails)
    assert counted(metrics, rendered, lines) == {
        "run_successes": [{"job": "some_new_job"}],
        "step_retries": [{"job": "some_new_job"}],
        "run_failures": [{"job": "another_job"}],
    }
    webserver = {"type": "cloud_run_revision", "labels": {"service_name": "d"}}
    assert counted(metrics, rendered, lines, webserver) == {}  # nobody else's lines
    run_worker = {"type": "cloud_run_job", "labels": {"job_name": "observing-pipelines-run-worker"}}
    assert counted(metrics, rendered, lines, run_worker).keys() == {
        "run_successes",
        "step_retries",
        "run_failures",
    }


def test_per_item_failures_feed_item_failures_under_their_job(
    capsys, conn, fake_gbif, gbif_client, wikidata_client, metrics, rendered
):
    from observing_pipelines.taxa import enrichment
    from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
    from observing_pipelines_tests import fakes
    from observing_pipelines_tests.test_enrichment import KEYS, Flaky
    from observing_pipelines_tests.test_resolve_taxa import identify
    from observing_pipelines_tests.test_thumbnails import cache_taxa
    from observing_pipelines_tests.test_vernacular_names import names

    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    for key in KEYS:
        fake_gbif.vernacular_names[key] = names((f"name {key}", "eng"))
    lines = run_lines(
        capsys, "vernacular_names", lambda _: enrichment.run(conn, Flaky(gbif_client), 100, 3)
    )
    for _ in range(4):  # every try of the client
        fake_gbif.script("Calopteryx", fakes.json_response({"error": "boom"}, 500))
    identify(conn, ("Calopteryx", "Animalia"))
    resolver = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions())
    lines += run_lines(capsys, "resolve_taxa", lambda _: resolver.run())
    failures = counted(metrics, rendered, lines)["item_failures"]
    assert failures == [{"job": "vernacular_names"}, {"job": "resolve_taxa"}]


def test_a_dead_letter_line_feeds_dead_letters_and_its_log_match_alert(
    db_url, metrics, rendered, policies
):
    from observing_pipelines.jobs.operations import dead_letter_sensor
    from observing_pipelines.logging_json import CloudLoggingFormatter
    from observing_pipelines.resources import AppDatabaseResource
    from observing_pipelines_tests.test_dead_letters import failed_run_context, flaky_upstream

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    events = logging.getLogger("observing_pipelines_events")
    events.addHandler(handler)
    try:
        with dg.instance_for_test() as instance:
            context = failed_run_context(instance, flaky_upstream)
            dead_letter_sensor(context, app_db=AppDatabaseResource(url=db_url))
            run = context.dagster_run
    finally:
        events.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert counted(metrics, rendered, lines) == {"dead_letters": [{"job": run.job_name}]}
    ((_, condition),) = conditions(policies["dead_letter"])
    extracted = {
        key: extract(x, entry(lines[0])) for key, x in condition["label_extractors"].items()
    }
    assert extracted == {"job": run.job_name, "run_id": run.run_id}


def test_the_daemons_ticks_feed_daemon_ticks_by_thread_and_instigator(
    metrics, rendered, alert_locals
):
    from dagster._utils.log import get_structlog_json_formatter

    from observing_pipelines.log_relay import relay_process_logs

    formatter = get_structlog_json_formatter()  # `dagster-daemon run --log-format json`
    said = [
        ("dagster.daemon.SchedulerDaemon", "Evaluating schedule `resolve_taxa_schedule` at 2026"),
        ("dagster.daemon.SensorDaemon", "Checking for new runs for sensor: dead_letters"),
        ("dagster.daemon.SchedulerDaemon", "Removing state for schedule x that is no longer"),
    ]
    printed = [
        formatter.format(logging.LogRecord(logger, logging.INFO, __file__, 1, text, (), None))
        for logger, text in said
    ]
    out = io.StringIO()
    relay_process_logs(printed, out, "daemon")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert counted(metrics, rendered, lines) == {
        "daemon_ticks": [
            {"daemon": "dagster.daemon.SchedulerDaemon", "instigator": "resolve_taxa_schedule"},
            {"daemon": "dagster.daemon.SensorDaemon", "instigator": "dead_letters"},
        ]
    }
    out = io.StringIO()
    relay_process_logs(printed, out, "webserver")  # the same words elsewhere are no tick
    assert counted(metrics, rendered, [json.loads(x) for x in out.getvalue().splitlines()]) == {}
    watched = {thread["logger"] for thread in alert_locals["daemon_threads"].values()}
    assert watched == {logger for logger, _ in said}


def test_the_query_reader_binds_or_tighter_than_and_as_cloud_logging_does():
    log_entry = {"a": "1", "b": "2"}
    assert matches('a="1" b="2"', log_entry) and not matches('a="1" AND b="3"', log_entry)
    assert matches('a="9" OR a="1" AND b="2"', log_entry)
    assert not matches('a="1" AND b="9" OR a="9"', log_entry)  # a AND (b OR a), not (a AND b) OR a
    assert matches('(a="1" AND b="9") OR a="1"', log_entry)
    assert matches('a=~"^1$"', log_entry) and not matches('a=~"^2"', log_entry)
