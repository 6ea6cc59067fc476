"""IUCN Red List API v4: a species' latest global assessment and its category.

The token goes in the `Authorization` header (bare, as rredlist sends it) and nowhere else: not
in URLs, not in log lines, not in errors. Summaries from `taxa/scientific_name` carry no
category, so the category costs a second call to `assessment/{id}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from observing_pipelines.clients.http import (
    MalformedResponseError,
    PoliteHttpClient,
    UpstreamNotFound,
)
from observing_pipelines.text import storable_or_none

SERVICE = "iucn"
GLOBAL_SCOPE = "1"
CATEGORIES = frozenset({"EX", "EW", "RE", "CR", "EN", "VU", "NT", "LC", "DD", "NA", "NE"})
LOWER_RISK = frozenset({"LR/cd", "LR/nt", "LR/lc"})  # criteria version 2.3 (before 2001)


@dataclass(frozen=True)
class AssessmentSummary:
    assessment_id: int
    year_published: int | None
    latest: bool
    scope_codes: tuple[str, ...]

    @property
    def is_global(self) -> bool:
        return GLOBAL_SCOPE in self.scope_codes


@dataclass(frozen=True)
class IucnTaxon:
    sis_id: int
    scientific_name: str
    common_name_en: str | None
    assessments: tuple[AssessmentSummary, ...]

    def latest_global(self) -> AssessmentSummary | None:
        candidates = [a for a in self.assessments if a.latest and a.is_global]
        return max(candidates, key=lambda a: a.year_published or 0) if candidates else None


@dataclass(frozen=True)
class Assessment:
    assessment_id: int
    category: str | None
    year_published: int | None


def _year(value: Any) -> int | None:
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def _language_code(language: Any) -> str | None:
    """Both recorded shapes: `"eng"` (since 2025) and `{"code": "eng", ...}` (2024)."""
    if isinstance(language, dict):
        language = language.get("code")
    return language.lower() if isinstance(language, str) else None


def _category(code: str | None) -> str | None:
    """A Red List category code, or None for anything unknown (2.3's LR/* kept as written)."""
    if not code:
        return None
    if code.upper() in CATEGORIES:
        return code.upper()
    lower_risk = f"LR/{code[3:].lower()}" if code.upper().startswith("LR/") else None
    return lower_risk if lower_risk in LOWER_RISK else None


def parse_taxon(body: Any) -> IucnTaxon:
    if not isinstance(body, dict) or not isinstance(body.get("taxon"), dict):
        raise MalformedResponseError(SERVICE, "taxon answer has no taxon object")
    taxon = body["taxon"]
    sis_id = taxon.get("sis_id")
    if not isinstance(sis_id, int):
        raise MalformedResponseError(SERVICE, "taxon answer has no sis_id")
    names = [n for n in taxon.get("common_names") or () if isinstance(n, dict)]
    english = [n for n in names if _language_code(n.get("language")) == "eng"]
    english.sort(key=lambda n: n.get("main") is not True)
    summaries = tuple(
        AssessmentSummary(
            assessment_id=a["assessment_id"],
            year_published=_year(a.get("year_published")),
            latest=a.get("latest") is True,
            scope_codes=tuple(
                str(s.get("code")) for s in a.get("scopes") or () if isinstance(s, dict)
            ),
        )
        for a in body.get("assessments") or ()
        if isinstance(a, dict) and isinstance(a.get("assessment_id"), int)
    )
    return IucnTaxon(
        sis_id=sis_id,
        scientific_name=storable_or_none(taxon.get("scientific_name")) or "",
        common_name_en=storable_or_none(english[0].get("name")) if english else None,
        assessments=summaries,
    )


def parse_assessment(body: Any) -> Assessment:
    if not isinstance(body, dict) or not isinstance(body.get("assessment_id"), int):
        raise MalformedResponseError(SERVICE, "assessment answer has no assessment_id")
    category = body.get("red_list_category")
    code = storable_or_none(category.get("code")) if isinstance(category, dict) else None
    return Assessment(
        assessment_id=body["assessment_id"],
        category=_category(code),
        year_published=_year(body.get("year_published")),
    )


class IucnClient:
    def __init__(self, http: PoliteHttpClient, token: str) -> None:
        self.http = http
        self._headers = {"Authorization": token}

    def taxon(self, genus: str, species: str, infra: str | None = None) -> IucnTaxon | None:
        """The taxon and its assessment summaries; None when IUCN does not know the name."""
        params = {"genus_name": genus, "species_name": species}
        if infra:
            params["infra_name"] = infra
        try:
            body = self.http.request_json(
                "GET", "/taxa/scientific_name", params=params, headers=self._headers
            )
        except UpstreamNotFound:
            return None
        return parse_taxon(body)

    def assessment(self, assessment_id: int) -> Assessment | None:
        try:
            body = self.http.request_json(
                "GET", f"/assessment/{assessment_id}", headers=self._headers
            )
        except UpstreamNotFound:
            return None
        return parse_assessment(body)
