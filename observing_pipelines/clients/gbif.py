"""GBIF species API, parsed into typed records at the edge.

The v2 matcher (`/v2/species/match`, as today's resolver uses it: by `scientificName` +
`kingdom`, and by `usageKey`), one question a GET or up to a batch of them a POST (`match_many`),
and three v1 reads by key: the Red List category, the usage's
own vernacular name and its paged list of vernacular names. Raw JSON stops here; above this
module nothing indexes into API dictionaries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

from observing_pipelines.clients.http import (
    MalformedResponseError,
    PoliteHttpClient,
    UpstreamError,
    UpstreamNotFound,
)
from observing_pipelines.clients.iucn import CATEGORIES
from observing_pipelines.text import storable_or_none

log = logging.getLogger(__name__)

SERVICE = "gbif"
MATCH_PATH = "/v2/species/match"
MAX_MATCH_BATCH = 1000
"""GBIF's own limit on queries per batch (gbif/gbif-api#204)."""
NAMES_WINDOW_MARGIN_MS = 50
NO_BATCH_STATUSES = frozenset({404, 405, 415, 501})
"""What a server without the batch form answers a POST (Varnish said 405, before 2026-09)."""


@dataclass(frozen=True)
class NameUsage:
    key: int
    name: str
    authorship: str | None
    rank: str
    status: str | None


@dataclass(frozen=True)
class ClassificationEntry:
    key: int
    name: str
    rank: str


@dataclass(frozen=True)
class GbifMatch:
    """One answer of the matcher. `usage` is None when GBIF matched nothing usable."""

    match_type: str
    confidence: int | None
    usage: NameUsage | None
    accepted_usage: NameUsage | None
    classification: tuple[ClassificationEntry, ...]
    synonym: bool

    @classmethod
    def no_match(cls) -> GbifMatch:
        return cls("NONE", None, None, None, (), False)


def _key(value: Any) -> int | None:
    """v2 keys are strings; backbone keys are integers. Anything else (COL XR ids) is no key."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        key = int(value)
        return key if 0 < key < 2**63 else None
    return None


def _usage(raw: Any) -> NameUsage | None:
    if not isinstance(raw, dict):
        return None
    key = _key(raw.get("key"))
    name = storable_or_none(raw.get("canonicalName")) or storable_or_none(raw.get("name"))
    if key is None or name is None:
        return None
    rank = storable_or_none(raw.get("rank"))
    return NameUsage(
        key=key,
        name=name,
        authorship=storable_or_none(raw.get("authorship")),
        rank=rank.lower() if rank else "unknown",
        status=storable_or_none(raw.get("status")),
    )


def parse_match(body: Any) -> GbifMatch:
    """Parse a `/v2/species/match` body. Raises `MalformedResponseError` if it is not one."""
    if not isinstance(body, dict):
        raise MalformedResponseError(
            SERVICE, f"match answer is a {type(body).__name__}, not an object"
        )
    diagnostics = body.get("diagnostics")
    if not isinstance(diagnostics, dict):
        raise MalformedResponseError(SERVICE, "match answer has no diagnostics")
    match_type = storable_or_none(diagnostics.get("matchType"))
    if match_type is None:
        raise MalformedResponseError(SERVICE, "match answer has no diagnostics.matchType")
    confidence = diagnostics.get("confidence")
    classification = tuple(
        ClassificationEntry(key=key, name=name, rank=rank.lower())
        for entry in body.get("classification") or ()
        if isinstance(entry, dict)
        and (key := _key(entry.get("key"))) is not None
        and (name := storable_or_none(entry.get("name"))) is not None
        and (rank := storable_or_none(entry.get("rank"))) is not None
    )
    return GbifMatch(
        match_type=match_type.upper(),
        confidence=confidence
        if isinstance(confidence, int) and not isinstance(confidence, bool)
        else None,
        usage=_usage(body.get("usage")),
        accepted_usage=_usage(body.get("acceptedUsage")),
        classification=classification,
        synonym=body.get("synonym") is True,
    )


@dataclass(frozen=True)
class RedListCategory:
    """GBIF's copy of the IUCN category (`/v1/species/{key}/iucnRedListCategory`)."""

    code: str | None
    accepted_name: str | None


def parse_red_list_category(body: Any) -> RedListCategory:
    """Both known shapes (api.gbif.org and matching-ws), and `{}` for "no status"."""
    if not isinstance(body, dict):
        raise MalformedResponseError(SERVICE, "iucnRedListCategory answer is not an object")
    code = storable_or_none(body.get("code"))
    return RedListCategory(
        code=code.upper() if code and code.upper() in CATEGORIES else None,
        accepted_name=storable_or_none(body.get("acceptedName")),
    )


