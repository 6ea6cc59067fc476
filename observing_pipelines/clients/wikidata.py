"""Wikidata Query Service: cross-walks from iNaturalist ids and QIDs to GBIF keys.

Today's resolver sends one `LIMIT 1` query per id; here one query answers a whole batch through
`VALUES`, which WDQS' per-client time budget (60 s of query time a minute) favours. Ids reach the
query text only after validation (`\\d+` and `Q\\d+`), so nothing a user typed is interpolated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from observing_pipelines.clients.http import MalformedResponseError, PoliteHttpClient
from observing_pipelines.text import storable

SERVICE = "wikidata"
BATCH_SIZE = 100
_INATURALIST_ID = re.compile(r"[0-9]{1,12}")
_QID = re.compile(r"Q[0-9]{1,12}")
_ENTITY_PREFIX = "http://www.wikidata.org/entity/"


def parse_bindings(
    body: Any, variables: Sequence[str], optional: Sequence[str] = ()
) -> list[dict[str, str]]:
    """SPARQL JSON results as plain rows: rows missing a required variable are dropped, unbound
    optional variables are left out of the row."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), dict):
        raise MalformedResponseError(SERVICE, "SPARQL answer has no results object")
    bindings = body["results"].get("bindings")
    if not isinstance(bindings, list):
        raise MalformedResponseError(SERVICE, "SPARQL answer has no results.bindings list")
    rows = []
    for binding in bindings:
        if not isinstance(binding, dict):
            continue
        row = {}
        for variable in variables:
            cell = binding.get(variable)
            if not isinstance(cell, dict) or not isinstance(cell.get("value"), str):
                break
            row[variable] = storable(cell["value"])
        else:
            for variable in optional:
                cell = binding.get(variable)
                if isinstance(cell, dict) and isinstance(cell.get("value"), str):
                    row[variable] = storable(cell["value"])
            rows.append(row)
    return rows


def _smallest_gbif_key(rows: Iterable[dict[str, str]], id_of: str) -> dict[str, int]:
    """Map each id to its GBIF key; an item with several P846 values keeps the smallest."""
    keys: dict[str, int] = {}
    for row in rows:
        gbif = row["gbif"].strip()
        if not gbif.isdigit():
            continue
        ident = row[id_of].removeprefix(_ENTITY_PREFIX)
        keys[ident] = min(keys.get(ident, int(gbif)), int(gbif))
    return keys


@dataclass(frozen=True)
class TaxonImage:
    """The Wikidata item holding a GBIF key, and its best P18 image (None: no image)."""

    item: str
    file_name: str | None


_RANK_ORDER = {
    "http://wikiba.se/ontology#PreferredRank": 0,
    "http://wikiba.se/ontology#NormalRank": 1,
}
_FILE_PATH_PREFIX = "http://commons.wikimedia.org/wiki/Special:FilePath/"


def pick_images(rows: Iterable[dict[str, str]]) -> dict[int, TaxonImage]:
    """Per GBIF key: the item, and its image of best rank (preferred, then normal; deprecated
    never), ties broken by file name so reruns pick the same file."""
    best: dict[int, tuple[tuple[int, str], TaxonImage]] = {}
    for row in rows:
        gbif = row.get("gbif", "").strip()
        if not gbif.isdigit():
            continue
        item = row["item"].removeprefix(_ENTITY_PREFIX)
        image = row.get("image", "")
        rank = _RANK_ORDER.get(row.get("rank", ""))
        if image.startswith(_FILE_PATH_PREFIX) and rank is not None:
            name = storable(unquote(image.removeprefix(_FILE_PATH_PREFIX)).replace("_", " "))
            candidate = ((rank, name), TaxonImage(item, name))
        else:
            candidate = ((9, ""), TaxonImage(item, None))
        key = int(gbif)
        if key not in best or candidate[0] < best[key][0]:
            best[key] = candidate
    return {key: image for key, (_, image) in best.items()}


class WikidataClient:
    def __init__(self, http: PoliteHttpClient) -> None:
        self.http = http

    def gbif_keys_for_inaturalist(self, taxon_ids: Sequence[str]) -> dict[str, int]:
        """iNaturalist taxon id (P3151) -> GBIF taxon id (P846), for the ids Wikidata knows."""
        valid = sorted({i for i in taxon_ids if _INATURALIST_ID.fullmatch(i)})
        rows = self._select_in_batches(
            valid,
            lambda values: " ".join(f'"{i}"' for i in values),
            "SELECT ?inat ?gbif WHERE {{ VALUES ?inat {{ {} }} "
            "?item wdt:P3151 ?inat . ?item wdt:P846 ?gbif . }}",
            ("inat", "gbif"),
        )
        return _smallest_gbif_key(rows, "inat")

    def gbif_keys_for_items(self, qids: Sequence[str]) -> dict[str, int]:
        """Wikidata item (QID) -> GBIF taxon id (P846), for the items that have one."""
        valid = sorted({q for q in qids if _QID.fullmatch(q)})
        rows = self._select_in_batches(
            valid,
            lambda values: " ".join(f"wd:{q}" for q in values),
            "SELECT ?item ?gbif WHERE {{ VALUES ?item {{ {} }} ?item wdt:P846 ?gbif . }}",
            ("item", "gbif"),
        )
        return _smallest_gbif_key(rows, "item")

    def images_for_gbif_keys(self, keys: Sequence[int]) -> dict[int, TaxonImage]:
        """GBIF key (P846) -> item and P18 image, for the keys Wikidata has an item for."""
        rows = self._select_in_batches(
            sorted(set(keys)),
            lambda values: " ".join(f'"{k}"' for k in values),
            "SELECT ?gbif ?item ?image ?rank WHERE {{ VALUES ?gbif {{ {} }} "
            "?item wdt:P846 ?gbif . OPTIONAL {{ ?item p:P18 ?statement . "
            "?statement ps:P18 ?image ; wikibase:rank ?rank . "
            "FILTER(?rank != wikibase:DeprecatedRank) }} }}",
            ("gbif", "item"),
            optional=("image", "rank"),
        )
        return pick_images(rows)

    def _select_in_batches(
        self,
        values: Sequence[Any],
        render: Callable[[Sequence[Any]], str],
        template: str,
        variables: Sequence[str],
        optional: Sequence[str] = (),
    ) -> list[dict[str, str]]:
        """Run `template` (one `{}` for the VALUES list) over `values`, `BATCH_SIZE` at a time."""
        rows: list[dict[str, str]] = []
        for start in range(0, len(values), BATCH_SIZE):
            query = template.format(render(values[start : start + BATCH_SIZE]))
            rows.extend(self._select(query, variables, optional))
        return rows

    def _select(
        self, query: str, variables: Sequence[str], optional: Sequence[str] = ()
    ) -> list[dict[str, str]]:
        body = self.http.request_json(
            "POST",
            "",
            data={"query": query},
            headers={"Accept": "application/sparql-results+json"},
        )
        return parse_bindings(body, variables, optional)
