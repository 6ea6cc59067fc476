"""Wikimedia Commons `imageinfo`: thumbnail URLs, licence and attribution of image files.

Commons now serves thumbnails only at standard widths (phab T414805); other widths get an edge
429. `STANDARD_WIDTHS` is that list, and the client refuses anything else before calling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from observing_pipelines.clients.http import MalformedResponseError, PoliteHttpClient
from observing_pipelines.text import storable_or_none

SERVICE = "commons"
STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
TITLES_PER_REQUEST = 50  # the Action API's limit for titles= without bot rights
EXTMETADATA = "License|LicenseShortName|LicenseUrl|Artist|AttributionRequired|UsageTerms"


@dataclass(frozen=True)
class CommonsImage:
    file_name: str
    thumb_url: str | None
    thumb_width: int | None
    original_url: str | None
    file_page_url: str | None
    license_short_name: str | None
    license_url: str | None
    artist: str | None
    attribution_required: bool | None


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(value: str | None) -> str | None:
    """Visible text of an HTML fragment (Commons' `Artist` is HTML), whitespace collapsed."""
    if not value:
        return None
    parser = _TextOnly()
    parser.feed(value)
    parser.close()
    return storable_or_none("".join(parser.parts))


def file_title(file_name: str) -> str:
    return f"File:{file_name.replace('_', ' ')}"


def _meta(extmetadata: dict[str, Any], key: str) -> str | None:
    entry = extmetadata.get(key)
    value = entry.get("value") if isinstance(entry, dict) else None
    return storable_or_none(value)


def parse_imageinfo(body: Any) -> dict[str, CommonsImage]:
    """Images by title (`File:Name with spaces`) from an `action=query&prop=imageinfo` answer.

    Accepts `formatversion` 1 (pages keyed by id) and 2 (a list). A page without `imageinfo`
    (a missing file) is simply absent from the result.
    """
    if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
        raise MalformedResponseError(SERVICE, "imageinfo answer has no query object")
    pages = body["query"].get("pages")
    if isinstance(pages, dict):
        pages = list(pages.values())
    if not isinstance(pages, list):
        raise MalformedResponseError(SERVICE, "imageinfo answer has no pages")
    images = {}
    for page in pages:
        if not isinstance(page, dict) or not isinstance(page.get("title"), str):
            continue
        infos = page.get("imageinfo")
        info = (
            infos[0] if isinstance(infos, list) and infos and isinstance(infos[0], dict) else None
        )
        if info is None:
            continue
        raw_metadata = info.get("extmetadata")
        extmetadata = raw_metadata if isinstance(raw_metadata, dict) else {}
        attribution = _meta(extmetadata, "AttributionRequired")
        width = info.get("thumbwidth")
        images[page["title"]] = CommonsImage(
            file_name=page["title"].removeprefix("File:"),
            thumb_url=storable_or_none(info.get("thumburl")),
            thumb_width=width if isinstance(width, int) else None,
            original_url=storable_or_none(info.get("url")),
            file_page_url=storable_or_none(info.get("descriptionurl")),
            license_short_name=_meta(extmetadata, "LicenseShortName"),
            license_url=_meta(extmetadata, "LicenseUrl"),
            artist=strip_html(_meta(extmetadata, "Artist")),
            attribution_required=None if attribution is None else attribution.lower() == "true",
        )
    return images


def busy_signal(body: Any) -> str | None:
    """MediaWiki's "busy, come back later" errors arrive with HTTP 200 (`maxlag`, rate limits)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") not in ("maxlag", "ratelimited"):
        return None
    return f"{error['code']}: {error.get('info', 'try again later')}"


class CommonsClient:
    def __init__(self, http: PoliteHttpClient) -> None:
        self.http = http

    def image_infos(
        self, file_names: Sequence[str], width: int, *, with_metadata: bool
    ) -> dict[str, CommonsImage]:
        """`imageinfo` for these files with a thumbnail `width` px wide, by file name as given.

        Titles go 50 to a request; `maxlag=5` lets Commons shed us first when it is busy.
        """
        if width not in STANDARD_WIDTHS:
            raise ValueError(
                f"{width}px is not a standard Commons thumbnail width {STANDARD_WIDTHS}"
            )
        found: dict[str, CommonsImage] = {}
        unique = sorted(set(file_names))
        for start in range(0, len(unique), TITLES_PER_REQUEST):
            batch = unique[start : start + TITLES_PER_REQUEST]
            params = {
                "action": "query",
                "format": "json",
                "formatversion": 2,
                "prop": "imageinfo",
                "titles": "|".join(file_title(name) for name in batch),
                "iiprop": "url|extmetadata|size|mime" if with_metadata else "url",
                "iiurlwidth": width,
                "maxlag": 5,
            }
            if with_metadata:
                params["iiextmetadatafilter"] = EXTMETADATA
            body = self.http.request_json("GET", "", params=params, busy_signal=busy_signal)
            by_title = parse_imageinfo(body)
            for name in batch:
                if (image := by_title.get(file_title(name))) is not None:
                    found[name] = image
        return found
