"""Taxon thumbnails: Wikidata's image (P18) of the item holding the GBIF key, sized by Commons.

Per chunk of taxa (new ones first, then the stalest): one SPARQL query finds the items and
their best-ranked P18 (preferred, then normal; never deprecated), then Commons `imageinfo` gives
thumbnail URLs at the two standard widths the app shows (search results and detail page), the
original, licence, artist and file page. One row per taxon; a taxon without item or image is
recorded as such and looked at again after `RECHECK_MISSING`, not every run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from psycopg2.extensions import connection as Connection

from observing_pipelines.clients.commons import CommonsClient, CommonsImage
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.clients.wikidata import TaxonImage, WikidataClient
from observing_pipelines.db import app_tables, state
from observing_pipelines.db.state import TaxonImageRow
from observing_pipelines.taxa.report import SyncReport

log = logging.getLogger("observing_pipelines.thumbnails")

JOB = "thumbnails"
CHUNK = 100
RECHECK_FOUND = timedelta(days=30)
RECHECK_MISSING = timedelta(days=14)
RETRY_FIRST, RETRY_CAP = timedelta(hours=6), timedelta(days=7)


@dataclass(frozen=True)
class ThumbnailOptions:
    limit: int = 500
    small_width: int = 120  # search results show 100 px: the next standard step
    large_width: int = 960  # the detail page shows 600 px: the next standard step


def refresh_thumbnails(
    conn: Connection, wikidata: WikidataClient, commons: CommonsClient, options: ThumbnailOptions
) -> SyncReport:
    report = SyncReport(extra={"with_image": 0})
    calls_before = wikidata.http.calls + commons.http.calls
    with conn:
        due = app_tables.taxa_due(conn, "taxon_images", JOB, options.limit)
    report.seen = len(due)
    log.info("Thumbnails: %d taxa due", len(due))
    for start in range(0, len(due), CHUNK):
        keys = [taxon.taxon_key for taxon in due[start : start + CHUNK]]
        try:
            rows = _look_up(keys, wikidata, commons, options)
        except UpstreamError as error:
            log.warning("Thumbnail lookup failed for %d taxa: %s", len(keys), error)
            for key in keys:
                report.fail(f"taxon {key}", str(error))
            with conn:
                state.record_failures(
                    conn, JOB, [(k, str(error)) for k in keys], RETRY_FIRST, RETRY_CAP
                )
            continue
        with conn:
            before = state.load_results(conn, TaxonImageRow, keys)
            state.save_results(
                conn,
                [
                    (row, RECHECK_FOUND if row.status == "found" else RECHECK_MISSING)
                    for row in rows
                ],
            )
            state.clear_failures(conn, JOB, keys)
        for row in rows:
            if before.get(row.taxon_key) == row:
                report.unchanged += 1
            else:
                report.changed += 1
        report.extra["with_image"] += sum(row.status == "found" for row in rows)
    return report.finish(wikidata.http.calls + commons.http.calls - calls_before)


def _look_up(
    keys: list[int], wikidata: WikidataClient, commons: CommonsClient, options: ThumbnailOptions
) -> list[TaxonImageRow]:
    items = wikidata.images_for_gbif_keys(keys)
    files = sorted({item.file_name for item in items.values() if item.file_name})
    large = commons.image_infos(files, options.large_width, with_metadata=True) if files else {}
    small = commons.image_infos(files, options.small_width, with_metadata=False) if files else {}
    return [_row(key, items.get(key), large, small) for key in keys]


def _row(
    key: int,
    item: TaxonImage | None,
    large: dict[str, CommonsImage],
    small: dict[str, CommonsImage],
) -> TaxonImageRow:
    if item is None:
        return TaxonImageRow(taxon_key=key, status="no_item")
    if item.file_name is None:
        return TaxonImageRow(taxon_key=key, status="no_image", wikidata_item=item.item)
    image = large.get(item.file_name)
    if image is None or image.thumb_url is None:
        return TaxonImageRow(
            taxon_key=key, status="file_missing", wikidata_item=item.item, file_name=item.file_name
        )
    thumb = small.get(item.file_name)
    return TaxonImageRow(
        taxon_key=key,
        status="found",
        wikidata_item=item.item,
        file_name=item.file_name,
        thumb_small_url=thumb.thumb_url if thumb else None,
        thumb_small_width=thumb.thumb_width if thumb else None,
        thumb_large_url=image.thumb_url,
        thumb_large_width=image.thumb_width,
        original_url=image.original_url,
        file_page_url=image.file_page_url,
        license_short_name=image.license_short_name,
        license_url=image.license_url,
        artist=image.artist,
        attribution_required=image.attribution_required,
    )
