"""The one politeness policy every outbound API call goes through.

GBIF, Wikidata and Commons all ask for the same manners: a descriptive User-Agent with a contact
URL, serial-ish traffic, and backing off on 429/5xx for as long as `Retry-After` says. Each
client gets one `PoliteHttpClient` (one `requests` session) and never opens its own, so changing
the rules is one edit here.

- rate: a minimum interval between requests (pyrate-limiter), shared by all threads of a client;
- concurrency: at most `max_concurrency` requests in flight;
- retries (tenacity): connection errors, timeouts, 429, 5xx and unreadable bodies, with
  exponential backoff and jitter, or exactly `Retry-After` when the server says so. A 429 pauses
  the whole client, not only the thread that got it. A `Retry-After` longer than we are willing
  to wait ends the attempt instead of calling back early.
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from pyrate_limiter import InMemoryBucket, Limiter, Rate
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from observing_pipelines.text import storable

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ERROR_SNIPPET = 200
_HTML_TITLE = re.compile(r"<title>(.{0,120}?)</title>", re.IGNORECASE | re.DOTALL)


class UpstreamError(Exception):
    """A call failed for good (after retries) or answered something we cannot use;
    `content_type` is the answer's, when there was one."""

    def __init__(
        self,
        service: str,
        message: str,
        status: int | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.content_type = content_type

    @property
    def html(self) -> bool:
        """The answer was an HTML page (a proxy's or a server's own), not the API's JSON."""
        return "html" in (self.content_type or "").lower()


class MalformedResponseError(UpstreamError):
    """The body was JSON, but not the shape the API documents."""


class UpstreamNotFound(UpstreamError):
    """HTTP 404: the thing asked for does not exist upstream."""


class RetryableError(UpstreamError):
    """A failure worth another attempt; `retry_after` is the server's own wish, in seconds."""

    def __init__(
        self,
        service: str,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(service, message, status, content_type)
        self.retry_after = retry_after


@dataclass(frozen=True)
class HttpPolicy:
    user_agent: str
    timeout_seconds: float = 15.0
    max_attempts: int = 5
    max_retry_after_seconds: float = 120.0
    min_interval_ms: int = 100
    max_concurrency: int = 4
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class PoliteHttpClient:
    """JSON over HTTP for one service, under the shared politeness policy."""

    def __init__(self, service: str, base_url: str, policy: HttpPolicy) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.session = requests.Session()
        self.session.headers["User-Agent"] = policy.user_agent
        adapter = HTTPAdapter(pool_maxsize=max(policy.max_concurrency, 1), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._limiter = (
            # A 5 ms margin after a wait, not the default 50: a waiting worker must be awake
            # when its slot opens, or each slot is missed by up to 50 ms and the client falls
            # to 66-77% of its rate (benchmarks/throughput.py). With none, pyrate-limiter
            # 4.5 dates a late waker's slot from when it meant to wake, and two requests can
            # go out 75-89 ms apart.
            Limiter(InMemoryBucket([Rate(1, policy.min_interval_ms)]), buffer_ms=5)
            if policy.min_interval_ms > 0
            else None
        )
        self._in_flight = threading.BoundedSemaphore(max(policy.max_concurrency, 1))
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._calls = 0
        self._backoff = wait_exponential_jitter(
            multiplier=policy.backoff_initial_seconds, max=policy.backoff_max_seconds
        )

    @property
    def calls(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._calls

    def close(self) -> None:
        self.session.close()

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        busy_signal: Callable[[Any], str | None] | None = None,
    ) -> Any:
        """Send with retries; return the decoded JSON body. `json` is sent as a JSON body.

        `busy_signal` reads a 200 body for a service's own "come back later" (MediaWiki answers
        `maxlag` that way); a message from it is retried like a 503. Raises `UpstreamNotFound`
        on 404 and `UpstreamError` on any other failure that retries did not cure.
        """
        url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=self._stop,
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._send_once, method, url, params, data, json, headers, busy_signal)
        except RetryableError as error:
            raise UpstreamError(
                self.service, str(error).split(": ", 1)[-1], error.status, error.content_type
            ) from None

    def _send_once(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        data: dict[str, Any] | None,
        json: Any,
        headers: dict[str, str] | None,
        busy_signal: Callable[[Any], str | None] | None,
    ) -> Any:
        with self._in_flight:
            self._wait_for_pause()
            if self._limiter is not None:
                self._limiter.try_acquire(self.service)
            with self._lock:
                self._calls += 1
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json,
                    headers=headers,
                    timeout=self.policy.timeout_seconds,
                )
            except requests.Timeout:
                raise RetryableError(
                    self.service, f"timed out after {self.policy.timeout_seconds:g}s"
                ) from None
            except requests.RequestException as error:
                raise RetryableError(
                    self.service, f"connection failed: {type(error).__name__}"
                ) from None
        body = self._decode(response)
        if busy_signal is not None and (busy := busy_signal(body)):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RetryableError(self.service, busy, response.status_code, retry_after)
        return body

    def _decode(self, response: requests.Response) -> Any:
        status = response.status_code
        content_type = storable(response.headers.get("Content-Type", ""), 100) or None
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429 and retry_after:
                self._pause(retry_after)
            raise RetryableError(
                self.service,
                f"HTTP {status}{_snippet(response)}",
                status,
                retry_after,
                content_type,
            )
        if status == 404:
            raise UpstreamNotFound(
                self.service, f"HTTP 404{_snippet(response)}", status, content_type
            )
        if status >= 400:
            raise UpstreamError(
                self.service, f"HTTP {status}{_snippet(response)}", status, content_type
            )
        try:
            return response.json()
        except ValueError:
            raise RetryableError(
                self.service,
                f"unreadable body ({content_type or 'no content type'}){_snippet(response)}",
                status,
                content_type=content_type,
            ) from None

    def _pause(self, seconds: float) -> None:
        seconds = min(seconds, self.policy.max_retry_after_seconds)
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _wait_for_pause(self) -> None:
        delay = self._paused_until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _stop(self, state: RetryCallState) -> bool:
        if stop_after_attempt(self.policy.max_attempts)(state):
            return True
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return retry_after is not None and retry_after > self.policy.max_retry_after_seconds

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s request failed (%s); retry %d/%d in %.2fs",
            self.service,
            str(error).split(": ", 1)[-1],
            state.attempt_number,
            self.policy.max_attempts - 1,
            state.upcoming_sleep,
        )


def _snippet(response: requests.Response) -> str:
    """A short, single-line, storable description of an error body (whatever its size or its
    bytes): HTML pages by their title only."""
    head = response.text[: MAX_ERROR_SNIPPET * 8]
    content_type = storable(response.headers.get("Content-Type", ""), 100)
    if "html" in content_type.lower():
        title = _HTML_TITLE.search(head)
        named = f" {storable(title.group(1), 120)!r}" if title else ""
        return f": HTML page ({content_type}){named}"
    text = storable(head, MAX_ERROR_SNIPPET)
    return f": {text}" if text else ""