@dataclass(frozen=True)
class VernacularName:
    """One entry of `/v1/species/{key}/vernacularNames`; `language` is ISO 639-2/3 or None."""

    name: str
    language: str | None
    source: str | None
    country: str | None
    preferred: bool


@dataclass(frozen=True)
class VernacularPage:
    names: tuple[VernacularName, ...]
    received: int
    end_of_records: bool


def parse_vernacular_page(body: Any) -> VernacularPage:
    """One page of `/v1/species/{key}/vernacularNames`. Entries without a name are dropped;
    a body without its `results` list or its `endOfRecords` flag (a truncated or foreign
    answer) raises `MalformedResponseError`, so a taxon is never saved with half its names."""
    if not isinstance(body, dict):
        raise MalformedResponseError(SERVICE, "vernacularNames answer is not an object")
    results, end = body.get("results"), body.get("endOfRecords")
    if not isinstance(results, list) or not isinstance(end, bool):
        raise MalformedResponseError(
            SERVICE, "vernacularNames answer has no results list or no endOfRecords flag"
        )
    names = tuple(
        VernacularName(
            name=name,
            language=storable_or_none(entry.get("language"), 16),
            source=storable_or_none(entry.get("source")),
            country=storable_or_none(entry.get("country"), 16),
            preferred=entry.get("preferred") is True,
        )
        for entry in results
        if isinstance(entry, dict) and (name := storable_or_none(entry.get("vernacularName")))
    )
    return VernacularPage(names, len(results), end)


VERNACULAR_PAGE_SIZE = 100
MAX_VERNACULAR_PAGES = 50
"""5,000 names: the most-named taxa have a few hundred. A list that goes on is an error."""


@dataclass(frozen=True)
class MatchQuery:
    """One question to the matcher: a name (with its kingdom, if known) or a usage key."""

    scientific_name: str | None = None
    kingdom: str | None = None
    usage_key: int | None = None

    def params(self) -> dict[str, str | int]:
        """As the GET form's parameters, and as one object of the POST form's array."""
        if self.usage_key is not None:
            return {"usageKey": self.usage_key}
        params: dict[str, str | int] = {"scientificName": self.scientific_name or ""}
        if self.kingdom:
            params["kingdom"] = self.kingdom
        return params


def parse_match_batch(body: Any, expected: int) -> list[GbifMatch]:
    """The POST form's answer: a JSON array of matches, one per query, in order. Anything else
    (another length, not an array, an entry that is not a match) raises
    `MalformedResponseError`: an answer that cannot be lined up is never mapped onto names."""
    if not isinstance(body, list):
        raise MalformedResponseError(
            SERVICE, f"batch match answer is a {type(body).__name__}, not an array"
        )
    if len(body) != expected:
        raise MalformedResponseError(
            SERVICE, f"batch match answer has {len(body)} entries for {expected} queries"
        )
    return [parse_match(entry) for entry in body]


def lined_up(query: MatchQuery, match: GbifMatch) -> bool:
    """Whether `match` can be the answer to `query`: the key asked for, or, for an EXACT name
    match, a name whose every word is in the name asked (authorship aside). GBIF does not
    promise batch answers in input order; a reordered batch fails this for all but a few."""
    if match.usage is None:
        return True
    if query.usage_key is not None:
        return match.usage.key == query.usage_key
    if match.match_type != "EXACT":
        return True  # fuzzy, variant and higher-rank answers differ from the query by nature
    asked = set((query.scientific_name or "").casefold().split())
    return set(match.usage.name.casefold().split()) <= asked


