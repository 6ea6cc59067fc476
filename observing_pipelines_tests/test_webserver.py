"""The `webserver` command's own guards, on a real webserver over HTTP.

- Writes only as requests a browser cannot send cross-site: Dagster itself runs a mutation sent
  as `GET /graphql?query=mutation{...}` or as a form post, and behind IAP an operator's browser
  carries the session cookie to any page they visit.
- The read-only webserver stays read-only.
- `/health` answers 503 while the storage is down (Dagster's `/server_info` keeps saying 200,
  so Cloud Run's probe must not use it), and 200 again once it is back.
- After the server drops every connection, the next GraphQL request still succeeds (the pool
  pings before use; Dagster's own webserver pool answered 500 once per stale connection).

The webserver runs on a private cluster, so the database can be stopped under it.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from observing_pipelines.db.roles import JOBS_ROLE
from observing_pipelines_tests.cloud_sql import as_user, rows
from observing_pipelines_tests.private_postgres import PrivateCluster, migrated_private_cluster
from observing_pipelines_tests.services import (
    alive,
    dagster_env,
    free_port,
    kill_container,
    process_tree,
    wait_for,
)
from observing_pipelines_tests.support import PROJECT_ROOT

LAUNCH = (
    'mutation { launchRun(executionParams: {selector: {jobName: "resolve_taxa", '
    'repositoryLocationName: "observing_pipelines", repositoryName: "__repository__"}}) '
    "{ __typename ... on UnauthorizedError { message } } }"
)
VERSION = "{ version }"


class Webserver:
    """`observing-pipelines webserver` on a free port, connected as the jobs' role (as in
    production); `db_url` is the test harness's."""

    def __init__(self, tmp: Path, db_url: str, *args: str) -> None:
        home = tmp / "home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"webserver-{self.port}.log"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("observing-pipelines")), "webserver", *args],
            env=dagster_env(as_user(db_url, JOBS_ROLE), home, {"PORT": str(self.port)}),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.serving, 120, "the webserver")

    def serving(self) -> bool:
        try:
            return requests.get(f"{self.base}/server_info", timeout=2).ok
        except requests.RequestException:
            return False

    def graphql(self, query: str) -> requests.Response:
        return requests.post(f"{self.base}/graphql", json={"query": query}, timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_container(self.process)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with migrated_private_cluster("observing") as running:
        yield running


@pytest.fixture(scope="module")
def webserver(
    tmp_path_factory: pytest.TempPathFactory, cluster: PrivateCluster
) -> Iterator[Webserver]:
    running = Webserver(tmp_path_factory.mktemp("web"), cluster.url("observing"))
    yield running
    running.stop()


def run_count(cluster: PrivateCluster) -> int:
    return int(rows(cluster.url("observing"), "SELECT count(*) FROM dagster.runs")[0][0])


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("GET", {}, None),
        ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, f"query={LAUNCH}"),
        ("POST", {"Content-Type": "text/plain"}, json.dumps({"query": LAUNCH})),
        ("POST", {"Content-Type": "multipart/form-data; boundary=x"}, "--x--"),
        (
            "POST",
            {"Content-Type": "application/json", "Origin": "https://evil.example"},
            json.dumps({"query": LAUNCH}),
        ),
    ],
    ids=["get", "form", "text-plain", "multipart", "foreign-origin"],
)
def test_a_write_a_foreign_page_could_send_is_refused(webserver, cluster, method, headers, body):
    before = run_count(cluster)
    response = requests.request(
        method,
        f"{webserver.base}/graphql",
        params={"query": LAUNCH} if method == "GET" else None,
        data=body,
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 403, response.text
    assert run_count(cluster) == before


def test_json_from_the_same_site_and_the_custom_header_pass(webserver, cluster):
    assert webserver.graphql(VERSION).json() == {"data": {"version": "1.13.27"}}
    same_site = requests.post(
        f"{webserver.base}/graphql",
        json={"query": VERSION},
        headers={"Origin": webserver.base},
        timeout=30,
    )
    assert same_site.status_code == 200
    scripted = requests.post(
        f"{webserver.base}/graphql",
        data={"query": VERSION},
        headers={"X-Observing-Request": "1"},
        timeout=30,
    )
    assert scripted.status_code != 403
    assert requests.get(f"{webserver.base}/graphql", params={"query": VERSION}, timeout=30).ok
    assert requests.get(webserver.base, timeout=30).ok  # the UI itself


def websocket_handshake(base: str, origin: str) -> int:
    """The status a GraphQL WebSocket handshake gets (101: upgraded)."""
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    connection.request(
        "GET",
        "/graphql",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "graphql-ws",
            "Origin": origin,
        },
    )
    status = connection.getresponse().status
    connection.close()
    return status


def test_a_websocket_from_a_foreign_page_is_refused(webserver):
    assert websocket_handshake(webserver.base, webserver.base) == 101
    assert websocket_handshake(webserver.base, "https://evil.example") == 403
    assert websocket_handshake(webserver.base, "null") == 403  # a sandboxed frame


def test_the_read_only_webserver_launches_nothing(tmp_path, cluster):
    read_only = Webserver(tmp_path, cluster.url("observing"), "--read-only")
    try:
        before = run_count(cluster)
        answer = read_only.graphql(LAUNCH).json()
        assert answer["data"]["launchRun"]["__typename"] == "UnauthorizedError", answer
        assert run_count(cluster) == before
    finally:
        read_only.stop()


def test_health_fails_while_the_storage_is_down_and_recovers(webserver, cluster):
    assert requests.get(f"{webserver.base}/health", timeout=10).json()["status"] == "ok"
    cluster.pg_ctl("-m", "fast", "-w", "stop")
    try:
        started = time.monotonic()
        down = requests.get(f"{webserver.base}/health", timeout=10)
        answered_in = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert answered_in < 6, answered_in  # inside a probe's timeout, whatever the database does
        assert requests.get(f"{webserver.base}/server_info", timeout=10).ok  # why not probe it
    finally:
        cluster.pg_ctl("-w", "start")
    wait_for(
        lambda: requests.get(f"{webserver.base}/health", timeout=10).ok, 30, "health to recover"
    )


def test_the_first_request_after_the_connections_drop_succeeds(webserver, cluster):
    assert webserver.graphql("{ runsOrError { __typename } }").ok  # the pool holds connections
    terminated = rows(
        cluster.url("postgres"),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = 'observing' AND pid <> pg_backend_pid()",
    )
    assert terminated
    answer = webserver.graphql("{ runsOrError { __typename } }")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["runsOrError"]["__typename"] == "Runs"


def test_sigterm_stops_the_webserver_inside_cloud_runs_grace_period(tmp_path, cluster):
    """Cloud Run sends SIGTERM, then SIGKILL 10 s later: the command, its webserver and the
    code server it started must all be gone before that, and say so with exit code 0."""
    server = Webserver(tmp_path, cluster.url("observing"))
    group = process_tree(server.process.pid)
    stopped = time.monotonic()
    server.process.terminate()
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - stopped < 10
    wait_for(lambda: not any(alive(pid) for pid in group), 5, "the webserver's processes")
