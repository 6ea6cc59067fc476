"""The engine every enrichment job runs on: thumbnails, conservation_status, backbone_freshness,
vernacular_names, and the next one.

A job says what differs (`Enrichment`): which taxa are due, how to look one up, how to save the
answers, and its `JobSpec` (cron, recheck intervals, backoff). The engine does the rest, the
same way for every job:

- the due taxa, never looked at first, then the stalest (`TableEnrichment.due`, or the job's
  own query), at most `limit`;
- a chunk at a time: look-ups run concurrently on a bounded pool, and whatever one look-up
  raises becomes that taxon's recorded failure (`Failed`), never the chunk's or the run's;
- each chunk is saved in one transaction before the next is asked for: its answers written,
  their old failures cleared, its new failures recorded with the job's `Backoff`. A killed run
  keeps every chunk it finished;
- changed and unchanged answers counted, and the report the asset page shows (`SyncReport`).

Nothing here knows Dagster: the jobs modules call `run` from their assets, tests call it
directly.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import ClassVar, Generic, Protocol, TypeVar

from psycopg2.extensions import connection as Connection

from observing_pipelines import inputs
from observing_pipelines.clients.http import PoliteHttpClient, UpstreamError
from observing_pipelines.db import item_failures, results, taxa
from observing_pipelines.db.item_failures import FailureRecord, PriorFailure
from observing_pipelines.db.taxa import DueTaxon
from observing_pipelines.logging_json import ITEM_FAILED, event
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.report import SyncReport, Value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    """A job's settings that are not per run, declared once, next to its pass: the schedule
    (`Settings.cron` reads `<NAME>_CRON` over it), how long an answer stays fresh, how a failed
    taxon backs off, and how many taxa one saved chunk holds."""

    name: str
    cron: str
    retry: Backoff
    recheck: timedelta = timedelta(days=30)
    recheck_missing: timedelta | None = None
    """For an answer that found nothing (`found` false), when it differs from `recheck`."""
    chunk_size: int = 100


class JobOptions(inputs.Options):
    """An enrichment job's per-run options (`inputs.Options`): at least how many taxa."""

    limit: inputs.Limit = 500
    """Taxa per run (new first, then the stalest)."""


class Keyed(Protocol):
    @property
    def taxon_key(self) -> int: ...


class ApiClient(Protocol):
    @property
    def http(self) -> PoliteHttpClient: ...


ItemT = TypeVar("ItemT", bound=Keyed)
AnswerT = TypeVar("AnswerT", bound=Keyed)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Failed:
    """One taxon's look-up failed; `awaiting_confirmation` is set for a verdict held back."""

    error: str
    awaiting_confirmation: str | None = None


class AwaitingConfirmation(Exception):
    """Raised by a look-up whose verdict is too costly to act on after one answer: the taxon is
    recorded as failing with `verdict` held, and the next check (after the backoff) sees it in
    `PriorFailure.awaiting_confirmation` and may act. Counted as `<verdict>_unconfirmed`."""

    def __init__(self, message: str, verdict: str) -> None:
        super().__init__(message)
        self.verdict = verdict


class Enrichment(ABC, Generic[ItemT, AnswerT]):
    """What one enrichment job supplies to `run`."""

    spec: ClassVar[JobSpec]
    counters: ClassVar[tuple[str, ...]] = ()
    """Extra numbers of the report, each starting at 0."""

    def __init__(self, *apis: ApiClient) -> None:
        self.apis = apis

    @abstractmethod
    def due(self, conn: Connection, limit: int) -> list[ItemT]:
        """The taxa to look at now, in order, at most `limit`."""

    @abstractmethod
    def look_up(self, item: ItemT, prior: PriorFailure | None) -> AnswerT:
        """One taxon's answer; may raise anything (it becomes this taxon's failure)."""

    def look_up_chunk(
        self, chunk: Sequence[ItemT], priors: Mapping[int, PriorFailure], pool: Executor
    ) -> list[AnswerT | Failed]:
        """The chunk's answers, in order: `look_up` on the pool. A job whose API answers many
        taxa in one request overrides this."""
        return list(
            pool.map(
                lambda item: guarded(
                    lambda: self.look_up(item, priors.get(item.taxon_key)),
                    f"taxon {item.taxon_key}",
                ),
                chunk,
            )
        )

    @abstractmethod
    def save(self, conn: Connection, answers: Sequence[AnswerT], report: SyncReport) -> None:
        """Write a chunk's answers (inside the chunk's transaction) and count them."""

    def finish(self, conn: Connection, report: SyncReport) -> None:
        """After the last chunk (inside a transaction of its own); nothing by default."""

    def http_calls(self) -> int:
        return sum(api.http.calls for api in self.apis)


class ResultRow(results.ResultRow, Protocol):
    """A row of a job's result table (`db/results.py`) that says whether it found anything."""

    @property
    def found(self) -> bool: ...


RowT = TypeVar("RowT", bound=ResultRow)


