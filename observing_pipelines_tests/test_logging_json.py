"""Cloud Logging JSON lines: the formatter, the process relay, and secret scrubbing."""

from __future__ import annotations

import io
import json
import logging

from observing_pipelines.logging_json import (
    CloudLoggingFormatter,
    known_secrets,
    relay_process_logs,
)


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
