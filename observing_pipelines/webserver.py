"""The webserver the container runs: Dagster's UI and GraphQL API, behind ASGI layers of ours.

`observing-pipelines webserver` starts `python -m observing_pipelines.webserver` as its child
(its output relayed as JSON, `supervisor.py`). It serves what `dagster-webserver` serves, built
the way its CLI builds it, and adds:

- `HealthRoute`, `<prefix>/health`: 200 while the run storage answers, 503 while it does not.
  Dagster's `/server_info` answers from memory, so a probe on it keeps a webserver that can
  serve nothing.
- `CrossSiteGuard`: Dagster's GraphQL endpoint runs a mutation sent as a GET query string or as
  a form post, and checks no origin (dagster-io/dagster has no CSRF protection). Behind IAP an
  operator's browser carries the session cookie everywhere, so any page they open could launch
  runs. The guard lets writes through only as requests a browser cannot send cross-site.
- `LaunchGuard`: a launch (the launchpad, `trigger`, any GraphQL client) whose op config breaks
  a rule of `inputs.py` is refused with that rule's one-line reason before Dagster creates the
  run. Dagster's own config check knows types, not ranges: it would start a run that fails
  (`limit: 0`, a kingdom with a NUL byte) or one that does the wrong thing (`limit: -5`).
- `RequestGate`: at most `GRAPHQL_AT_ONCE` GraphQL requests at a time reach Dagster, which
  keeps them within the instance's bounded, pre-pinged connection pool (`db/dagster_storage.py`,
  used here instead of the webserver's three engines of up to 21 connections each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import graphql
import yaml

from observing_pipelines.jobs.common import InvalidJobConfig, check_run_config, config_classes
from observing_pipelines.logging_json import json_logging

log = logging.getLogger("observing_pipelines.webserver")  # run as __main__ (python -m)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Health = Callable[[], Awaitable[tuple[int, dict[str, str]]]]

CSRF_HEADER = "x-observing-request"
"""A header any script may set and no browser sends cross-site without a CORS preflight (which
the webserver never grants): the way in for clients that do not post JSON."""
JSON_TYPES = frozenset({"application/json", "application/graphql"})
MAX_GRAPHQL_BODY = 1 << 20
LAUNCH_ARGUMENTS = {
    "launchRun": "executionParams",
    "launchPipelineExecution": "executionParams",
    "launchRunReexecution": "executionParams",
    "launchPipelineReexecution": "executionParams",
    "launchMultipleRuns": "executionParamsList",
    "launchPartitionBackfill": "backfillParams",
}
"""Dagster's GraphQL mutations that start runs, and the argument carrying their run config."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEALTH_TIMEOUT_SECONDS = 4.0
GRAPHQL_AT_ONCE = 4
"""GraphQL requests Dagster serves at once: half the storage pool's 8 connections (dagster.yaml
`connection_pool`), as one request can hold two at a time (`RequestGate`)."""
STATEMENT_TIMEOUT_MS = 15_000


class HealthRoute:
    """`<prefix>/health` answered by `health`; everything else passed to `app`."""

    def __init__(self, app: App, health: Health, path_prefix: str = "") -> None:
        self.app = app
        self.health = health
        self.health_path = f"{path_prefix}/health"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.health_path:
            status, body = await self.health()
            await _respond(send, status, body)
            return
        await self.app(scope, receive, send)


