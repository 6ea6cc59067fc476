"""Dagster's default run launcher, plus the worker health check run monitoring needs.

With `DefaultRunLauncher` a run is a subprocess of the code server the daemon started. When
that process dies with its container (a deploy's SIGKILL, an OOM kill) nothing ever reports the
run's end: it stays STARTED, keeps its tag-limit slot (every later run of the job queues behind
it) and its concurrency-pool slot. Run monitoring fails such runs only if the launcher can tell
a live worker from a dead one, and the default launcher cannot (dagster-io/dagster, launcher
`supports_check_run_worker_health`).

This one asks the code server the run was launched on (the run's `.dagster/grpc_info` tag)
whether it still executes the run (`CanCancelExecution`). An unreachable code server is a dead
worker: code servers outlive their daemon only while they execute runs, and a replaced
container takes them with it. Run monitoring then fails the run, frees its slots, and run
retries launch it again (dagster.yaml).
"""

from __future__ import annotations

import json
import time

from dagster import DefaultRunLauncher
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value

ATTEMPTS = 3
"""Tries before an unreachable code server counts as dead: run monitoring fails a run on any
answer but RUNNING, so a blip must not end a healthy run."""
PAUSE_SECONDS = 2.0
TIMEOUT_SECONDS = 10


class HealthCheckingRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose runs run monitoring can find dead."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        grpc_info = run.tags.get(GRPC_INFO_TAG)
        if grpc_info is None:  # not launched by a daemon (`dagster job execute`): not ours to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no code server to ask")
        address = json.loads(grpc_info)
        client = DagsterGrpcClient(
            port=address.get("port"),
            socket=address.get("socket"),
            host=address.get("host") or "localhost",
            use_ssl=bool(address.get("use_ssl", False)),
        )
        error: Exception | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(PAUSE_SECONDS)
            try:
                answer = deserialize_value(
                    client.can_cancel_execution(
                        CanCancelExecutionRequest(run_id=run.run_id), timeout=TIMEOUT_SECONDS
                    ),
                    CanCancelExecutionResult,
                )
            except DagsterUserCodeUnreachableError as unreachable:
                error = unreachable
                continue
            if answer.can_cancel:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND, "its code server no longer executes this run"
            )
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"its code server is unreachable after {ATTEMPTS} tries: "
            + str(error).split("\n", 1)[0][:300],
        )
