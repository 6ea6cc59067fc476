"""`observing-pipelines`: the operator's command line, a second face of the same code.

- `resolve-taxa` runs today's one-shot pass without Dagster, with today's flags and exit codes
  (0 done, 1 database connection, enumeration or refresh failed, 2 no database configured).
- `migrate` applies our migrations, then Dagster's.
- `webserver` and `daemon` start Dagster's services the way the container runs them
  (`supervisor.py`: one process group, Cloud Run's grace period, one daemon at a time).
- `trigger` launches a job through the webserver's GraphQL API.
- `status` shows each job's last run, last success, next tick and failing items, the dead
  letters and the daemons' heartbeats (`status.py`); exit 0 healthy, 1 degraded, 2 no database.

Every command logs Cloud Logging JSON lines on stderr. Exit codes: 0 done, 1 failed, 2 usage
(bad arguments, a bad setting, no database configured, input the jobs refuse).
- `dev` sets up and starts the whole system locally: embedded Postgres when no database is
  configured, migrations, a demo data set in an empty database, then `dagster dev`;
  `stop-db` stops that embedded server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2

from observing_pipelines.db import identifications
from observing_pipelines.db.connection import (
    DatabaseNotConfiguredError,
    connect,
    database_url,
    redact,
)
from observing_pipelines.logging_json import json_logging, known_secrets, scrub
from observing_pipelines.settings import GraphqlSettings, Settings, SettingsError
from observing_pipelines.supervisor import LeaderLock, supervise
from observing_pipelines.text import storable

if TYPE_CHECKING:
    from observing_pipelines.status import ScheduleState, Status

log = logging.getLogger(__name__)

# Commands import Dagster (via resources, migrations, the storage) only when they run: the
# `webserver` and `daemon` wrappers just relay logs and would otherwise hold ~100 MiB each of
# modules they never use, inside the Cloud Run instance's memory (benchmarks/memory.py).

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observing-pipelines", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    resolve = commands.add_parser("resolve-taxa", help="one resolve_taxa pass, without Dagster")
    resolve.add_argument("--dry-run", action="store_true", help="no HTTP call, no write")
    resolve.add_argument(
        "--limit",
        type=_rule(int, "limit"),
        help="ask upstream about at most N names (and N taxonIDs) per pass",
    )
    resolve.add_argument(
        "--rate-limit-ms",
        type=_non_negative,
        help="minimum pause between GBIF requests (default 100)",
    )
    resolve.add_argument(
        "--kingdom",
        type=_rule(str, "kingdom"),
        help="only identifications of this kingdom (one of GBIF's, e.g. Plantae)",
    )
    resolve.set_defaults(handler=_resolve_taxa)

    upgrade = commands.add_parser("migrate", help="apply our migrations, then Dagster's")
    upgrade.add_argument(
        "--app-mirror",
        action="store_true",
        help="also create the app's tables (development and tests only)",
    )
    upgrade.set_defaults(handler=_migrate)

    dev = commands.add_parser("dev", help="set up and start the system locally (dagster dev)")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=_dev)

    webserver = commands.add_parser(
        "webserver", help="dagster-webserver for the container (PORT, path prefix, read-only)"
    )
    webserver.add_argument(
        "--read-only",
        action="store_true",
        help="no launching, re-executing or terminating (a wide audience)",
    )
    webserver.set_defaults(handler=_webserver)

    daemon = commands.add_parser("daemon", help="dagster-daemon for the container")
    daemon.set_defaults(handler=_daemon)

    trigger = commands.add_parser(
        "trigger", help="launch a job through the webserver's GraphQL API (the run queue)"
    )
    trigger.add_argument("job", help="resolve_taxa, thumbnails, conservation_status, ...")
    trigger.add_argument("--config", type=Path, help="run config file (YAML or JSON)")
    trigger.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="op config value (YAML: --set names='[Quercus robur]')",
    )
    trigger.add_argument("--wait", action="store_true", help="follow the run to its end")
    trigger.add_argument(
        "--timeout", type=_rule(int, "limit"), default=3600, help="seconds --wait waits"
    )
    trigger.set_defaults(handler=_trigger)

    report = commands.add_parser(
        "status", help="jobs' last runs and next ticks, dead letters, daemon heartbeats"
    )
    report.add_argument("--json", action="store_true", help="the same facts as a JSON object")
    report.set_defaults(handler=_status)

    stop = commands.add_parser("stop-db", help="stop the embedded PostgreSQL that `dev` started")
    stop.set_defaults(handler=_stop_db)

    json_logging(sys.stderr)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        log.error("Bad setting: %s", error)
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return handler(args, settings)


def _database_cause(error: psycopg2.Error) -> str:
    """The first database error of a chain: after a dropped connection, the rollback on the
    way out fails with "connection already closed" and would hide the real reason."""
    cause: BaseException = error
    while isinstance(cause.__context__, psycopg2.Error):
        cause = cause.__context__
    return " ".join(str(cause).split())


def _configured_url(settings: Settings) -> str | None:
    """The database URL, or None after saying why there is none."""
    try:
        return database_url(settings.database)
    except DatabaseNotConfiguredError as error:
        log.error("%s", error)
        return None


def _resolve_taxa(args: argparse.Namespace, settings: Settings) -> int:
    url = _configured_url(settings)
    if url is None:
        return EXIT_USAGE
    from observing_pipelines.resources import build_resources
    from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver

    if args.rate_limit_ms is not None:
        gbif_api = replace(settings.apis["gbif"], min_interval_ms=args.rate_limit_ms)
        settings = replace(settings, apis={**settings.apis, "gbif": gbif_api})
    resources = build_resources(settings)
    gbif, wikidata = resources["gbif"], resources["wikidata"]
    options = ResolveOptions(
        dry_run=args.dry_run,
        limit=args.limit,
        kingdom=args.kingdom,
        max_concurrency=gbif.max_concurrency,
    )
    try:
        with connect(url) as conn:
            report = TaxaResolver(conn, gbif.get_client(), wikidata.get_client(), options).run()
    except psycopg2.Error as error:
        log.error("Database failure (%s): %s", redact(url), _database_cause(error))
        return EXIT_FAILED
    print(json.dumps(report.metadata()))
    return EXIT_OK


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = _configured_url(settings)
    if url is None:
        return EXIT_USAGE
    if not _apply_migrations(url, args.app_mirror, settings.jobs_runtime_password):
        return EXIT_FAILED
    log.info("Migrations applied to %s", redact(url))
    return EXIT_OK


def _apply_migrations(url: str, app_mirror: bool, jobs_password: str | None = None) -> bool:
    """Every migration step; on a database error, its one line (`MigrationFailed`) and False."""
    from observing_pipelines.db import migrate

    try:
        migrate.upgrade_all(url, app_mirror=app_mirror, jobs_password=jobs_password)
    except migrate.MigrationFailed as error:
        log.error("%s", scrub(str(error), known_secrets()))
        return False
    return True


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from observing_pipelines.db.embedded import start_embedded_postgres
    from observing_pipelines.demo import DEMO_IDENTIFICATIONS

    project = Path.cwd()
    embedded = not settings.database.configured
    url = (
        start_embedded_postgres(settings.embedded_pgdata)
        if embedded
        else database_url(settings.database)
    )
    if not _apply_migrations(url, app_mirror=embedded):
        return EXIT_FAILED
    if embedded:
        with connect(url) as conn, conn:
            if identifications.count_identifications(conn) == 0:
                identifications.insert_identifications(conn, DEMO_IDENTIFICATIONS)
                log.info("Empty database: added %d demo identifications", len(DEMO_IDENTIFICATIONS))
        log.info("Embedded PostgreSQL data: %s (URL %s)", settings.embedded_pgdata.resolve(), url)
    dagster_home = _dagster_home()
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_config = dagster_home / "dagster.yaml"
    if not instance_config.exists():
        instance_config.symlink_to(project / "dagster.yaml")
    env = os.environ | {"DATABASE_URL": url, "DAGSTER_HOME": str(dagster_home)}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(project / "workspace.yaml"),
        "-p",
        str(args.port),
    ]
    log.info("Starting dagster dev on port %d (DAGSTER_HOME=%s)", args.port, dagster_home)
    os.execve(command[0], command, env)


def _dagster_home() -> Path:
    """The instance's directory: `DAGSTER_HOME` (which Dagster itself reads), else the one
    `dev` sets up under `.local`."""
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".local" / "dagster_home")


def _webserver(args: argparse.Namespace, settings: Settings) -> int:
    """Dagster's webserver behind our guards (`webserver.py`) on all interfaces, on Cloud
    Run's `PORT`."""
    command = [
        sys.executable,
        "-m",
        "observing_pipelines.webserver",
        "--port",
        str(settings.webserver_port),
        "--workspace",
        str(settings.workspace),
    ]
    if settings.webserver_path_prefix:
        command += ["--path-prefix", settings.webserver_path_prefix]
    if args.read_only or settings.webserver_read_only:
        command.append("--read-only")
    return supervise(command, "webserver")


