"""Cloud Logging JSON lines: the formatter, the process relay, and secret scrubbing."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from observing_pipelines.log_relay import relay_process_logs
from observing_pipelines.logging_json import (
    EVENT_FIELD,
    ITEM_FAILED,
    CloudLoggingFormatter,
    event,
    known_secrets,
)
from observing_pipelines_tests.services import dagster_env
from observing_pipelines_tests.support import PROJECT_ROOT


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


def test_a_traceback_is_one_entry_at_error_with_its_chained_causes():
    ours = json.dumps({"severity": "INFO", "message": "already ours"})
    lines = relay(
        "ERROR:dagster.daemon.SensorDaemon:SensorDaemon caught an error",
        "Traceback (most recent call last):",
        '  File "/venv/sqlalchemy/engine/base.py", line 149, in __init__',
        "    self._dbapi_connection = engine.raw_connection()",
        "psycopg2.OperationalError: connection to server failed: Connection refused",
        "\tIs the server running on that host and accepting TCP/IP connections?",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/venv/dagster/_daemon/sensor.py", line 313, in execute',
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection failed",
        "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
        "plain words",
        ours,
    )
    assert [line["severity"] for line in lines] == ["ERROR", "INFO", "INFO"]
    traceback = lines[0]["message"].splitlines()
    assert traceback[0] == "ERROR:dagster.daemon.SensorDaemon:SensorDaemon caught an error"
    assert traceback[-1] == "(Background on this error at: https://sqlalche.me/e/20/e3q8)"
    assert lines[0]["logger"] == "dagster.daemon.SensorDaemon"
    assert [line["message"] for line in lines[1:]] == ["plain words", "already ours"]


def test_a_warning_keeps_its_continuation_lines_and_its_level():
    (line,) = relay(
        "WARNING:root:Retrying failed database connection: (psycopg2.OperationalError) failed",
        "\tIs the server running on that host and accepting TCP/IP connections?",
    )
    assert line["severity"] == "WARNING" and len(line["message"].splitlines()) == 2


def test_a_repeating_error_is_printed_once_a_window_with_its_count():
    now = [0.0]
    out = io.StringIO()
    errors = [f"ERROR:dagster.daemon:Could not connect to port {5000 + n}" for n in range(100)]
    relay_process_logs(iter(errors[:99]), out, "daemon", clock=lambda: now[0])
    first = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
    assert first == [errors[0], f"{errors[0]} (and 98 more like it in the 60 s before)"]
    now[0] = 61.0
    out = io.StringIO()
    relay_process_logs(iter([errors[99]]), out, "daemon", clock=lambda: now[0])
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == [errors[99]]


def test_lines_alerting_counts_are_never_held_back_as_repeats():
    """Per-item failures differ in their digits only; the relay would print one a minute."""
    lines = [
        json.dumps(
            {"severity": "WARNING", "message": f"thumbnails failed for taxon {key}: HTTP 503"}
            | event(ITEM_FAILED)
        )
        for key in range(100, 150)
    ]
    plain = [json.dumps({"severity": "INFO", "message": f"retry {n} in 1.00s"}) for n in range(9)]
    relayed = relay(*lines, *plain)
    assert [line["message"] for line in relayed[:50]] == [json.loads(x)["message"] for x in lines]
    assert all(line[EVENT_FIELD] == ITEM_FAILED for line in relayed[:50])
    assert [line["message"] for line in relayed[50:]] == [
        "retry 0 in 1.00s",
        "retry 0 in 1.00s (and 8 more like it in the 60 s before)",
    ]


def test_an_event_named_in_extra_is_a_field_of_its_own():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Dead letter: ...", (), None)
    record.__dict__.update(event("dead_letter"))
    assert json.loads(CloudLoggingFormatter().format(record))[EVENT_FIELD] == "dead_letter"
    plain = logging.LogRecord("x", logging.ERROR, __file__, 1, "no event", (), None)
    assert EVENT_FIELD not in json.loads(CloudLoggingFormatter().format(plain))


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
    command = ["job", "execute", "-m", "observing_pipelines.definitions", "-j", job]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *command, "-c", str(config)],
        env=dagster_env(
            jobs_url,
            home,
            {
                "GBIF_BASE_URL": "http://127.0.0.1:9",  # nothing to ask: the database is empty
                "WIKIDATA_SPARQL_URL": "http://127.0.0.1:9",
            },
        ),
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
