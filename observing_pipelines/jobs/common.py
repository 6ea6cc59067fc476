"""Wiring every job module shares: a job's definitions from its spec (job, schedule), retry
policy, the enrichment engine's run as an asset, run metadata, invariant checks, the JSON
console logger."""

import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import dagster as dg
from dagster._core.definitions.decorators.op_decorator import DecoratedOpFunction
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not re-exported by dagster
)
from pydantic import ModelWrapValidatorHandler, ValidationError, model_validator

from observing_pipelines.db.connection import count_rows
from observing_pipelines.logging_json import CloudLoggingFormatter
from observing_pipelines.resources import AppDatabaseResource
from observing_pipelines.settings import Settings, cron_variable
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.enrichment import Enrichment, JobSpec
from observing_pipelines.taxa.report import Sample

RUN_MILESTONES = frozenset(
    {
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_UP_FOR_RETRY,
        dg.DagsterEventType.STEP_RESTARTED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    }
)
"""Dagster's events a run prints: Dagster logs all its events at DEBUG, failures at ERROR."""


class RunLineFilter(logging.Filter):
    """A run's lines at INFO and above, and Dagster's milestone events (`RUN_MILESTONES`),
    which Dagster logs at DEBUG, lifted to INFO: what an operator reads in Cloud Logging to
    follow a run. Dagster's other bookkeeping events (resource set-up, captured logs, engine
    notes) and DEBUG lines are left to the event log in the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if getattr(event, "event_type", None) in RUN_MILESTONES:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        return False


@dg.logger(None, description="Every run line as one Cloud Logging JSON object on stdout.")
def cloud_logging_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("observing_pipelines_run", level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    handler.addFilter(RunLineFilter())
    logger.addHandler(handler)
    return logger


class InvalidJobConfig(dg.Failure):
    """A job's config broke a rule of `inputs.py`: a failure no retry can cure."""

    def __init__(self, reason: str) -> None:
        super().__init__(description=reason, allow_retries=False)
        self.reason = reason