def _daemon(args: argparse.Namespace, settings: Settings) -> int:
    """`dagster-daemon run`, only while it holds the daemon lock: never two at once."""
    url = _configured_url(settings)
    if url is None:
        return EXIT_USAGE
    command = [
        str(Path(sys.executable).with_name("dagster-daemon")),
        "run",
        "-w",
        str(settings.workspace),
        "--log-format",
        "json",
    ]
    return supervise(command, "daemon", LeaderLock(url))


def _trigger(args: argparse.Namespace, settings: Settings) -> int:
    """Submit a run; print its id; with --wait, exit 0 on success, 1 otherwise. Input the job
    would refuse, a bad --set or --config, an unknown job: exit 2, nothing launched."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    from observing_pipelines.jobs.common import InvalidJobConfig

    try:
        run_config = trigger_run_config(args.job, args.config, args.set)
    except (TriggerUsageError, InvalidJobConfig) as error:
        log.error("Not launched: %s", getattr(error, "reason", error))
        return EXIT_USAGE
    graphql = settings.graphql
    client = DagsterGraphQLClient(
        graphql.host,
        port_number=graphql.port,
        use_https=graphql.https,
        path_prefix=graphql.path_prefix,
        headers={"Authorization": graphql.authorization} if graphql.authorization else None,
    )
    try:
        run_id = client.submit_job_execution(
            args.job,
            repository_location_name=LOCATION,
            run_config=run_config,
            tags={"observing/triggered_by": "cli"},
        )
    except DagsterGraphQLClientError as error:
        log.error("Could not launch %s: %s", args.job, _launch_failure(error, graphql))
        return EXIT_FAILED
    print(run_id, flush=True)
    if not args.wait:
        return EXIT_OK
    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + args.timeout
    status = client.get_run_status(run_id)
    while status not in finished and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_run_status(run_id)
    print(status.value, flush=True)
    return EXIT_OK if status == DagsterRunStatus.SUCCESS else EXIT_FAILED


LOCATION = "observing_pipelines"


class TriggerUsageError(ValueError):
    """`trigger` was asked for something it cannot send (argparse's exit 2, in our words)."""


def trigger_run_config(
    job: str, config_file: Path | None, assignments: list[str]
) -> dict[str, Any]:
    """Run config from a file plus `key=value` op config for the job's one asset, checked
    against the job's rules (`InvalidJobConfig`) before anything is sent."""
    import yaml

    from observing_pipelines.definitions import defs
    from observing_pipelines.jobs.common import check_run_config, config_classes

    try:
        job_def = defs.resolve_job_def(job)
    except Exception as error:
        raise TriggerUsageError(f"no job {job!r} in the code location") from error
    try:
        run_config = yaml.safe_load(config_file.read_text()) if config_file else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise TriggerUsageError(f"--config {config_file}: {_one_line(error)}") from error
    if not isinstance(run_config, dict) or not isinstance(run_config.get("ops", {}), dict):
        raise TriggerUsageError(f"--config {config_file} holds no run config mapping")
    classes = config_classes(defs.assets)
    # `--set` configures the job's one asset that takes config (a resolve_taxa run refreshes
    # community_ids too, which takes none).
    configurable = [
        op_name
        for key in job_def.asset_layer.executable_asset_keys
        if (op_name := "__".join(key.path)) in classes
    ]
    if not configurable:
        if assignments:
            raise TriggerUsageError(f"{job} takes no config: nothing to --set")
        check_run_config(run_config, classes)
        return run_config
    (op_name,) = configurable
    op = run_config.setdefault("ops", {}).setdefault(op_name, {})
    op_config = op.setdefault("config", {}) if isinstance(op, dict) else None
    if not isinstance(op_config, dict):
        raise TriggerUsageError(f"--config {config_file}: ops.{op_name} is no config mapping")
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise TriggerUsageError(f"--set takes KEY=VALUE, got {assignment[:80]!r}")
        try:
            op_config[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise TriggerUsageError(f"--set {key.strip()}: {_one_line(error)}") from error
    check_run_config(run_config, classes)
    return run_config


def _launch_failure(error: Exception, graphql: GraphqlSettings) -> str:
    """Why a launch failed, in one line (the GraphQL client's own message holds the whole
    query): the network's cause, the webserver's HTTP status or refusal, or Dagster's answer."""
    import requests
    from gql.transport.exceptions import (
        TransportConnectionFailed,
        TransportQueryError,
        TransportServerError,
    )

    url = f"{'https' if graphql.https else 'http'}://{graphql.host}:{graphql.port}"
    url += f"{graphql.path_prefix}/graphql"
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    server = next((e for e in chain if isinstance(e, TransportServerError)), None)
    refusal = next((e for e in chain if isinstance(e, TransportQueryError)), None)
    if any(isinstance(e, requests.RequestException | TransportConnectionFailed) for e in chain):
        text = f"cannot reach {url}: {type(chain[-1]).__name__}: {_one_line(chain[-1])}"
    elif server is not None:
        text = f"{url} answered HTTP {server.code}: {_one_line(server)}"
    elif refusal is not None:
        text = f"{url} refused it: {_one_line(refusal)}"
    else:  # Dagster's own answer: (type, message)
        text = ": ".join(str(part) for part in error.args)
    return text.replace(graphql.authorization, "***") if graphql.authorization else text


def _one_line(error: BaseException) -> str:
    return storable(str(error), 300)


STATUS_CONNECT_TIMEOUT_SECONDS = 10
STATUS_STATEMENT_TIMEOUT_MS = 10_000


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """One screen (or, with --json, one object) of facts from our ledgers and the Dagster
    instance in `DAGSTER_HOME`. Exit 0 healthy, 1 degraded (the reasons are its last lines), 2
    when there is no database to read (not configured, unreachable, a query refused) or no
    instance: a script must not take "cannot tell" for "degraded"."""
    url = _configured_url(settings)
    if url is None:
        return EXIT_USAGE
    home = _dagster_home()
    if not (home / "dagster.yaml").is_file():
        log.error("No Dagster instance: %s holds no dagster.yaml (set DAGSTER_HOME)", home)
        return EXIT_USAGE
    import sqlalchemy.exc
    from dagster import DagsterInstance
    from dagster_postgres.utils import DagsterPostgresException

    from observing_pipelines import status

    try:
        from observing_pipelines.definitions import defs
    except SettingsError as error:  # a `*_CRON` naming no job
        log.error("Bad setting: %s", error)
        return EXIT_USAGE
    try:
        with connect(
            url,
            statement_timeout_ms=STATUS_STATEMENT_TIMEOUT_MS,
            connect_timeout_seconds=STATUS_CONNECT_TIMEOUT_SECONDS,
        ) as conn:
            ledgers = status.read_ledgers(conn)
        with DagsterInstance.from_config(str(home)) as instance:
            facts = status.read_status(instance, ledgers, defs.get_repository_def(), LOCATION)
    except (psycopg2.Error, sqlalchemy.exc.SQLAlchemyError, DagsterPostgresException) as error:
        log.error("Cannot read the database (%s): %s", redact(url), _database_error(error))
        return EXIT_USAGE
    print(json.dumps(facts.as_json(), indent=2) if args.json else render_status(facts))
    return EXIT_OK if facts.healthy else EXIT_FAILED


def _database_error(error: BaseException) -> str:
    """The database's own words (`_database_cause`) from psycopg2's error, which Dagster's
    storage wraps twice (SQLAlchemy's error, then `DagsterPostgresException`)."""
    link: BaseException | None = error
    while link is not None and not isinstance(link, psycopg2.Error):
        link = link.__cause__
    return _database_cause(link) if link is not None else _one_line(error)


def render_status(facts: Status) -> str:
    """The facts for a terminal: a line saying healthy or DEGRADED, a row per job, a row per
    daemon, the dead letters, then why it is degraded. Times are relative to the
    check, which the first line gives in UTC."""
    from observing_pipelines.status import short_duration

    now = facts.checked_at

    def ago(at: datetime | None) -> str:
        return f"{short_duration(now - at)} ago" if at else "never"

    rows = [["JOB", "LAST RUN", "TOOK", "LAST SUCCESS", "NEXT TICK", "FAILING"]]
    for job in facts.jobs:
        run = job.last_run
        took = short_duration(run.duration) if run and run.duration is not None else "-"
        if run and run.duration is not None and run.ended_at is None:
            took += " so far"
        rows.append(
            [
                job.name,
                f"{run.status} {ago(run.started_at or run.created_at)}" if run else "none",
                took,
                ago(job.last_success_at) + (" LATE" if job.late else ""),
                _next_tick(job.schedule, now),
                str(job.pending_failures),
            ]
        )
    daemons = [["DAEMON", "LAST HEARTBEAT"]]
    daemons += [
        [daemon.daemon_type, ago(daemon.last_heartbeat_at) + (" STALE" if daemon.stale else "")]
        for daemon in facts.daemons
    ]
    lines = [
        f"{'healthy' if facts.healthy else 'DEGRADED'} at {now:%Y-%m-%d %H:%M:%S} UTC",
        "",
        *_aligned(rows),
        "",
        *_aligned(daemons),
        "",
        f"dead letters: {facts.dead_letters.count} unresolved",
    ]
    if facts.reasons:
        lines += ["", "degraded:", *(f"  - {reason}" for reason in facts.reasons)]
    return "\n".join(lines)


def _next_tick(schedule: ScheduleState | None, now: datetime) -> str:
    from observing_pipelines.status import short_duration

    if schedule is None:
        return "by sensor"
    if schedule.next_tick is None:
        return "stopped"
    return f"in {short_duration(schedule.next_tick - now)}"


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows as lines, each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _stop_db(args: argparse.Namespace, settings: Settings) -> int:
    from observing_pipelines.db.embedded import stop_embedded_postgres

    return EXIT_OK if stop_embedded_postgres(settings.embedded_pgdata) else EXIT_FAILED


def _rule(parse: Callable[[str], T], rule: str) -> Callable[[str], T]:
    """An argparse type applying one of the jobs' rules (`inputs.<rule>`) after parsing.
    The rules (and pydantic with them) are imported only when such a flag is given: the
    `webserver` and `daemon` wrappers stay small."""

    def argument(text: str) -> T:
        from observing_pipelines import inputs

        check: Callable[[T], T] = getattr(inputs, rule)
        try:
            return check(parse(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return argument


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


if __name__ == "__main__":
    sys.exit(main())
