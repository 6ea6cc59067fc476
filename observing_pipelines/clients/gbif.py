"""GBIF species API: the v2 name matcher, parsed into typed records at the edge.

Only `/v2/species/match` is used, as today's resolver does: by `scientificName` (+ `kingdom`) and
by `usageKey`. Raw JSON stops here; above this module nothing indexes into API dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from observing_pipelines.clients.http import (
    MalformedResponseError,
    PoliteHttpClient,
    UpstreamNotFound,
)
from observing_pipelines.clients.iucn import CATEGORIES
from observing_pipelines.text import storable_or_none

SERVICE = "gbif"
MATCH_PATH = "/v2/species/match"


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


class GbifClient:
    """The calls `resolve_taxa` makes, answering typed `GbifMatch` records."""

    def __init__(self, http: PoliteHttpClient) -> None:
        self.http = http

    def match_name(self, name: str, kingdom: str | None) -> GbifMatch:
        params: dict[str, str | int] = {"scientificName": name}
        if kingdom:
            params["kingdom"] = kingdom
        return self._match(params)

    def match_usage_key(self, key: int) -> GbifMatch:
        return self._match({"usageKey": key})

    def red_list_category(self, key: int) -> RedListCategory:
        """The IUCN category GBIF holds for this usage. GBIF answers `{}` when there is no
        status; a 404 says the usage itself is unknown there, an error for that taxon
        (recorded and retried with backoff), not "not assessed"."""
        return parse_red_list_category(
            self.http.request_json("GET", f"/v1/species/{key}/iucnRedListCategory")
        )

    def _match(self, params: dict[str, str | int]) -> GbifMatch:
        """One matcher call; a 404 is no match, as the app has always read it."""
        try:
            body = self.http.request_json("GET", MATCH_PATH, params=params)
        except UpstreamNotFound:
            return GbifMatch.no_match()
        return parse_match(body)