class JobConfig(dg.Config):
    """A job's launchpad config, its fields typed with the rules of `inputs.py`.

    pydantic checks them whenever the config is built: by the webserver's guard and by
    `trigger` before a launch (`check_run_config`), and by Dagster when the step starts, for
    the doors that skip both (`dagster job execute`). A broken rule is one `InvalidJobConfig`
    line naming the field, and the step is not retried: the same input fails the same way.
    """

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_refusal(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as error:
            raise InvalidJobConfig(
                "; ".join(
                    f"{'.'.join(map(str, problem['loc'])) or 'config'}: "
                    + problem["msg"].removeprefix("Value error, ")
                    for problem in error.errors()
                )
            ) from None


def config_classes(assets: Iterable[object] | None) -> dict[str, type[JobConfig]]:
    """Each asset op's config class, by op name (the keys of run config's `ops`)."""
    found: dict[str, type[JobConfig]] = {}
    for asset in assets or ():
        if not isinstance(asset, dg.AssetsDefinition):
            continue
        compute = asset.op.compute_fn
        if isinstance(compute, DecoratedOpFunction) and compute.has_config_arg():
            config_class = compute.get_config_arg().annotation
            if isinstance(config_class, type) and issubclass(config_class, JobConfig):
                found[asset.op.name] = config_class
    return found


def check_run_config(run_config: Mapping[str, Any], classes: Mapping[str, type[JobConfig]]) -> None:
    """Raise `InvalidJobConfig` (naming the op and the field) if any op's config in this run
    config breaks a rule. Shapes Dagster's own schema check refuses are left to it."""
    ops = run_config.get("ops")
    if not isinstance(ops, Mapping):
        return
    for op_name, op in ops.items():
        config_class = classes.get(op_name)
        config = op.get("config") if isinstance(op, Mapping) else None
        if config_class is None or not isinstance(config, Mapping):
            continue
        try:
            config_class(**config)
        except InvalidJobConfig as refusal:
            raise InvalidJobConfig(f"{op_name}: {refusal.reason}") from None


def retry_policy(delay_seconds: int) -> dg.RetryPolicy:
    """Three more tries, `delay`, 2x, 4x (±jitter): rides out an API or database blip without
    stampeding; per-item failures are recorded by the passes and never fail the step."""
    return dg.RetryPolicy(
        max_retries=3,
        delay=delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


JOB_TAG = "observing/job"
MAX_RUNTIME_TAG = "dagster/max_runtime"


def asset_job(
    name: str,
    asset: dg.AssetsDefinition,
    max_runtime: timedelta,
    description: str | None = None,
    downstream: Sequence[dg.AssetKey] = (),
) -> UnresolvedAssetJobDefinition:
    """A job for one asset, tagged so `dagster.yaml` allows one queued-or-running run of it at
    a time and run monitoring fails a run still going after `max_runtime` (the last resort
    for a run that hangs: its work is saved as it goes, and run retries start it again), and
    logging through the code location's JSON `console` logger (without a `loggers` entry in
    its run config, Dagster would print coloured text instead). `downstream` assets of other
    modules run after it in the same run."""
    return dg.define_asset_job(
        name,
        selection=[*asset.keys, *downstream],
        tags={JOB_TAG: name, MAX_RUNTIME_TAG: str(int(max_runtime.total_seconds()))},
        config={"loggers": {"console": {}}},
        description=description,
    )


def job_definitions(
    settings: Settings,
    spec: JobSpec,
    asset: dg.AssetsDefinition,
    max_runtime: timedelta,
    description: str,
    checks: Sequence[dg.AssetChecksDefinition] = (),
    downstream: Sequence[dg.AssetKey] = (),
) -> dg.Definitions:
    """One job's part of the code location: its asset and checks, its job (named after the
    spec) and its schedule `<job>_schedule`, on by default (the daemon replaces Cloud
    Scheduler), at `<JOB>_CRON` or the spec's cron."""
    job = asset_job(spec.name, asset, max_runtime, description, downstream)
    schedule = dg.ScheduleDefinition(
        name=f"{spec.name}_schedule",
        job=job,
        cron_schedule=settings.cron(spec.name, spec.cron),
        execution_timezone=settings.schedule_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{description} Cron: {cron_variable(spec.name)}, default {spec.cron!r}.",
    )
    return dg.Definitions(
        assets=[asset], asset_checks=list(checks), jobs=[job], schedules=[schedule]
    )


def run_enrichment(
    app_db: AppDatabaseResource,
    job: Enrichment[Any, Any],
    limit: int,
    concurrency: int,
    **extra: Any,
) -> dg.MaterializeResult:
    """One pass of an enrichment job on the engine, as the asset page shows it."""
    with app_db.connect() as conn:
        report = enrichment.run(conn, job, limit, concurrency)
    return materialize_result(report.metadata(), report.failures, report.changes, **extra)


def materialize_result(
    metadata: dict[str, Any], failures: Sample, changes: Sample, **extra: Any
) -> dg.MaterializeResult:
    """Run metadata as the asset page shows it: the numbers, under names that stay the same
    from run to run (the UI plots each over time), and tables of a sample of what failed and
    what changed; changes with a `thumbnail` show as pictures too."""
    values: dict[str, Any] = {**metadata, **extra}
    if failures.rows:
        values["failed_items"] = sample_table(failures)
    if changes.rows:
        values["changed_items"] = sample_table(changes)
        if pictures := picture_table(changes):
            values["pictures"] = pictures
    return dg.MaterializeResult(metadata=values)


def sample_table(sample: Sample) -> dg.TableMetadataValue:
    """A sample as a table, its columns typed by their values (`text` when none says)."""
    names = list(dict.fromkeys(name for row in sample.rows for name in row))
    columns = []
    for name in names:
        kinds = {type(row.get(name)) for row in sample.rows} - {type(None)}
        columns.append(dg.TableColumn(name, sql_type(kinds.pop()) if len(kinds) == 1 else "text"))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: row.get(name) for name in names}) for row in sample.rows],
        schema=dg.TableSchema(columns=columns),
    )


