"""Conservation status: the IUCN Red List category of each accepted species-or-below taxon.

With an IUCN token, from the Red List API v4: the taxon's latest *global* assessment (scope 1),
its year and id, and its category (a second call, since summaries carry none). A taxon with only
regional assessments is recorded as `regional_only`. Without a token, from GBIF's copy of the
Red List (`/v1/species/{key}/iucnRedListCategory`; `{}` means no status). Synonyms never reach
here: the cache's accepted taxa are asked by their accepted name. NE and DD are categories like
any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from observing_pipelines import inputs
from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.iucn import IucnClient
from observing_pipelines.db.item_failures import PriorFailure
from observing_pipelines.db.taxa import SPECIES_AND_BELOW, DueTaxon
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.enrichment import JobOptions, JobSpec, TableEnrichment
from observing_pipelines.taxa.names import binomial_parts

SPEC = JobSpec(
    name="conservation_status",
    cron="0 4 * * 1",
    retry=Backoff(first=timedelta(days=1), cap=timedelta(days=14)),
    recheck=timedelta(days=30),
)
THREATENED = frozenset({"CR", "EN", "VU"})


class ConservationStatusOptions(JobOptions):
    limit: inputs.Limit = 2000
    """Species-or-below taxa per run (new first, then the stalest)."""


@dataclass(frozen=True)
class ConservationRow:
    """One row of `pipelines.taxon_conservation` (without its timestamps)."""

    taxon_key: int
    scientific_name: str
    status: Literal["assessed", "not_assessed", "regional_only", "not_found"]
    source: Literal["iucn", "gbif"]
    category: str | None = None
    assessment_id: int | None = None
    assessment_year: int | None = None
    iucn_taxon_id: int | None = None
    common_name_en: str | None = None

    @property
    def found(self) -> bool:
        return self.status != "not_found"


class ConservationStatus(TableEnrichment[ConservationRow]):
    """From IUCN when a client (a token) is given, from GBIF otherwise."""

    spec = SPEC
    table = "taxon_conservation"
    row_type = ConservationRow
    ranks = SPECIES_AND_BELOW
    counters = ("threatened",)

    def __init__(self, gbif: GbifClient, iucn: IucnClient | None) -> None:
        super().__init__(iucn or gbif)
        self.gbif, self.iucn = gbif, iucn

    def look_up(self, item: DueTaxon, prior: PriorFailure | None) -> ConservationRow:
        return _from_iucn(self.iucn, item) if self.iucn else _from_gbif(self.gbif, item)

    def counts(self, row: ConservationRow) -> Iterable[str]:
        return ("threatened",) if row.category in THREATENED else ()


def _from_gbif(gbif: GbifClient, taxon: DueTaxon) -> ConservationRow:
    category = gbif.red_list_category(taxon.taxon_key).code
    return ConservationRow(
        taxon_key=taxon.taxon_key,
        scientific_name=taxon.scientific_name,
        status="assessed" if category else "not_assessed",
        source="gbif",
        category=category,
    )


def _from_iucn(iucn: IucnClient, taxon: DueTaxon) -> ConservationRow:
    base: dict[str, Any] = {
        "taxon_key": taxon.taxon_key,
        "scientific_name": taxon.scientific_name,
        "source": "iucn",
    }
    parts = binomial_parts(taxon.scientific_name)
    found = iucn.taxon(*parts) if parts else None
    if found is None:
        return ConservationRow(status="not_found", **base)
    ids: dict[str, Any] = {"iucn_taxon_id": found.sis_id, "common_name_en": found.common_name_en}
    summary = found.latest_global()
    if summary is None:
        return ConservationRow(
            status="regional_only" if found.assessments else "not_assessed", **base, **ids
        )
    assessment = iucn.assessment(summary.assessment_id)
    if assessment is None or assessment.category is None:
        return ConservationRow(status="not_assessed", **base, **ids)
    return ConservationRow(
        status="assessed",
        category=assessment.category,
        assessment_id=assessment.assessment_id,
        assessment_year=assessment.year_published or summary.year_published,
        **base,
        **ids,
    )
