"""Conservation status: the IUCN Red List category of each accepted species-or-below taxon.

With an IUCN token, from the Red List API v4: the taxon's latest *global* assessment (scope 1),
its year and id, and its category (a second call, since summaries carry none). A taxon with only
regional assessments is recorded as `regional_only`. Without a token, from GBIF's copy of the
Red List (`/v1/species/{key}/iucnRedListCategory`; `{}` means no status). Synonyms never reach
here: the cache's accepted taxa are asked by their accepted name. NE and DD are categories like
any other.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg2.extensions import connection as Connection

from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.clients.iucn import IucnClient
from observing_pipelines.db import app_tables, state
from observing_pipelines.db.app_tables import SPECIES_AND_BELOW, DueTaxon
from observing_pipelines.db.state import ConservationRow
from observing_pipelines.taxa.names import binomial_parts
from observing_pipelines.taxa.report import SyncReport

log = logging.getLogger("observing_pipelines.conservation")

JOB = "conservation_status"
CHUNK = 100
THREATENED = frozenset({"CR", "EN", "VU"})
RECHECK = timedelta(days=30)
RETRY_FIRST, RETRY_CAP = timedelta(days=1), timedelta(days=14)


@dataclass(frozen=True)
class ConservationOptions:
    limit: int = 2000
    max_concurrency: int = 2


def sync_conservation(
    conn: Connection, gbif: GbifClient, iucn: IucnClient | None, options: ConservationOptions
) -> SyncReport:
    """One pass; the source is IUCN when a client (a token) is given, GBIF otherwise."""
    report = SyncReport()
    http = [gbif.http] + ([iucn.http] if iucn else [])
    calls_before = sum(client.calls for client in http)
    with conn:
        due = app_tables.taxa_due(conn, "taxon_conservation", JOB, options.limit, SPECIES_AND_BELOW)
    report.seen = len(due)
    source = "iucn" if iucn else "gbif"
    log.info("Conservation status: %d taxa due, source %s", len(due), source)

    def look_up(taxon: DueTaxon) -> ConservationRow | str:
        try:
            return _from_iucn(iucn, taxon) if iucn else _from_gbif(gbif, taxon)
        except UpstreamError as error:
            return str(error)
        except Exception as error:  # one odd answer must not sink the other taxa
            log.exception("Unexpected failure for taxon %d", taxon.taxon_key)
            return f"{type(error).__name__}: {error}"

    report.extra = {"threatened": 0}
    with ThreadPoolExecutor(max_workers=max(options.max_concurrency, 1)) as pool:
        for start in range(0, len(due), CHUNK):  # saved a chunk at a time: a kill loses little
            chunk = due[start : start + CHUNK]
            answers = list(pool.map(look_up, chunk))
            _save(conn, chunk, answers, report)
    return report.finish(sum(client.calls for client in http) - calls_before)


def _save(
    conn: Connection,
    chunk: list[DueTaxon],
    answers: list[ConservationRow | str],
    report: SyncReport,
) -> None:
    rows = [a for a in answers if isinstance(a, ConservationRow)]
    failures = [(t.taxon_key, a) for t, a in zip(chunk, answers, strict=True) if isinstance(a, str)]
    for key, error in failures:
        report.fail(f"taxon {key}", error)
        log.warning("Conservation status failed for taxon %d: %s", key, error)
    with conn:
        before = state.load_results(conn, ConservationRow, (row.taxon_key for row in rows))
        state.save_results(conn, [(row, RECHECK) for row in rows])
        state.clear_failures(conn, JOB, (row.taxon_key for row in rows))
        state.record_failures(conn, JOB, failures, RETRY_FIRST, RETRY_CAP)
    changed = sum(before.get(row.taxon_key) != row for row in rows)
    report.changed += changed
    report.unchanged += len(rows) - changed
    report.extra["threatened"] += sum(row.category in THREATENED for row in rows)


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
