"""Cloud Logging JSON lines: the formatter, the process relay, and secret scrubbing."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from observing_pipelines.logging_json import (
    CloudLoggingFormatter,
    known_secrets,
    relay_process_logs,
)
from observing_pipelines_tests.conftest import PROJECT_ROOT


def relay(*lines: str, environ=None) -> list[dict]:
    out = io.StringIO()
    relay_process_logs(lines, out, "daemon")
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_daemon_json_becomes_severity_and_message():
    (line,) = relay(
        '{"event": "Heartbeat", "level": "warning", "logger": "dagster.daemon", "timestamp": "x"}'
    )
    assert (line["severity"], line["message"], line["logger"]) == (
        "WARNING",
        "Heartbeat",
        "dagster.daemon",
    )
    assert line["logging.googleapis.com/labels"] == {"process": "daemon"} and "time" in line


def test_console_lines_keep_their_level_job_and_run():
    (line,) = relay(
        "\x1b[32m2026-11-28 01:49:07 +0000\x1b[0m - dagster - \x1b[33mWARNING\x1b[0m - "
        "resolve_taxa - b8aea561-ec39-4e65-b184-0123456789ab - step - retry 1/2"
    )
    assert line["severity"] == "WARNING"
    assert line["logging.googleapis.com/labels"] == {
        "process": "daemon",
        "job_name": "resolve_taxa",
        "run_id": "b8aea561-ec39-4e65-b184-0123456789ab",
    }


def test_other_lines_tracebacks_and_our_own_lines():
    ours = json.dumps({"severity": "INFO", "message": "already ours"})
    lines = relay("plain words", "Traceback (most recent call last):", "", ours)
    assert [(line["severity"], line["message"]) for line in lines] == [
        ("INFO", "plain words"),
        ("ERROR", "Traceback (most recent call last):"),
        ("INFO", "already ours"),
    ]


def test_secrets_never_reach_a_line(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "hunter2-db")
    monkeypatch.setenv("IUCN_API_TOKEN", "tok-123456")
    monkeypatch.setenv("DATABASE_URL", "postgresql://jobs:url-pass-99@db/observing")
    assert set(known_secrets()) >= {"hunter2-db", "tok-123456", "url-pass-99"}
    lines = relay(
        "connect failed: password hunter2-db",
        '{"event": "token tok-123456", "level": "info"}',
        json.dumps({"severity": "ERROR", "message": "url postgresql://jobs:url-pass-99@db"}),
    )
    text = json.dumps(lines)
    assert "hunter2-db" not in text and "tok-123456" not in text and "url-pass-99" not in text
    record = logging.LogRecord(
        "observing_pipelines.http",
        logging.WARNING,
        __file__,
        1,
        "token %s refused",
        ("tok-123456",),
        None,
    )
    formatted = json.loads(CloudLoggingFormatter().format(record))
    assert formatted["message"] == "token *** refused" and formatted["severity"] == "WARNING"


def test_formatter_labels_dagster_records():
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "raw", (), None)
    record.dagster_meta = {
        "orig_message": "step started",
        "run_id": "r1",
        "job_name": "thumbnails",
        "step_key": "pipelines__taxon_images",
    }
    line = json.loads(CloudLoggingFormatter().format(record))
    assert line["message"] == "step started"
    assert line["logging.googleapis.com/labels"] == {
        "run_id": "r1",
        "job_name": "thumbnails",
        "step_key": "pipelines__taxon_images",
    }


def dagster_job_execute(tmp_path, jobs_url, job: str, op_config: dict) -> list[dict]:
    """`dagster job execute` as the README offers it, against the test database as the jobs'
    role; returns its stdout, every line of which must be a JSON object."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    (asset_op,) = op_config
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"ops": {asset_op: {"config": op_config[asset_op]}}}))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DAGSTER_"))}
    command = ["job", "execute", "-m", "observing_pipelines.definitions", "-j", job]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *command, "-c", str(config)],
        env=environ
        | {
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": jobs_url,
            "GBIF_BASE_URL": "http://127.0.0.1:9",  # nothing to ask: the database is empty
            "WIKIDATA_SPARQL_URL": "http://127.0.0.1:9",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_dagster_job_execute_prints_the_runs_events_as_json(tmp_path, jobs_url):
    lines = dagster_job_execute(
        tmp_path, jobs_url, "resolve_taxa", {"ingester__identification_taxa": {"limit": 5}}
    )
    events = [line.get("dagster_event_type") for line in lines if "dagster_event_type" in line]
    assert events[0] == "RUN_START" and events[-1] == "RUN_SUCCESS"
    assert {"STEP_START", "STEP_SUCCESS", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"} <= set(
        events
    )
    assert all(line["severity"] == "INFO" for line in lines)
    assert all(
        line["logging.googleapis.com/labels"]["job_name"] == "resolve_taxa" for line in lines
    )
    assert any(line["message"].startswith("resolve_taxa pass:") for line in lines)


def test_dagster_job_execute_prints_a_failure_at_error(tmp_path, jobs_url):
    lines = dagster_job_execute(
        tmp_path, jobs_url, "thumbnails", {"pipelines__taxon_images": {"small_width": 321}}
    )
    failed = {line.get("dagster_event_type"): line["message"] for line in lines}
    assert {"STEP_FAILURE", "RUN_FAILURE"} <= set(failed)
    assert all(line["severity"] == "ERROR" for line in lines if "fail" in line["message"])
    # the cause, not only "Execution of step ... failed."
    assert "321px is not a Commons standard width" in failed["STEP_FAILURE"]
