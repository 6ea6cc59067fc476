"""Invariants of infra/ (no Terraform providers can be downloaded here, so the .tf files are
parsed with python-hcl2 and checked directly)."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
