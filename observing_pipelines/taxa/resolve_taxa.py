"""The resolve_taxa pass, free of Dagster: the asset and the `resolve-taxa` command both call it.

One pass, as today: (0) unstamp identifications edited since we stamped them; (1) the name pass
over distinct (name, kingdom) pairs still unstamped; (2) the taxonID pass over the URIs still
unstamped after it; (3) one `REFRESH MATERIALIZED VIEW CONCURRENTLY` of `community_ids` (the
`resolve-taxa` command; in Dagster the view is its own asset, refreshed on a budget). Steps 0
and 3 read the whole table, so they run only when someone wrote identifications or
occurrences since the last pass (or this pass stamped some), and at least hourly: a pass with
nothing to do reads only the unstamped rows (`TaxaResolver._look_for_changes`).

Each distinct question is asked once: pairs that differ only in spacing or case share a lookup.
A lookup is answered by, in order, our memo (`pipelines.resolution_attempts`), the taxa cache,
then GBIF (and Wikidata for cross-walks) through a bounded thread pool, in GBIF's batches of
`GbifClient.match_batch_size` questions (or one a request). Failures are recorded per item with
a next-try time that backs off, and never stop the pass. Writes happen in batches, each one
transaction (taxa upsert + attempts + stamps), so a killed run loses at most the answers of one
unsaved batch (and of the GBIF batches in flight) and never leaves a stamp without its taxon
row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any

from psycopg2.extensions import connection as Connection

from observing_pipelines import inputs
from observing_pipelines.clients.gbif import GbifClient, GbifMatch, MatchQuery
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.clients.wikidata import WikidataClient
from observing_pipelines.db import change_marks, identifications, resolution_attempts, taxa
from observing_pipelines.db.identifications import NamePair
from observing_pipelines.db.resolution_attempts import AttemptRecord, PriorAttempt, SubjectKind
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.logging_json import ITEM_FAILED, event
from observing_pipelines.settings import API_DEFAULTS
from observing_pipelines.taxa import community_ids
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.community_ids import Refreshed
from observing_pipelines.taxa.enrichment import Failed, JobSpec, guarded, judged
from observing_pipelines.taxa.matching import Resolution, judge_match, pick_cached
from observing_pipelines.taxa.names import (
    TaxonRef,
    cache_names,
    name_problem,
    normalise_name,
    parse_taxon_uri,
    subject_digest,
    tidy_name,
)
from observing_pipelines.taxa.report import Sample

log = logging.getLogger(__name__)

PROGRESS_EVERY = 50
IN_FLIGHT_PER_WORKER = 4
CHANGE_MARK = "resolve_taxa"
FULL_SWEEP_EVERY = timedelta(hours=1)


SPEC = JobSpec(
    name="resolve_taxa",
    cron="*/5 * * * *",
    retry=Backoff(first=timedelta(minutes=15), cap=timedelta(days=1)),
)
NOT_FOUND_BACKOFF = Backoff(first=timedelta(days=1), cap=timedelta(days=30))
"""A name GBIF could not match is asked again later, and less often, than one that failed."""


class ResolveTaxaOptions(inputs.Options):
    """What a person may ask of one pass (the launchpad, `trigger`, `resolve-taxa`)."""

    dry_run: bool = False
    """Enumerate and consult the caches only: no HTTP call, no write, no refresh."""
    limit: inputs.Limit | None = None
    """Ask GBIF about at most this many names (and as many taxonIDs) per pass."""
    kingdom: inputs.Kingdom | None = None
    """Only identifications of this kingdom (one of GBIF's, e.g. Plantae)."""
    names: inputs.Names = []
    """Re-resolve these names: forget their cached answers and stamps, ask GBIF afresh."""
    taxon_keys: inputs.TaxonKeys = []
    """Re-resolve the identifications stamped with these GBIF keys, likewise."""


class ResolveOptions(ResolveTaxaOptions):
    """A pass's options, with what the code decides rather than a person."""

    batch_size: int = 200
    max_concurrency: int = API_DEFAULTS["gbif"].max_concurrency
    force_names: frozenset[str] = frozenset()
    """Normalised names asked of GBIF afresh, past memo, cache and backoff ("re-resolve")."""
    refresh_view: bool = True
    """Refresh `community_ids` at the end, as the legacy binary did (the `resolve-taxa`
    command). In Dagster its own asset refreshes it, on a budget (`taxa.community_ids`)."""


@dataclass
class Tally:
    seen: int = 0
    resolved: int = 0
    not_found: int = 0
    errors: int = 0
    skipped_backoff: int = 0
    cache_hits: int = 0
    would_fetch: int = 0
    rows_stamped: int = 0


@dataclass
class PassReport:
    names: Tally = field(default_factory=Tally)
    taxon_ids: Tally = field(default_factory=Tally)
    rows_reset: int = 0
    identifications_changed: bool = True
    taxa_upserted: int = 0
    http_calls: int = 0
    refreshed: bool = False
    seconds: float = 0.0
    failures: Sample = field(default_factory=Sample)
    """kind, subject, kingdom, error"""
    changes: Sample = field(default_factory=Sample)
    """What this pass resolved (and stamped): kind, subject, kingdom, accepted_taxon_key."""

    def metadata(self) -> dict[str, Any]:
        """Flat numbers for Dagster run metadata and the CLI's summary line."""
        flat: dict[str, Any] = {}
        for prefix, tally in (("names", self.names), ("taxon_ids", self.taxon_ids)):
            flat |= {f"{prefix}_{k}": v for k, v in asdict(tally).items()}
        flat |= {
            "rows_stamped": self.names.rows_stamped + self.taxon_ids.rows_stamped,
            "rows_reset": self.rows_reset,
            "identifications_changed": self.identifications_changed,
            "taxa_upserted": self.taxa_upserted,
            "http_calls": self.http_calls,
            "cache_hits": self.names.cache_hits + self.taxon_ids.cache_hits,
            "errors": self.names.errors + self.taxon_ids.errors,
            "community_ids_refreshed": self.refreshed,
            "seconds": round(self.seconds, 3),
        }
        return flat


@dataclass
class Lookup:
    """One distinct question, and the identification values its answer stamps."""

    kind: SubjectKind
    digest: str
    subject: str
    kingdom: str | None
    stamp_targets: list[Any]
    ref: TaxonRef | None = None
    answer: Resolution | None = None

    @property
    def normal(self) -> str:
        return normalise_name(self.subject)

    def describe(self) -> str:
        where = f" ({self.kingdom})" if self.kingdom else ""
        return f"{self.kind} {self.subject[:80]!r}{where}"


class _Pass:
    """One pass (names or taxonIDs): what was remembered about its lookups, its tally, and the
    batch writer that saves answers a batch at a time, one transaction per batch."""

    def __init__(
        self, resolver: TaxaResolver, kind: SubjectKind, tally: Tally, lookups: list[Lookup]
    ) -> None:
        self.resolver, self.kind, self.tally = resolver, kind, tally
        self.conn, self.options = resolver.conn, resolver.options
        self.now = datetime.now(UTC)
        with self.conn:
            self.priors = resolution_attempts.load_attempts(
                self.conn, kind, (lookup.digest for lookup in lookups)
            )
        self._rows: list[TaxonRow] = []
        self._records: list[AttemptRecord] = []
        self._stamps: list[tuple[Any, int]] = []

    def triage(
        self,
        lookups: list[Lookup],
        problem: Callable[[Lookup], str | None],
        *,
        remembered: bool = True,
    ) -> list[Lookup]:
        """Settle what needs no asking (remembered answers and backing-off failures, unless
        `remembered` is off, and invalid subjects); return the rest."""
        pending = []
        for lookup in lookups:
            prior = self.priors.get(lookup.digest) if remembered else None
            if prior and prior.outcome == "resolved" and prior.accepted_taxon_key is not None:
                self.tally.cache_hits += 1
                self.settle(
                    lookup, Resolution("resolved", prior.accepted_taxon_key), remember=False
                )
            elif prior and backing_off(prior, self.now):
                self.tally.skipped_backoff += 1
            elif reason := problem(lookup):
                self.settle(lookup, Resolution.failed("invalid", reason))
            else:
                pending.append(lookup)
        return pending

    def settle_cached(self, lookups: list[Lookup]) -> list[Lookup]:
        """Settle the lookups the taxa cache answered; return those still open."""
        for lookup in lookups:
            if lookup.answer is not None:
                self.tally.cache_hits += 1
                # A subject that failed before is settled now: its ledger row must say so.
                self.settle(lookup, lookup.answer, remember=lookup.digest in self.priors)
        return [lookup for lookup in lookups if lookup.answer is None]

    def fetch(self, lookups: list[Lookup], ask: Callable[[list[Lookup]], list[Resolution]]) -> None:
        """Ask upstream about the lookups, a batch (`GbifClient.match_batch_size`, or one) at a
        time, a few batches at once; every failure stays with its item.

        `limit` caps what one pass asks upstream; the rest waits for the next pass. It applies
        after triage, so subjects still backing off never crowd out the ones that can be asked.
        """
        if self.options.limit is not None and len(lookups) > self.options.limit:
            log.info(
                "%s pass: asking %d of %d now (limit); the rest on the next pass",
                self.kind,
                self.options.limit,
                len(lookups),
            )
            lookups = lookups[: self.options.limit]
        if self.options.dry_run:
            for lookup in lookups:
                self.tally.would_fetch += 1
                log.info("Would resolve %s", lookup.describe())
            return
        if not lookups:
            return
        size = max(self.resolver.gbif.match_batch_size, 1)
        batches = [lookups[start : start + size] for start in range(0, len(lookups), size)]
        workers = max(self.options.max_concurrency, 1)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resolve")
        try:
            # A few lookups per worker in flight, and at least one batch each.
            window = max(workers, workers * IN_FLIGHT_PER_WORKER // size)
            self._collect(pool, ask, batches, len(lookups), window)
        except BaseException:
            # A database failure while saving, or a deploy's SIGTERM: stop asking GBIF for
            # answers nobody keeps, and leave now rather than after the requests in flight.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _collect(
        self,
        pool: ThreadPoolExecutor,
        ask: Callable[[list[Lookup]], list[Resolution]],
        batches: list[list[Lookup]],
        total: int,
        in_flight_limit: int,
    ) -> None:
        """Keep a few batches per worker in flight and settle each answer as it comes.
        Submitting the whole backlog at once would hold every answer (and its lineage rows) in
        memory until the pass ends: about 3 KiB a name, 300 MiB for a 100,000-name backlog."""
        waiting = iter(batches)
        in_flight: dict[Future[list[Resolution]], list[Lookup]] = {}
        done = 0
        while True:
            for batch in islice(waiting, in_flight_limit - len(in_flight)):
                in_flight[pool.submit(_guarded, ask, batch)] = batch
            if not in_flight:
                return
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                batch = in_flight.pop(future)
                for lookup, answer in zip(batch, future.result(), strict=True):
                    self.settle(lookup, answer)
                    done += 1
                    if done % PROGRESS_EVERY == 0:
                        log.info(
                            "%s pass progress: %d/%d processed, %d resolved, %d not found, "
                            "%d errors",
                            self.kind,
                            done,
                            total,
                            self.tally.resolved,
                            self.tally.not_found,
                            self.tally.errors,
                        )

    def settle(self, lookup: Lookup, answer: Resolution, *, remember: bool = True) -> None:
        """Count an answer and queue its writes (none in a dry run)."""
        if answer.outcome == "resolved":
            self.tally.resolved += 1
            self.resolver.report.changes.add(
                kind=lookup.kind,
                subject=lookup.subject,
                kingdom=lookup.kingdom,
                accepted_taxon_key=answer.accepted_taxon_key,
            )
        elif answer.outcome == "error":
            self.tally.errors += 1
            self.resolver.report.failures.add(
                kind=lookup.kind,
                subject=lookup.subject,
                kingdom=lookup.kingdom,
                error=answer.detail,
            )
            log.warning(
                "Resolve failed for %s: %s",
                lookup.describe(),
                answer.detail,
                extra=event(ITEM_FAILED),
            )
        else:
            self.tally.not_found += 1
            log.info("No usable match for %s: %s", lookup.describe(), answer.detail)
        if self.options.dry_run:
            return
        self._rows.extend(answer.rows)
        if answer.accepted_taxon_key is not None:
            self._stamps.extend((t, answer.accepted_taxon_key) for t in lookup.stamp_targets)
        if remember:
            self._records.append(self._record(lookup, answer))
        if len(self._records) + len(self._stamps) >= self.options.batch_size:
            self.flush()

    def _record(self, lookup: Lookup, answer: Resolution) -> AttemptRecord:
        prior = self.priors.get(lookup.digest)
        backoff = {"error": SPEC.retry, "resolved": None}.get(answer.outcome, NOT_FOUND_BACKOFF)
        return AttemptRecord(
            digest=lookup.digest,
            subject=lookup.subject,
            kingdom=lookup.kingdom,
            outcome=answer.outcome,
            taxon_key=answer.taxon_key,
            accepted_taxon_key=answer.accepted_taxon_key,
            match_type=answer.match_type,
            confidence=answer.confidence,
            error=answer.detail if answer.outcome != "resolved" else None,
            next_attempt_at=(
                backoff.next_attempt(prior.attempts if prior else 0, self.now) if backoff else None
            ),
        )

    def flush(self) -> None:
        if not (self._rows or self._records or self._stamps):
            return
        stamp = (
            identifications.stamp_by_name
            if self.kind == "name"
            else identifications.stamp_by_taxon_id
        )
        with self.conn:
            identifications.take_write_lock(self.conn)
            self.resolver.report.taxa_upserted += taxa.upsert_taxa(self.conn, self._rows)
            resolution_attempts.record_attempts(self.conn, self.kind, self._records)
            self.tally.rows_stamped += stamp(self.conn, self._stamps)
        self._rows, self._records, self._stamps = [], [], []

    def finish(self, message: str) -> None:
        self.flush()
        log.info(
            "%s: %d resolved, %d not found, %d errors, %d rows stamped, %d skipped (backoff)",
            message,
            self.tally.resolved,
            self.tally.not_found,
            self.tally.errors,
            self.tally.rows_stamped,
            self.tally.skipped_backoff,
        )


class TaxaResolver:
    """Runs a pass with one database connection and the two API clients."""

    def __init__(
        self, conn: Connection, gbif: GbifClient, wikidata: WikidataClient, options: ResolveOptions
    ) -> None:
        self.conn, self.gbif, self.wikidata, self.options = conn, gbif, wikidata, options
        self.report = PassReport()

    def run(self) -> PassReport:
        started = time.monotonic()
        calls_before = self.gbif.http.calls + self.wikidata.http.calls
        self.report = report = PassReport()
        changed, writes = self._look_for_changes()
        self._name_pass()
        self._taxon_id_pass()
        ours = report.rows_reset + report.names.rows_stamped + report.taxon_ids.rows_stamped
        if not self.options.dry_run:
            with self.conn:  # our own stamps and resets are writes too: count them now
                identifications.publish_own_writes(self.conn)
            if self.options.refresh_view and (changed or ours):
                log.info("Resolution pass complete; refreshing community_ids")
                with self.conn:
                    report.refreshed = isinstance(community_ids.refresh(self.conn), Refreshed)
            elif self.options.refresh_view:
                log.info("Nothing written since the last pass; community_ids is current")
            if self.options.kingdom is None and (changed or ours):
                with self.conn:
                    change_marks.save_change_mark(self.conn, CHANGE_MARK, writes + ours)
        report.http_calls = self.gbif.http.calls + self.wikidata.http.calls - calls_before
        report.seconds = time.monotonic() - started
        return report

    def _look_for_changes(self) -> tuple[bool, int]:
        """Whether the tables `community_ids` reads (identifications, occurrences) were written
        since the last pass that swept, and their write count now. Only then can a name have
        been edited (and, for the `resolve-taxa` command, which refreshes the view itself, only
        then does the view need a refresh for rows we do not stamp): both steps read the whole
        table, so a pass with nothing to do skips them.

        The counters are statistics: a server without them (`track_counts` off, a partitioned
        table) or one that loses some (PostgreSQL 14 and older) could hide a write, so the
        steps also run when the last sweep is older than `FULL_SWEEP_EVERY`. A kingdom pass or
        a re-resolve always runs them (a kingdom pass does not keep the mark)."""
        report = self.report
        with self.conn:
            writes = identifications.view_source_writes(self.conn)
            mark = change_marks.change_mark(self.conn, CHANGE_MARK)
            changed = (
                self.options.kingdom is not None
                or bool(self.options.force_names)
                or mark is None
                or mark.writes != writes
                or mark.recorded_at < datetime.now(UTC) - FULL_SWEEP_EVERY
            )
            if changed:
                report.rows_reset = identifications.reset_edited_identifications(
                    self.conn, dry_run=self.options.dry_run
                )
        report.identifications_changed = changed
        if report.rows_reset:
            log.info(
                "Unstamped %d identifications edited since they were stamped", report.rows_reset
            )
        return changed, writes

    # -- name pass ---------------------------------------------------------------------------

    def _name_pass(self) -> None:
        with self.conn:
            pairs = identifications.pending_name_pairs(self.conn, self.options.kingdom)
        lookups = _group_names(pairs)
        self.report.names.seen = len(lookups)
        log.info(
            "Discovered (name, kingdom) pairs to resolve: %d pairs, %d distinct lookups",
            len(pairs),
            len(lookups),
        )
        names = _Pass(self, "name", self.report.names, lookups)
        forced = [lookup for lookup in lookups if lookup.normal in self.options.force_names]
        usual = [lookup for lookup in lookups if lookup.normal not in self.options.force_names]
        problem = lambda lookup: name_problem(lookup.subject)  # noqa: E731
        pending = names.triage(usual, problem)
        self._answer_names_from_cache(pending)
        forced = names.triage(forced, problem, remembered=False)
        names.fetch(names.settle_cached(pending) + forced, self._ask_gbif_by_name)
        names.finish("Name pass complete")

    def _answer_names_from_cache(self, lookups: list[Lookup]) -> None:
        if not lookups:
            return
        with self.conn:
            candidates = taxa.taxa_by_lower_name(
                self.conn, (name for lookup in lookups for name in cache_names(lookup.subject))
            )
        by_name: dict[str, list[TaxonRow]] = {}
        for row in candidates:
            by_name.setdefault(row.scientific_name.casefold(), []).append(row)
        for lookup in lookups:
            for name in cache_names(lookup.subject):
                cached = pick_cached(by_name.get(name, []), lookup.kingdom)
                if cached is not None:
                    lookup.answer = Resolution(
                        "resolved", cached.accepted_taxon_key, cached.taxon_key
                    )
                    break

    def _ask_gbif_by_name(self, lookups: list[Lookup]) -> list[Resolution]:
        queries = [
            MatchQuery(scientific_name=lookup.subject, kingdom=lookup.kingdom) for lookup in lookups
        ]
        return [
            _judged(lookup, match, partial(_judge_name, lookup))
            for lookup, match in zip(lookups, self.gbif.match_many(queries), strict=True)
        ]

    # -- taxonID pass ------------------------------------------------------------------------

    def _taxon_id_pass(self) -> None:
        with self.conn:
            uris = identifications.pending_taxon_ids(self.conn, self.options.kingdom)
        lookups = [
            Lookup("taxon_id", subject_digest(uri), uri, None, [uri], ref=parse_taxon_uri(uri))
            for uri in uris
        ]
        self.report.taxon_ids.seen = len(lookups)
        log.info("Discovered taxon_id URIs to resolve: %d", len(lookups))
        uri_pass = _Pass(self, "taxon_id", self.report.taxon_ids, lookups)
        pending = uri_pass.triage(
            lookups, lambda lookup: None if lookup.ref else "unrecognised taxonID URI"
        )
        if not self.options.dry_run:  # a dry run makes no call, cross-walks included
            pending = self._crosswalk(pending, uri_pass)
        self._answer_keys_from_cache(pending)
        pending = uri_pass.settle_cached(pending)
        uri_pass.fetch(pending, self._ask_gbif_by_key)
        uri_pass.finish("taxon_id pass complete")

    def _crosswalk(self, lookups: list[Lookup], uri_pass: _Pass) -> list[Lookup]:
        """Turn iNaturalist and Wikidata refs into GBIF refs through one batched query each."""
        walkers: dict[str, Callable[[list[str]], dict[str, int]]] = {
            "inaturalist": self.wikidata.gbif_keys_for_inaturalist,
            "wikidata": self.wikidata.gbif_keys_for_items,
        }
        ready = [lookup for lookup in lookups if lookup.ref and lookup.ref.scheme == "gbif"]
        for scheme, walk in walkers.items():
            group = [lookup for lookup in lookups if lookup.ref and lookup.ref.scheme == scheme]
            if not group:
                continue
            try:
                keys = walk([lookup.ref.value for lookup in group if lookup.ref])
            except UpstreamError as error:
                for lookup in group:
                    uri_pass.settle(lookup, Resolution.failed("error", str(error)))
                continue
            for lookup in group:
                assert lookup.ref is not None
                key = keys.get(lookup.ref.value)
                if key is None:
                    detail = f"no GBIF cross-walk for {scheme} taxon {lookup.ref.value}"
                    uri_pass.settle(lookup, Resolution.failed("not_found", detail))
                else:
                    lookup.ref = TaxonRef("gbif", str(key))
                    ready.append(lookup)
        return ready

    def _answer_keys_from_cache(self, lookups: list[Lookup]) -> None:
        keys = [lookup.ref.gbif_key() for lookup in lookups if lookup.ref]
        with self.conn:
            cached = taxa.taxa_by_key(self.conn, (k for k in keys if k is not None))
        for lookup in lookups:
            row = cached.get(lookup.ref.gbif_key() or 0) if lookup.ref else None
            if row is not None and row.accepted_taxon_key is not None:
                lookup.answer = Resolution("resolved", row.accepted_taxon_key, row.taxon_key)

    def _ask_gbif_by_key(self, lookups: list[Lookup]) -> list[Resolution]:
        keys = [lookup.ref.gbif_key() if lookup.ref else None for lookup in lookups]
        matches = self.gbif.match_many([MatchQuery(usage_key=key) for key in keys])
        return [
            _judged(lookup, match, judge_match)
            for lookup, match in zip(lookups, matches, strict=True)
        ]


def backing_off(prior: PriorAttempt, now: datetime) -> bool:
    """A failed or unmatched subject waits out its backoff: no pass asks it, nor counts it as
    work, before `next_attempt_at`."""
    return prior.next_attempt_at is not None and prior.next_attempt_at > now


@dataclass(frozen=True)
class DueWork:
    """What a pass would do now: the distinct names and taxonIDs of unstamped identifications
    that are not backing off (remembered answers included: they still stamp)."""

    names: int
    taxon_ids: int
    fingerprint: str
    """One digest of all their subjects: equal fingerprints, the same work."""

    @property
    def empty(self) -> bool:
        return not (self.names or self.taxon_ids)


def due_work(conn: Connection) -> DueWork:
    """The new-work sensor's probe: the pass's own two work queries (which the partial index
    `identifications_unstamped_idx` answers without reading the table) and one ledger lookup,
    grouped and judged as the pass does."""
    now = datetime.now(UTC)
    with conn:
        names = _group_names(identifications.pending_name_pairs(conn))
        uris = identifications.pending_taxon_ids(conn)
        subjects: dict[SubjectKind, list[str]] = {
            "name": [lookup.digest for lookup in names],
            "taxon_id": [subject_digest(uri) for uri in uris],
        }
        due: dict[SubjectKind, list[str]] = {}
        for kind, digests in subjects.items():
            priors = resolution_attempts.load_attempts(conn, kind, digests)
            due[kind] = sorted(
                d for d in digests if not (d in priors and backing_off(priors[d], now))
            )
    everything = "".join(f"{kind}:{d}" for kind in sorted(due) for d in due[kind])
    return DueWork(
        len(due["name"]), len(due["taxon_id"]), subject_digest(everything) if everything else ""
    )


def forget_answers(
    conn: Connection, names: Sequence[str], taxon_keys: Sequence[int]
) -> frozenset[str]:
    """ "Re-resolve taxon X": unstamp the identifications with these names or keys and drop the
    remembered answers, so the next pass asks GBIF again. Returns the normalised names to force
    past the taxa cache (`ResolveOptions.force_names`)."""
    with conn:
        stamped = identifications.names_stamped_with(conn, taxon_keys)
        forced = frozenset(normalise_name(n) for n in [*names, *stamped] if normalise_name(n))
        identifications.take_write_lock(conn)
        unstamped = identifications.unstamp(conn, sorted(forced), taxon_keys)
        forgotten = resolution_attempts.forget_resolutions(conn, sorted(forced), taxon_keys)
    log.info(
        "Re-resolve: %d identifications unstamped, %d remembered answers dropped",
        unstamped,
        forgotten,
    )
    return forced


def _guarded(
    ask: Callable[[list[Lookup]], list[Resolution]], batch: list[Lookup]
) -> list[Resolution]:
    """Run one batch of lookups; a failure of the whole batch becomes each item's recorded
    error, never the pass's."""
    answers = guarded(lambda: ask(batch), f"a batch of {len(batch)} lookups")
    if isinstance(answers, Failed):
        return [Resolution.failed("error", answers.error)] * len(batch)
    return answers


def _judge_name(lookup: Lookup, match: GbifMatch) -> Resolution:
    return judge_match(match, cache_names(lookup.subject))


def _judged(
    lookup: Lookup, match: GbifMatch | UpstreamError, judge: Callable[[GbifMatch], Resolution]
) -> Resolution:
    """The verdict on one answer of a batch, or the failure it met, as a `Resolution`."""
    verdict = judged(match, judge, lookup.describe())
    return Resolution.failed("error", verdict.error) if isinstance(verdict, Failed) else verdict


def _group_names(pairs: Iterable[NamePair]) -> list[Lookup]:
    """One lookup per (normalised name, kingdom); each keeps the verbatim pairs it stamps."""
    lookups: dict[str, Lookup] = {}
    for pair in pairs:
        kingdom = tidy_name(pair.kingdom) if pair.kingdom else None
        kingdom = kingdom or None
        digest = subject_digest(
            normalise_name(pair.scientific_name), kingdom.casefold() if kingdom else None
        )
        if digest not in lookups:
            lookups[digest] = Lookup("name", digest, tidy_name(pair.scientific_name), kingdom, [])
        lookups[digest].stamp_targets.append(pair)
    return list(lookups.values())
