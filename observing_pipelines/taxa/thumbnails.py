"""Taxon thumbnails: Wikidata's image (P18) of the item holding the GBIF key, sized by Commons.

Per chunk of taxa (new ones first, then the stalest): one SPARQL query finds the items and
their best-ranked P18 (preferred, then normal; never deprecated), then Commons `imageinfo` gives
thumbnail URLs at the two standard widths the app shows (search results and detail page), the
original, licence, artist and file page. One row per taxon; a taxon without item or image is
recorded as such and looked at again after `recheck_missing`, not every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Literal

from observing_pipelines import inputs
from observing_pipelines.clients.commons import CommonsClient, CommonsImage
from observing_pipelines.clients.wikidata import TaxonImage, WikidataClient
from observing_pipelines.db.item_failures import PriorFailure
from observing_pipelines.db.taxa import DueTaxon
from observing_pipelines.taxa.backoff import Backoff
from observing_pipelines.taxa.enrichment import (
    Failed,
    JobOptions,
    JobSpec,
    TableEnrichment,
    guarded,
)
from observing_pipelines.taxa.report import Value

SPEC = JobSpec(
    name="thumbnails",
    cron="30 3 * * *",
    retry=Backoff(first=timedelta(hours=6), cap=timedelta(days=7)),
    recheck=timedelta(days=30),
    recheck_missing=timedelta(days=14),
)


class ThumbnailsOptions(JobOptions):
    limit: inputs.Limit = 500
    """Taxa per run (new first, then the stalest)."""
    small_width: inputs.CommonsWidth = 120
    """Search-result thumbnail width (the app shows 100 px); a Commons standard width."""
    large_width: inputs.CommonsWidth = 960
    """Detail-page thumbnail width (the app shows 600 px); a Commons standard width."""


@dataclass(frozen=True)
class TaxonImageRow:
    """One row of `pipelines.taxon_images` (without its timestamps)."""

    taxon_key: int
    status: Literal["found", "no_item", "no_image", "file_missing"]
    wikidata_item: str | None = None
    file_name: str | None = None
    thumb_small_url: str | None = None
    thumb_small_width: int | None = None
    thumb_large_url: str | None = None
    thumb_large_width: int | None = None
    original_url: str | None = None
    file_page_url: str | None = None
    license_short_name: str | None = None
    license_url: str | None = None
    artist: str | None = None
    attribution_required: bool | None = None

    @property
    def found(self) -> bool:
        return self.status == "found"


class Thumbnails(TableEnrichment[TaxonImageRow]):
    spec = SPEC
    table = "taxon_images"
    row_type = TaxonImageRow
    counters = ("with_image",)

    def __init__(
        self, wikidata: WikidataClient, commons: CommonsClient, options: ThumbnailsOptions
    ) -> None:
        super().__init__(wikidata, commons)
        self.wikidata, self.commons, self.options = wikidata, commons, options

    def look_up(self, item: DueTaxon, prior: PriorFailure | None) -> TaxonImageRow:
        items, large, small = self._images([item.taxon_key])
        return _row(item.taxon_key, items.get(item.taxon_key), large, small)

    def look_up_chunk(
        self, chunk: Sequence[DueTaxon], priors: Mapping[int, PriorFailure], pool: Executor
    ) -> list[TaxonImageRow | Failed]:
        """One SPARQL query and two Commons requests for the whole chunk (WDQS and Commons
        ask batch clients for few requests, one at a time); if they fail, every taxon of the
        chunk has failed, and a row that cannot be made fails alone."""
        keys = [taxon.taxon_key for taxon in chunk]
        images = guarded(lambda: self._images(keys), f"{len(keys)} taxa")
        if isinstance(images, Failed):
            return [images] * len(keys)
        items, large, small = images
        return [
            guarded(partial(_row, key, items.get(key), large, small), f"taxon {key}")
            for key in keys
        ]

    def counts(self, row: TaxonImageRow) -> Iterable[str]:
        return ("with_image",) if row.found else ()

    def describe_change(self, row: TaxonImageRow) -> dict[str, Value]:
        """What the asset page shows of a changed row, its picture included."""
        return {
            "taxon_key": row.taxon_key,
            "status": row.status,
            "title": row.file_name,
            "licence": row.license_short_name,
            "artist": row.artist,
            "thumbnail": row.thumb_small_url,
            "file_page": row.file_page_url,
        }

    def _images(
        self, keys: list[int]
    ) -> tuple[dict[int, TaxonImage], dict[str, CommonsImage], dict[str, CommonsImage]]:
        items = self.wikidata.images_for_gbif_keys(keys)
        files = sorted({item.file_name for item in items.values() if item.file_name})
        if not files:
            return items, {}, {}
        large = self.commons.image_infos(files, self.options.large_width, with_metadata=True)
        small = self.commons.image_infos(files, self.options.small_width, with_metadata=False)
        return items, large, small


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
