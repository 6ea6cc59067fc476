"""`observing-pipelines`: the operator's command line, a second face of the same code.

- `resolve-taxa` runs today's one-shot pass without Dagster, with today's flags and exit codes
  (0 done, 1 database connection, enumeration or refresh failed, 2 no database configured).
- `migrate` applies our migrations, then Dagster's.
- `webserver` and `daemon` start Dagster's services the way the container runs them.
- `dev` sets up and starts the whole system locally: embedded Postgres when no database is
  configured, migrations, a demo data set in an empty database, then `dagster dev`;
  `stop-db` stops that embedded server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg2

from observing_pipelines.db import app_tables
from observing_pipelines.db.connection import (
    DatabaseNotConfiguredError,
    connect,
    database_url,
    redact,
)
from observing_pipelines.logging_json import known_secrets, relay_process_logs, scrub
from observing_pipelines.settings import GraphqlSettings, Settings

log = logging.getLogger("observing_pipelines.cli")

# Commands import Dagster (via resources, migrations, the storage) only when they run: the
# `webserver` and `daemon` wrappers just relay logs and would otherwise hold ~100 MiB each of
# modules they never use, inside the Cloud Run instance's memory (benchmarks/memory.py).

EXIT_OK, EXIT_FAILED, EXIT_NO_DATABASE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observing-pipelines", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    resolve = commands.add_parser("resolve-taxa", help="one resolve_taxa pass, without Dagster")
    resolve.add_argument("--dry-run", action="store_true", help="no HTTP call, no write")
    resolve.add_argument(
        "--limit",
        type=_positive,
        help="ask upstream about at most N names (and N taxonIDs) per pass",
    )
    resolve.add_argument(
        "--rate-limit-ms",
        type=_non_negative,
        help="minimum pause between GBIF requests (default 100)",
    )
    resolve.add_argument("--kingdom", help="only identifications of this kingdom")
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
    trigger.add_argument("--timeout", type=_positive, default=3600, help="seconds --wait waits")
    trigger.set_defaults(handler=_trigger)

    stop = commands.add_parser("stop-db", help="stop the embedded PostgreSQL that `dev` started")
    stop.set_defaults(handler=_stop_db)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.handler(args, Settings.from_env())


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
        return EXIT_NO_DATABASE
    from observing_pipelines.resources import build_resources
    from observing_pipelines.taxa.resolve import ResolveOptions, TaxaResolver

    if args.rate_limit_ms is not None:
        settings = replace(settings, gbif_min_interval_ms=args.rate_limit_ms)
    resources = build_resources(settings)
    gbif, wikidata = resources["gbif"], resources["wikidata"]
    options = ResolveOptions(
        dry_run=args.dry_run,
        limit=args.limit,
        kingdom=args.kingdom,
        max_concurrency=settings.gbif_max_concurrency,
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
        return EXIT_NO_DATABASE
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
            if app_tables.count_identifications(conn) == 0:
                app_tables.insert_identifications(conn, DEMO_IDENTIFICATIONS)
                log.info("Empty database: added %d demo identifications", len(DEMO_IDENTIFICATIONS))
        log.info("Embedded PostgreSQL data: %s (URL %s)", settings.embedded_pgdata.resolve(), url)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or project / ".local" / "dagster_home")
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


def _webserver(args: argparse.Namespace, settings: Settings) -> int:
    """`dagster-webserver` on all interfaces, on Cloud Run's `PORT`, its logs as Cloud Logging
    JSON."""
    command = [
        str(Path(sys.executable).with_name("dagster-webserver")),
        "-h",
        "0.0.0.0",  # inside the container: Cloud Run and IAP sit in front
        "-p",
        str(settings.webserver_port),
        "-w",
        str(settings.workspace),
        "--log-format",
        "json",
    ]
    if settings.webserver_path_prefix:
        command += ["--path-prefix", settings.webserver_path_prefix]
    if args.read_only or settings.webserver_read_only:
        command.append("--read-only")
    return _serve(command, "webserver")


def _daemon(args: argparse.Namespace, settings: Settings) -> int:
    command = [
        str(Path(sys.executable).with_name("dagster-daemon")),
        "run",
        "-w",
        str(settings.workspace),
        "--log-format",
        "json",
    ]
    return _serve(command, "daemon")


def _serve(command: list[str], process: str) -> int:
    """Run a Dagster service as a child, relaying its output as JSON lines and passing on the
    signals Cloud Run sends (SIGTERM on scale-in or a new revision)."""
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: child.send_signal(received))
    assert child.stdout is not None
    relay_process_logs(child.stdout, sys.stdout, process)
    return child.wait()


def _trigger(args: argparse.Namespace, settings: Settings) -> int:
    """Submit a run; print its id; with --wait, exit 0 on success, 1 otherwise."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    try:
        run_config = trigger_run_config(args.job, args.config, args.set)
    except (KeyError, ValueError) as error:
        log.error("%s", error)
        return EXIT_NO_DATABASE  # a usage error, like argparse's own exit 2
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
        log.error("Could not launch %s: %s", args.job, redact_message(str(error), graphql))
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


def trigger_run_config(job: str, config_file: Path | None, assignments: list[str]) -> dict:
    """Run config from a file plus `key=value` op config for the job's one asset."""
    import yaml

    from observing_pipelines.definitions import defs

    try:
        job_def = defs.resolve_job_def(job)
    except Exception as error:
        raise KeyError(f"no job {job!r} in the code location") from error
    (asset_key,) = job_def.asset_layer.executable_asset_keys  # each job materializes one asset
    op_name = "__".join(asset_key.path)
    run_config = yaml.safe_load(config_file.read_text()) if config_file else {}
    if not isinstance(run_config, dict):
        raise ValueError(f"{config_file} holds no run config mapping")
    op_config = run_config.setdefault("ops", {}).setdefault(op_name, {}).setdefault("config", {})
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {assignment!r}")
        op_config[key.strip()] = yaml.safe_load(value)
    return run_config


def redact_message(message: str, graphql: GraphqlSettings) -> str:
    return message.replace(graphql.authorization, "***") if graphql.authorization else message


def _stop_db(args: argparse.Namespace, settings: Settings) -> int:
    from observing_pipelines.db.embedded import stop_embedded_postgres

    return EXIT_OK if stop_embedded_postgres(settings.embedded_pgdata) else EXIT_FAILED


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


if __name__ == "__main__":
    sys.exit(main())
