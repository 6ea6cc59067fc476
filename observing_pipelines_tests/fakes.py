"""Local stand-ins for GBIF and the Wikidata Query Service, on real loopback HTTP servers.

They answer in the shapes the real APIs use (`/v2/species/match` bodies with string keys,
SPARQL JSON results), including their failure modes: 429 with Retry-After, 5xx, HTML error
pages, truncated JSON and slowness. The taxonomy below is our own small test world (backbone keys
as GBIF has them); the recorded responses in ../shared/fixtures are used by the conformance
tests only and are never copied here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Entry = tuple[int, str, str]  # key, name, rank

PLANTAE = (6, "Plantae", "KINGDOM")
ANIMALIA = (1, "Animalia", "KINGDOM")
HELIANTHUS_LINEAGE: list[Entry] = [
    PLANTAE,
    (7707728, "Tracheophyta", "PHYLUM"),
    (220, "Magnoliopsida", "CLASS"),
    (414, "Asterales", "ORDER"),
    (3065, "Asteraceae", "FAMILY"),
    (3119134, "Helianthus", "GENUS"),
]
HELIANTHUS_ANNUUS: Entry = (9206251, "Helianthus annuus", "SPECIES")
SPHENOLOBUS_LINEAGE: list[Entry] = [
    PLANTAE,
    (9, "Marchantiophyta", "PHYLUM"),
    (326, "Jungermanniopsida", "CLASS"),
    (1054, "Jungermanniales", "ORDER"),
    (8233, "Anastrophyllaceae", "FAMILY"),
    (2689399, "Sphenolobus", "GENUS"),
]
SPHENOLOBUS_MINUTUS: Entry = (2689422, "Sphenolobus minutus", "SPECIES")
ANASTROPHYLLUM_MINUTUM: Entry = (4277323, "Anastrophyllum minutum", "SPECIES")
CALOPTERYX_LINEAGE: list[Entry] = [
    ANIMALIA,
    (54, "Arthropoda", "PHYLUM"),
    (216, "Insecta", "CLASS"),
    (789, "Odonata", "ORDER"),
    (5881, "Calopterygidae", "FAMILY"),
]
CALOPTERYX: Entry = (1427007, "Calopteryx", "GENUS")
SATYRIUM_ORCHID: Entry = (5307264, "Satyrium", "GENUS")
SATYRIUM_BUTTERFLY: Entry = (1927718, "Satyrium", "GENUS")
PANTHERA_LINEAGE: list[Entry] = [
    ANIMALIA,
    (44, "Chordata", "PHYLUM"),
    (359, "Mammalia", "CLASS"),
    (732, "Carnivora", "ORDER"),
    (9703, "Felidae", "FAMILY"),
    (2435194, "Panthera", "GENUS"),
]
PANTHERA_LEO: Entry = (5219404, "Panthera leo", "SPECIES")
PANTHERA_UNCIA: Entry = (5219436, "Panthera uncia", "SPECIES")


def usage(entry: Entry, *, status: str = "ACCEPTED", authorship: str = "") -> dict[str, Any]:
    key, name, rank = entry
    full = f"{name} {authorship}".strip()
    return {
        "key": str(key),
        "name": full,
        "canonicalName": name,
        "authorship": authorship,
        "rank": rank,
        "code": "BOTANICAL",
        "status": status,
    }


def match_body(
    match_type: str,
    matched: Entry | None = None,
    lineage: list[Entry] = (),  # type: ignore[assignment]
    *,
    accepted: Entry | None = None,
    confidence: int = 98,
) -> dict[str, Any]:
    """A `/v2/species/match` answer. `lineage` is the accepted usage's classification (root
    first); like GBIF, it repeats the accepted taxon at its tail."""
    diagnostics = {"matchType": match_type, "confidence": confidence, "issues": [], "timeTaken": 3}
    if matched is None:
        return {"diagnostics": diagnostics, "synonym": False}
    tail = accepted or matched
    body: dict[str, Any] = {
        "usage": usage(matched, status="SYNONYM" if accepted else "ACCEPTED"),
        "classification": [{"key": str(k), "name": n, "rank": r} for k, n, r in [*lineage, tail]],
        "diagnostics": diagnostics,
        "synonym": accepted is not None,
    }
    if accepted:
        body["acceptedUsage"] = usage(accepted)
    return body


NONE = match_body("NONE", confidence=100)


@dataclass
class FakeGbif:
    """GBIF's matcher: answers by (scientificName, kingdom) or usageKey; NONE otherwise."""

    server: HTTPServer
    by_name: dict[tuple[str, str | None], dict[str, Any]] = field(default_factory=dict)
    by_key: dict[int, dict[str, Any]] = field(default_factory=dict)
    scripted: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server.expect_request("/v2/species/match").respond_with_handler(self._handle)

    def add_name(self, name: str, body: dict[str, Any], kingdom: str | None = None) -> None:
        self.by_name[(name.casefold(), kingdom.casefold() if kingdom else None)] = body

    def add_key(self, key: int, body: dict[str, Any]) -> None:
        self.by_key[key] = body

    def script(self, subject: str, *responses: Response | float) -> None:
        """Answer the next requests for `subject` (a name or key) with these responses in turn;
        a float means: sleep that long, then answer normally."""
        self.scripted[subject.casefold()].extend(responses)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _handle(self, request: Request) -> Response:
        args = dict(request.args)
        with self._lock:
            self.requests.append(args | {"_user_agent": request.headers.get("User-Agent", "")})
            subject = (args.get("scientificName") or args.get("usageKey") or "").casefold()
            queue = self.scripted.get(subject)
            scripted = queue.popleft() if queue else None
        if isinstance(scripted, Response):
            return scripted
        if isinstance(scripted, float):
            time.sleep(scripted)
        if "usageKey" in args:
            body = self.by_key.get(int(args["usageKey"]))
            if body is None:
                return Response(
                    '{"message":"Not found"}', status=404, content_type="application/json"
                )
        else:
            kingdom = args.get("kingdom")
            body = self.by_name.get(
                (args["scientificName"].casefold(), kingdom.casefold() if kingdom else None)
            )
            if body is None:
                body = self.by_name.get((args["scientificName"].casefold(), None), NONE)
        return json_response(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


def html_error(status: int = 503) -> Response:
    page = (
        "<html><head><title>503 Backend fetch failed</title></head>"
        "<body><h1>Guru Meditation:</h1></body></html>"
    )
    return Response(page, status=status, content_type="text/html")


@dataclass
class FakeWikidata:
    """WDQS: answers the batched P3151 -> P846 and QID -> P846 queries from two maps."""

    server: HTTPServer
    inaturalist: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request("/sparql", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        query = request.form.get("query", "")
        self.queries.append(query)
        rows = []
        if "wdt:P3151" in query:
            for inat in re.findall(r'"([0-9]+)"', query):
                if inat in self.inaturalist:
                    rows.append(
                        {
                            "inat": {"type": "literal", "value": inat},
                            "gbif": {"type": "literal", "value": str(self.inaturalist[inat])},
                        }
                    )
        else:
            for qid in re.findall(r"wd:(Q[0-9]+)", query):
                if qid in self.items:
                    rows.append(
                        {
                            "item": {
                                "type": "uri",
                                "value": f"http://www.wikidata.org/entity/{qid}",
                            },
                            "gbif": {"type": "literal", "value": str(self.items[qid])},
                        }
                    )
        variables = ["inat", "gbif"] if "wdt:P3151" in query else ["item", "gbif"]
        return json_response({"head": {"vars": variables}, "results": {"bindings": rows}})
