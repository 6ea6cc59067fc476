"""The politeness policy, against a real local HTTP server."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from observing_pipelines.clients.http import (
    PoliteHttpClient,
    UpstreamError,
    UpstreamNotFound,
    parse_retry_after,
)
from observing_pipelines_tests.fakes import html_error, json_response
from observing_pipelines_tests.support import TEST_POLICY


@pytest.fixture
def client(gbif_server):
    http = PoliteHttpClient("gbif", gbif_server.url_for(""), TEST_POLICY)
    yield http
    http.close()


def test_sends_a_descriptive_user_agent(gbif_server, client):
    gbif_server.expect_request(
        "/ping", headers={"User-Agent": TEST_POLICY.user_agent}
    ).respond_with_json({"ok": 1})
    assert client.request_json("GET", "/ping") == {"ok": 1}


def test_429_waits_for_retry_after_then_succeeds(gbif_server, client):
    seen: list[float] = []

    def answer(request):
        seen.append(time.monotonic())
        if len(seen) == 1:
            return json_response(["too many"], 429, {"Retry-After": "1"})
        return json_response({"ok": True})

    gbif_server.expect_request("/limited").respond_with_handler(answer)
    assert client.request_json("GET", "/limited") == {"ok": True}
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.95
    assert client.calls == 2


def test_a_retry_after_longer_than_we_wait_gives_up_without_calling_early(gbif_server, client):
    gbif_server.expect_request("/banned").respond_with_response(
        json_response([], 429, {"Retry-After": "3600"})
    )
    with pytest.raises(UpstreamError, match="HTTP 429"):
        client.request_json("GET", "/banned")
    assert client.calls == 1


def test_5xx_is_retried_then_reported(gbif_server, client):
    gbif_server.expect_request("/broken").respond_with_response(html_error(502))
    with pytest.raises(UpstreamError, match="HTML page") as error:
        client.request_json("GET", "/broken")
    assert error.value.status == 502 and client.calls == TEST_POLICY.max_attempts


def test_client_errors_are_not_retried(gbif_server, client):
    gbif_server.expect_request("/bad").respond_with_data("334 is not valid value", status=400)
    gbif_server.expect_request("/gone").respond_with_data("Entity not found", status=404)
    with pytest.raises(UpstreamError, match="HTTP 400: 334 is not valid value"):
        client.request_json("GET", "/bad")
    with pytest.raises(UpstreamNotFound):
        client.request_json("GET", "/gone")
    assert client.calls == 2


def test_connection_refused_is_an_upstream_error():
    http = PoliteHttpClient("gbif", "http://127.0.0.1:9", replace(TEST_POLICY, max_attempts=2))
    with pytest.raises(UpstreamError, match="connection failed"):
        http.request_json("GET", "/x")


def test_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
