"""Vernacular names: every common name GBIF holds for an accepted taxon, and the one to show.

Per taxon, GBIF's own name for the usage (`/v1/species/{key}`) and all pages of
`/v1/species/{key}/vernacularNames`, kept with language, source and country in
`pipelines.taxon_vernacular_names`. The name to show is chosen as the appview's
`pick_vernacular` does, and written to the app's `ingester.taxa.vernacular_name`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from psycopg2.extensions import connection as Connection

from observing_pipelines import inputs
from observing_pipelines.clients.gbif import GbifClient, VernacularName
from observing_pipelines.db import taxa
from observing_pipelines.db.item_failures import PriorFailure
from observing_pipelines.db.taxa import DueTaxon
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.enrichment import JobOptions, JobSpec, TableEnrichment
from observing_pipelines.taxa.report import SyncReport, Value

SPEC = JobSpec(
    name="vernacular_names",
    cron="0 5 * * 3",
    retry=Backoff(first=timedelta(days=1), cap=timedelta(days=14)),
    recheck=timedelta(days=90),
    recheck_missing=timedelta(days=30),
)


class VernacularNamesOptions(JobOptions):
    limit: inputs.Limit = 2000
    """Accepted taxa per run (new first, then the stalest); two GBIF calls or more each."""


@dataclass(frozen=True)
class VernacularNamesRow:
    """One row of `pipelines.taxon_vernacular_names` (without its timestamps)."""

    taxon_key: int
    preferred_name: str | None
    names: list[dict[str, Any]]

    @property
    def found(self) -> bool:
        return self.preferred_name is not None


PREFERENCE: tuple[Callable[[VernacularName], bool], ...] = (
    lambda name: name.language == "eng",
    lambda name: name.language is None,
    lambda name: name.preferred,
)
"""After GBIF's own name for the usage: English, then untagged, then flagged preferred."""


def preferred_name(own_name: str | None, names: Sequence[VernacularName]) -> str | None:
    """The appview's choice: the usage's own name, else the first entry that is English,
    untagged, or preferred (in that order of rules), else the first entry."""
    if own_name:
        return own_name
    for rule in PREFERENCE:
        chosen = next((name for name in names if rule(name)), None)
        if chosen is not None:
            return chosen.name
    return names[0].name if names else None


class VernacularNames(TableEnrichment[VernacularNamesRow]):
    spec = SPEC
    table = "taxon_vernacular_names"
    row_type = VernacularNamesRow
    counters = ("with_name",)

    def __init__(self, gbif: GbifClient) -> None:
        super().__init__(gbif)
        self.gbif = gbif

    def look_up(self, item: DueTaxon, prior: PriorFailure | None) -> VernacularNamesRow:
        names = self.gbif.vernacular_names(item.taxon_key)
        own_name = self.gbif.vernacular_name(item.taxon_key)
        return VernacularNamesRow(
            item.taxon_key, preferred_name(own_name, names), [asdict(name) for name in names]
        )

    def describe_change(self, row: VernacularNamesRow) -> dict[str, Value]:
        return {
            "taxon_key": row.taxon_key,
            "preferred_name": row.preferred_name,
            "names": len(row.names),
        }

    def counts(self, row: VernacularNamesRow) -> Iterable[str]:
        return ("with_name",) if row.found else ()

    def save(
        self, conn: Connection, answers: Sequence[VernacularNamesRow], report: SyncReport
    ) -> None:
        super().save(conn, answers, report)
        taxa.set_vernacular_names(conn, {row.taxon_key: row.preferred_name for row in answers})