class TableEnrichment(Enrichment[DueTaxon, RowT]):
    """The usual job: accepted taxa (of `ranks`, if given) due in its result table
    `pipelines.<table>`, a row each, rechecked after `spec.recheck` (or `recheck_missing`)."""

    table: ClassVar[str]
    row_type: ClassVar[type[ResultRow]]
    ranks: ClassVar[Sequence[str] | None] = None

    def due(self, conn: Connection, limit: int) -> list[DueTaxon]:
        return taxa.taxa_due(conn, self.table, self.spec.name, limit, self.ranks)

    def counts(self, row: RowT) -> Iterable[str]:
        """The `counters` this row adds one to."""
        return ()

    def describe_change(self, row: RowT) -> dict[str, Value]:
        """A changed row as a line of the run's table of changes: all its fields by default."""
        return {
            name: value
            if isinstance(value, str | int | float | bool) or value is None
            else str(value)
            for name, value in vars(row).items()
        }

    def save(self, conn: Connection, answers: Sequence[RowT], report: SyncReport) -> None:
        before: dict[int, ResultRow] = results.load_results(
            conn, self.table, self.row_type, (row.taxon_key for row in answers)
        )
        missing = self.spec.recheck_missing or self.spec.recheck
        delays: list[tuple[results.ResultRow, timedelta]] = [
            (row, self.spec.recheck if row.found else missing) for row in answers
        ]
        results.save_results(conn, self.table, delays)
        changed = [row for row in answers if before.get(row.taxon_key) != row]
        report.changed += len(changed)
        report.unchanged += len(answers) - len(changed)
        for row in changed:
            report.changes.add(**self.describe_change(row))
        for row in answers:
            for counter in self.counts(row):
                report.extra[counter] += 1


def run(
    conn: Connection, job: Enrichment[ItemT, AnswerT], limit: int, concurrency: int
) -> SyncReport:
    """One pass of `job`: at most `limit` due taxa, `concurrency` look-ups at a time."""
    name = job.spec.name
    report = SyncReport(extra=dict.fromkeys(job.counters, 0))
    calls_before = job.http_calls()
    with conn:
        due = job.due(conn, limit)
    report.seen = len(due)
    log.info("%s: %d taxa due", name, len(due))
    pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix=name)
    try:
        for start in range(0, len(due), job.spec.chunk_size):
            _run_chunk(conn, job, due[start : start + job.spec.chunk_size], pool, report)
    except BaseException:
        # A database failure while saving, or a deploy's SIGTERM: ask nothing more upstream.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    with conn:
        job.finish(conn, report)
    return report.finish(job.http_calls() - calls_before)


def _run_chunk(
    conn: Connection,
    job: Enrichment[ItemT, AnswerT],
    chunk: Sequence[ItemT],
    pool: Executor,
    report: SyncReport,
) -> None:
    name, retry = job.spec.name, job.spec.retry
    with conn:
        priors = item_failures.prior_failures(conn, name, (item.taxon_key for item in chunk))
    answers = job.look_up_chunk(chunk, priors, pool)
    now = datetime.now(UTC)
    found: list[AnswerT] = []
    failures: list[FailureRecord] = []
    for item, answer in zip(chunk, answers, strict=True):
        key = item.taxon_key
        if not isinstance(answer, Failed):
            found.append(answer)
            continue
        prior = priors.get(key)
        next_attempt = retry.next_attempt(prior.attempts if prior else 0, now)
        failures.append(
            FailureRecord(key, answer.error, next_attempt, answer.awaiting_confirmation)
        )
        if answer.awaiting_confirmation:
            report.extra[f"{answer.awaiting_confirmation}_unconfirmed"] += 1
            log.info("%s: taxon %d held for confirmation: %s", name, key, answer.error)
        else:
            report.fail(f"taxon {key}", answer.error)
            log.warning(  # counted by alerting, per job (infra/alerts.tf)
                "%s failed for taxon %d: %s", name, key, answer.error, extra=event(ITEM_FAILED)
            )
    with conn:
        job.save(conn, found, report)
        item_failures.clear_failures(conn, name, (answer.taxon_key for answer in found))
        item_failures.record_failures(conn, name, failures)


def guarded(call: Callable[[], ResultT], what: str) -> ResultT | Failed:
    """`call()`, or the failure of `what` it raised: an upstream error as it says, anything
    else (a parser bug, a surprise) logged with its traceback, so it cannot sink the rest."""
    try:
        return call()
    except AwaitingConfirmation as held:
        return Failed(str(held), held.verdict)
    except UpstreamError as error:
        return Failed(str(error))
    except Exception as error:
        log.exception("Unexpected failure for %s", what)
        return Failed(f"{type(error).__name__}: {error}")


AnswerIn = TypeVar("AnswerIn")


def judged(
    answer: AnswerIn | UpstreamError, judge: Callable[[AnswerIn], ResultT], what: str
) -> ResultT | Failed:
    """One entry of a batch answer (`GbifClient.match_many`): the error it met, or the judge's
    verdict on it, guarded, so one odd answer fails its own item only."""
    if isinstance(answer, UpstreamError):
        return Failed(str(answer))
    return guarded(partial(judge, answer), what)