class CrossSiteGuard:
    """ASGI middleware refusing what a foreign page could make an operator's browser send:

    - a GraphQL mutation in a GET query string (`/graphql?query=mutation{...}`);
    - a write (POST, PUT, PATCH, DELETE) whose body is not JSON, unless it carries
      `X-Observing-Request` (form posts and `text/plain` need no CORS preflight);
    - a write or a WebSocket whose `Origin` names another site than the request's `Host`, or
      none (`Origin: null`: a sandboxed frame, a local file).

    Read-only requests, Dagster's own UI (JSON posts, same-origin WebSockets) and API clients
    (`DagsterGraphQLClient` posts JSON and sends no `Origin`) pass unchanged.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = _refusal(scope)
            if refusal is not None:
                log.warning("Refused %s %s: %s", scope.get("method", "WS"), scope["path"], refusal)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await _respond(send, 403, {"error": refusal})
                return
        await self.app(scope, receive, send)


def _refusal(scope: Scope) -> str | None:
    """Why this request may not pass, or None."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    method = scope.get("method", "GET")
    writes = scope["type"] == "websocket" or method not in SAFE_METHODS
    origin = headers.get("origin")
    if writes and origin is not None and urlsplit(origin).netloc != headers.get("host"):
        return f"cross-site request from {origin}"
    if scope["type"] == "websocket":
        return None
    if method in SAFE_METHODS:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "query" in query and "mutation" in _operations(
            query["query"], query.get("operationName")
        ):
            return "GraphQL mutations are accepted only as POST with a JSON body"
        return None
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_TYPES and CSRF_HEADER not in headers:
        return (
            f"writes need Content-Type: application/json (or an {CSRF_HEADER} header), "
            f"got {content_type or 'none'!r}"
        )
    return None


def _operations(query: str, operation_name: str | None) -> set[str]:
    """The operation types ("query", "mutation", "subscription") a GraphQL document would run."""
    return {operation.operation.value for operation in _operations_run(query, operation_name)}


def _operations_run(
    query: str, operation_name: str | None
) -> list[graphql.OperationDefinitionNode]:
    """The operations of a GraphQL document that could run: the one `operation_name` names, or
    every one when it names none of them (so nothing escapes a check); none for a document that
    does not parse (Dagster answers it with an error)."""
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return []
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    named = [o for o in operations if o.name is not None and o.name.value == operation_name]
    return named or operations


class RequestGate:
    """ASGI middleware letting at most `limit` GraphQL requests reach Dagster at once; the
    others wait their turn.

    Dagster serves each GraphQL request in a thread of its own (up to 40), and one request can
    hold two of the storage pool's connections at once (a storage call inside another). The
    pool is bounded, since the app's Cloud SQL instance is shared; without a gate, a burst of
    launches leaves every thread holding one connection and waiting for a second, and nothing
    moves until the pool's 30 s timeout fails them all. WebSockets are left alone: they live
    long and read through Dagster's own event watcher.
    """

    def __init__(self, app: App, limit: int, path_prefix: str = "") -> None:
        self.app = app
        self.limit = limit
        self.graphql_path = f"{path_prefix}/graphql"
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.graphql_path:
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # made in the server's event loop
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)


class LaunchGuard:
    """ASGI middleware checking the run config of every GraphQL launch against the jobs'
    rules (`jobs.common.check_run_config`) before Dagster sees it."""

    def __init__(
        self, app: App, check: Callable[[Mapping[str, Any]], None], path_prefix: str = ""
    ) -> None:
        self.app = app
        self.check = check
        self.graphql_path = f"{path_prefix}/graphql"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != self.graphql_path
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_GRAPHQL_BODY:
                await _respond(
                    send, 413, {"error": f"GraphQL bodies are limited to {MAX_GRAPHQL_BODY} bytes"}
                )
                return
        refusal = self._refusal(body)
        if refusal is not None:
            log.warning("Refused a launch: %s", refusal)
            await _respond(send, 200, {"data": None, "errors": [{"message": refusal}]})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _refusal(self, body: bytes) -> str | None:
        try:
            request = json.loads(body)
        except ValueError:
            return None  # Dagster answers malformed JSON itself
        for operation in request if isinstance(request, list) else [request]:
            if not isinstance(operation, dict) or not isinstance(operation.get("query"), str):
                continue
            variables = operation.get("variables")
            for run_config in _launched_run_configs(
                operation["query"],
                operation.get("operationName"),
                variables if isinstance(variables, dict) else {},
            ):
                try:
                    self.check(run_config)
                except InvalidJobConfig as refusal:
                    return f"Not launched: {refusal.reason}"
        return None