def picture_table(sample: Sample) -> dg.MarkdownMetadataValue | None:
    """The changes that have a picture, as a markdown table: the thumbnail, its title (linked
    to its file page), licence and artist. Upstream text is escaped, so it stays text."""
    lines = [
        f"| ![{_md(row.get('title'))}]({_url(row['thumbnail'])}) "
        f"| [{_md(row.get('title'))}]({_url(row.get('file_page') or row['thumbnail'])}) "
        f"| {_md(row.get('licence'))} | {_md(row.get('artist'))} |"
        for row in sample.rows
        if isinstance(row.get("thumbnail"), str) and str(row["thumbnail"]).startswith("https://")
    ]
    if not lines:
        return None
    header = "| picture | title | licence | artist |\n|---|---|---|---|"
    return dg.MetadataValue.md("\n".join([header, *lines]))


def _url(value: object) -> str:
    """A link target markdown cannot end early: parentheses and blanks percent-encoded."""
    return str(value).replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _md(value: object) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|])", r"\\\1", text)


README_URL = "https://github.com/observ-ing/observing-pipelines/blob/main/README.md"
"""Where each asset's documentation link points (its README section)."""


def asset_docs(section: str, columns: dg.TableSchema) -> dict[str, Any]:
    """An asset's table columns (`dagster/column_schema`, the asset page's Columns) and the
    link to its README section."""
    anchor = re.sub(r"[^a-z0-9 _-]", "", section.lower()).replace(" ", "-")
    return {
        "dagster/column_schema": columns,
        "docs": dg.MetadataValue.url(f"{README_URL}#{anchor}"),
    }


_SQL_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int, of which bool is a subclass
    (int, "bigint"),
    (float, "float"),
    (list, "jsonb"),
    (dict, "jsonb"),
)


def sql_type(kind: object) -> str:
    """The SQL type of a column holding Python values of `kind` (`text` for anything else)."""
    return next(
        (sql for python, sql in _SQL_TYPES if isinstance(kind, type) and issubclass(kind, python)),
        "text",
    )


def row_schema(row_type: type, *more: dg.TableColumn) -> dg.TableSchema:
    """The columns of a table whose rows are `row_type` (a dataclass; `class_` is the column
    `class`), typed from its annotations, then `more`."""
    columns = []
    for name, hint in get_type_hints(row_type).items():
        parts = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
        nullable = type(None) in parts
        kind = next(part for part in parts if part is not type(None))
        base = get_origin(kind) or kind
        sql = "text" if base is Literal else sql_type(base)
        columns.append(
            dg.TableColumn(
                name.rstrip("_"), sql, constraints=dg.TableColumnConstraints(nullable=nullable)
            )
        )
    return dg.TableSchema(columns=[*columns, *more])


RESULT_TIMES = (
    dg.TableColumn("fetched_at", "timestamptz", description="when it was last asked"),
    dg.TableColumn("next_check_at", "timestamptz", description="when it is asked again"),
)
"""The columns every result table has after its row's (`db/results.py`)."""


VIOLATIONS_QUERY = "violations_query"


def invariant_check(
    asset: dg.AssetsDefinition,
    name: str,
    violations: str,
    description: str,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetChecksDefinition:
    """An asset check passing when the query `violations` returns no row (the query shows on
    the check's page as `VIOLATIONS_QUERY`)."""

    @dg.asset_check(
        asset=asset,
        name=name,
        description=description,
        metadata={VIOLATIONS_QUERY: " ".join(violations.split())},
    )
    def check(app_db: AppDatabaseResource) -> dg.AssetCheckResult:
        with app_db.connect() as conn:
            found = count_rows(conn, violations)
        return dg.AssetCheckResult(
            passed=found == 0, severity=severity, metadata={"violations": found}
        )

    return check
