"""Log lines as Cloud Logging reads them: one JSON object per line on stdout.

`severity`, `message` and `time` are the fields Cloud Logging maps; run id, job and step go in
`logging.googleapis.com/labels`, so a run's lines can be filtered together. Dagster's own records
carry those in `dagster_meta`. Known secret values (database passwords, the IUCN token) are
replaced by `***` in every line, whatever logged them.

A line that alerting counts (a dead letter, one item's failure) also names its event in the
field `event` (`EVENT_FIELD`), so that the log-based metrics of `infra/alerts.tf` match a name
that stays put while messages change wording: log it with `extra=event(DEAD_LETTER)`.

Wired in four places: `jobs.common.cloud_logging_logger`, which `definitions.py` installs as
every job's `console` logger (Dagster's default prints coloured text), for every line of a run;
`log_relay` for the daemon's and webserver's own output; `json_logging` for our commands and
the webserver process; and `event_logger()` for the few lines written outside a run (the
dead-letter sensor).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

import psycopg2
from psycopg2.extensions import parse_dsn

LABEL_KEYS = ("run_id", "job_name", "step_key")
SECRET_VARIABLES = (
    "DB_PASSWORD",
    "IUCN_API_TOKEN",
    "JOBS_RUNTIME_PASSWORD",
    "DAGSTER_GRAPHQL_AUTHORIZATION",
)
_SEVERITIES = {"warn": "WARNING", "fatal": "CRITICAL", "exception": "ERROR"}

EVENT_FIELD = "event"
DEAD_LETTER = "dead_letter"
"""A run failed for good (`jobs/operations.py`)."""
ITEM_FAILED = "item_failed"
"""One item of a pass failed and was recorded to be tried again (`taxa/enrichment.py`)."""


def event(name: str) -> dict[str, str]:
    """The `extra=` of a logging call whose line alerting counts: its `event` field."""
    return {EVENT_FIELD: name}


def known_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Secret values this process knows, longest first (so no secret is half replaced)."""
    env = os.environ if environ is None else environ
    values = [env.get(name, "") for name in SECRET_VARIABLES]
    dsn = env.get("DATABASE_URL", "")
    if dsn:  # a URL or libpq's key=value words
        with contextlib.suppress(psycopg2.ProgrammingError):
            parsed = parse_dsn(dsn)
            values += [parsed.get("password", ""), parsed.get("sslpassword", "")]
        with contextlib.suppress(ValueError):
            values.append(urlsplit(dsn).password or "")  # as written (percent-encoded) too
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def cloud_logging_line(
    severity: str,
    message: str,
    *,
    time: datetime | None = None,
    logger: str | None = None,
    labels: dict[str, str] | None = None,
    secrets: Iterable[str] = (),
    **extra: Any,
) -> str:
    payload: dict[str, Any] = {
        "severity": _SEVERITIES.get(severity.lower(), severity.upper()),
        "message": scrub(message, secrets),
        "time": (time or datetime.now(UTC)).isoformat(),
    }
    if logger:
        payload["logger"] = logger
    if labels:
        payload["logging.googleapis.com/labels"] = labels
    payload |= extra
    return json.dumps(payload, default=str)


class CloudLoggingFormatter(logging.Formatter):
    """A `logging.Formatter` for Dagster's handlers and ours."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = known_secrets()

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        message = meta.get("orig_message") or record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        labels = {key: str(meta[key]) for key in LABEL_KEYS if meta.get(key)}
        extra = {}
        named = getattr(record, EVENT_FIELD, None)  # Dagster passes a run line's `extra` on
        if isinstance(named, str):
            extra[EVENT_FIELD] = named
        dagster_event = meta.get("dagster_event")
        if dagster_event is not None:  # RUN_SUCCESS rather than its stored value PIPELINE_SUCCESS
            event_type = getattr(dagster_event, "event_type", None)
            extra["dagster_event_type"] = str(getattr(event_type, "name", event_type))
            error = getattr(getattr(dagster_event, "event_specific_data", None), "error", None)
            if error is not None:  # "Execution of step ... failed." says nothing of why
                message = f"{message} {root_cause(error)}"
        return cloud_logging_line(
            record.levelname,
            message,
            time=datetime.fromtimestamp(record.created, UTC),
            logger=record.name,
            labels=labels or None,
            secrets=self.secrets,
            **extra,
        )


MAX_CAUSE_LENGTH = 2000


def root_cause(error: Any) -> str:
    """The innermost error of a Dagster error chain (`SerializableErrorInfo.cause`), on one
    line: `module.Type: message`. A step's own error wraps the one raised in our code."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    text = " ".join(str(getattr(error, "message", error)).split())
    return text if len(text) <= MAX_CAUSE_LENGTH else text[: MAX_CAUSE_LENGTH - 3] + "..."


def json_logging(stream: IO[str]) -> None:
    """Every logger of this process writes Cloud Logging JSON lines to `stream` (unless the
    root logger already has handlers: a test's capture, an embedding program's own). Alembic
    1.20 logs a line at INFO for each of its plugins as it is imported (Dagster's storage
    imports it): seven lines of nothing before any command's first."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def event_logger() -> logging.Logger:
    """A logger writing JSON lines straight to stdout, outside Dagster's capture (for sensors)."""
    logger = logging.getLogger("observing_pipelines_events")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