def _launched_run_configs(
    query: str, operation_name: str | None, variables: dict[str, Any]
) -> list[Mapping[str, Any]]:
    """The run configs the launch mutations (`LAUNCH_ARGUMENTS`) of this GraphQL document
    would start runs with."""
    return [
        run_config
        for operation in _operations_run(query, operation_name)
        if operation.operation == graphql.OperationType.MUTATION
        for field in operation.selection_set.selections
        if isinstance(field, graphql.FieldNode) and field.name.value in LAUNCH_ARGUMENTS
        for argument in field.arguments
        if argument.name.value == LAUNCH_ARGUMENTS[field.name.value]
        for run_config in _run_configs(graphql.value_from_ast_untyped(argument.value, variables))
    ]


def _run_configs(params: Any) -> list[Mapping[str, Any]]:
    """`runConfigData` of one launch's parameters (or of each, for a list), as Dagster reads
    it: a mapping, or YAML text (what Dagster cannot parse, its own check answers)."""
    configs = []
    for one in params if isinstance(params, list) else [params]:
        run_config = one.get("runConfigData") if isinstance(one, dict) else None
        if isinstance(run_config, str):
            try:
                run_config = yaml.safe_load(run_config)
            except yaml.YAMLError:
                continue
        if isinstance(run_config, Mapping):
            configs.append(run_config)
    return configs


async def _respond(send: Send, status: int, body: Mapping[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def storage_health(check: Callable[[], object]) -> Health:
    """A health answer from `check` (a storage read) run off the event loop, bounded in time:
    a probe must answer before Cloud Run gives up on it, whatever the database does."""

    async def health() -> tuple[int, dict[str, str]]:
        try:
            await asyncio.wait_for(asyncio.to_thread(check), HEALTH_TIMEOUT_SECONDS)
        except TimeoutError:
            return 503, {"status": "unavailable", "storage": "no answer in time"}
        except Exception as error:  # any failure of the storage read is an unhealthy storage
            return 503, {"status": "unavailable", "storage": type(error).__name__}
        return 200, {"status": "ok", "storage": "ok"}

    return health


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m observing_pipelines.webserver")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--path-prefix", default="")
    parser.add_argument("--read-only", action="store_true")
    args = parser.parse_args(argv)
    json_logging(sys.stdout)  # relayed by the `webserver` command

    import uvicorn
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.app import create_app_from_workspace_process_context
    from dagster_webserver.version import __version__

    with DagsterInstance.get() as instance:
        # Our storage keeps its one pool here too; the arguments are Dagster's defaults.
        instance.optimize_for_webserver(STATEMENT_TIMEOUT_MS, 3600, 0)
        with WorkspaceProcessContext(
            instance,
            version=__version__,
            read_only=args.read_only,
            workspace_load_target=WorkspaceFileTarget(paths=[str(args.workspace)]),
        ) as context:
            from observing_pipelines.definitions import defs

            classes = config_classes(defs.assets)
            dagster_app = create_app_from_workspace_process_context(context, args.path_prefix)
            app = HealthRoute(
                CrossSiteGuard(
                    LaunchGuard(
                        RequestGate(dagster_app, GRAPHQL_AT_ONCE, args.path_prefix),
                        lambda run_config: check_run_config(run_config, classes),
                        args.path_prefix,
                    )
                ),
                storage_health(lambda: instance.get_run_records(limit=1)),
                args.path_prefix,
            )
            log.info(
                "Serving Dagster's UI on %s:%d%s%s",
                args.host,
                args.port,
                args.path_prefix,
                " (read-only)" if args.read_only else "",
            )
            uvicorn.run(
                app,
                host=args.host,
                port=args.port,
                log_config=None,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )


if __name__ == "__main__":
    main()