class GbifClient:
    """The calls the jobs make, answering typed records.

    With `match_batch_size` > 0, `match_many` asks the matcher that many questions a POST, and
    `max_names_per_second` bounds the questions (GET or POST) the client asks a second, next to
    the requests a second its `PoliteHttpClient` allows. A POST answered 404/405/415/501 or with
    an HTML page means this GBIF has no batch form: the client asks one question a GET from
    then on, and says so once.
    """

    def __init__(
        self,
        http: PoliteHttpClient,
        *,
        match_batch_size: int = 0,
        max_names_per_second: int = 500,
    ) -> None:
        self.http = http
        self.match_batch_size = min(match_batch_size, MAX_MATCH_BATCH, max_names_per_second)
        # A window of a second and a little more: a batch sent the instant the window allows
        # must not reach GBIF inside the last one because the one before travelled slower.
        rate = Rate(max_names_per_second, Duration.SECOND + NAMES_WINDOW_MARGIN_MS)
        self._names = Limiter(InMemoryBucket([rate]), buffer_ms=5)  # as `PoliteHttpClient`
        self._batch_refused = threading.Event()

    @property
    def batching(self) -> bool:
        return self.match_batch_size > 0 and not self._batch_refused.is_set()

    def match_many(self, queries: Sequence[MatchQuery]) -> list[GbifMatch | UpstreamError]:
        """One answer per query, in order: its match, or the error that query met. A batch
        whose answer cannot be used is asked once more, then its queries one GET each."""
        answers: list[GbifMatch | UpstreamError] = []
        size = self.match_batch_size or 1
        for start in range(0, len(queries), size):
            answers += self._match_batch(queries[start : start + size])
        return answers

    def match_name(self, name: str, kingdom: str | None) -> GbifMatch:
        return self._match(MatchQuery(scientific_name=name, kingdom=kingdom).params())

    def match_usage_key(self, key: int) -> GbifMatch:
        return self._match(MatchQuery(usage_key=key).params())

    def red_list_category(self, key: int) -> RedListCategory:
        """The IUCN category GBIF holds for this usage. GBIF answers `{}` when there is no
        status; a 404 says the usage itself is unknown there, an error for that taxon
        (recorded and retried with backoff), not "not assessed"."""
        return parse_red_list_category(
            self.http.request_json("GET", f"/v1/species/{key}/iucnRedListCategory")
        )

    def vernacular_name(self, key: int) -> str | None:
        """The usage's own `vernacularName` (`/v1/species/{key}`), the name GBIF shows first."""
        body = self.http.request_json("GET", f"/v1/species/{key}")
        if not isinstance(body, dict):
            raise MalformedResponseError(SERVICE, "species answer is not an object")
        return storable_or_none(body.get("vernacularName"))

    def vernacular_names(self, key: int) -> list[VernacularName]:
        """Every vernacular name GBIF holds for the usage, all pages, in GBIF's order."""
        names: list[VernacularName] = []
        for page_number in range(MAX_VERNACULAR_PAGES):
            page = parse_vernacular_page(
                self.http.request_json(
                    "GET",
                    f"/v1/species/{key}/vernacularNames",
                    params={
                        "offset": page_number * VERNACULAR_PAGE_SIZE,
                        "limit": VERNACULAR_PAGE_SIZE,
                    },
                )
            )
            names.extend(page.names)
            if page.end_of_records:
                return names
            if page.received == 0:
                raise MalformedResponseError(
                    SERVICE, "vernacularNames page is empty but not the last one"
                )
        raise MalformedResponseError(
            SERVICE, f"vernacularNames did not end after {MAX_VERNACULAR_PAGES} pages"
        )

    def _match_batch(self, batch: Sequence[MatchQuery]) -> list[GbifMatch | UpstreamError]:
        for attempt in (1, 2):
            if not self.batching or len(batch) < 2:
                break
            self._names.try_acquire("names", len(batch))
            try:
                body = self.http.request_json(
                    "POST", MATCH_PATH, json=[query.params() for query in batch]
                )
                matches = parse_match_batch(body, len(batch))
                if not all(map(lined_up, batch, matches)):
                    raise MalformedResponseError(SERVICE, "batch answers are not in query order")
                return list(matches)
            except UpstreamError as error:
                if error.status in NO_BATCH_STATUSES or (error.html and attempt == 1):
                    self._refuse_batches(error)
                    break
                then = "asking again" if attempt == 1 else "asking its names one by one"
                log.warning("GBIF batch of %d not usable (%s); %s", len(batch), error, then)
                if not isinstance(error, MalformedResponseError):
                    break  # retries are spent: the request failed, not the answer
        return [self._match_one(query) for query in batch]

    def _refuse_batches(self, error: UpstreamError) -> None:
        if not self._batch_refused.is_set():
            self._batch_refused.set()
            log.warning(
                "GBIF does not take batch matches here (%s); matching one name a request", error
            )

    def _match_one(self, query: MatchQuery) -> GbifMatch | UpstreamError:
        try:
            return self._match(query.params())
        except UpstreamError as error:
            return error

    def _match(self, params: dict[str, str | int]) -> GbifMatch:
        """One matcher call; a 404 is no match, as the app has always read it."""
        self._names.try_acquire("names")
        try:
            body = self.http.request_json("GET", MATCH_PATH, params=params)
        except UpstreamNotFound:
            return GbifMatch.no_match()
        return parse_match(body)
