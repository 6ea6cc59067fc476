"""Local stand-ins for GBIF and the Wikidata Query Service, on real loopback HTTP servers.

They answer in the shapes the real APIs use (`/v2/species/match` bodies with string keys,
SPARQL JSON results), including their failure modes: 429 with Retry-After, 5xx, HTML error
pages, truncated JSON and slowness. The taxonomy below is our own small test world (backbone keys
as GBIF has them); the recorded responses in ../shared/fixtures are used by the conformance
tests only and are never copied here.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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

    red_list: dict[int, dict[str, Any]] = field(default_factory=dict)
    vernacular_names: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """`/v1/species/{key}/vernacularNames` entries by key, served in pages as GBIF does."""
    own_names: dict[int, str] = field(default_factory=dict)
    """The `vernacularName` of `/v1/species/{key}`."""
    batch_refusal: Response | None = None
    """The answer to every batch POST, as a GBIF without the batch form gives (e.g. 405)."""
    batch_mangle: Callable[[list[Any]], Any] | None = None
    """Rewrites a batch's answers before they are sent (reorder, drop, replace)."""
    batches: list[int] = field(default_factory=list)
    """The size of each batch POST served."""
    http_requests: int = 0
    matched_at: list[tuple[float, int]] = field(default_factory=list)
    """When each matcher request arrived (`time.monotonic()`) and how many names it asked."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server.expect_request("/v2/species/match").respond_with_handler(self._handle)
        self.server.expect_request(
            re.compile(r"/v1/species/[0-9]+/iucnRedListCategory")
        ).respond_with_handler(self._red_list)
        self.server.expect_request(
            re.compile(r"/v1/species/[0-9]+/vernacularNames")
        ).respond_with_handler(self._vernacular_names)
        self.server.expect_request(re.compile(r"/v1/species/[0-9]+")).respond_with_handler(
            self._species
        )

    def _red_list(self, request: Request) -> Response:
        self._log_request({"path": request.path})
        return json_response(self.red_list.get(int(request.path.split("/")[3]), {}))

    def _vernacular_names(self, request: Request) -> Response:
        self._log_request({"path": request.path} | dict(request.args))
        key = int(request.path.split("/")[3])
        scripted = self._next_scripted(f"names {key}")
        if isinstance(scripted, Response):
            return scripted
        offset, limit = int(request.args.get("offset", 0)), int(request.args.get("limit", 20))
        names = self.vernacular_names.get(key, [])
        page = names[offset : offset + limit]
        end = offset + limit >= len(names)
        return json_response(
            {"offset": offset, "limit": limit, "endOfRecords": end, "results": page}
        )

    def _species(self, request: Request) -> Response:
        self._log_request({"path": request.path})
        key = int(request.path.split("/")[3])
        scripted = self._next_scripted(f"species {key}")
        if isinstance(scripted, Response):
            return scripted
        body: dict[str, Any] = {"key": key, "taxonomicStatus": "ACCEPTED"}
        if key in self.own_names:
            body["vernacularName"] = self.own_names[key]
        return json_response(body)

    def _log_request(self, entry: dict[str, str]) -> None:
        with self._lock:
            self.http_requests += 1
            self.requests.append(entry)

    def _next_scripted(self, subject: str) -> Response | None:
        """The next scripted answer for `subject`; a scripted delay is slept here."""
        with self._lock:
            queue = self.scripted.get(subject.casefold())
            scripted = queue.popleft() if queue else None
        if isinstance(scripted, float):
            time.sleep(scripted)
            return None
        return scripted

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
        """HTTP requests served (a batch is one)."""
        return self.http_requests

    def _handle(self, request: Request) -> Response:
        if request.method == "POST":
            return self._handle_batch(request)
        args = dict(request.args)
        with self._lock:
            self.http_requests += 1
            self.matched_at.append((time.monotonic(), 1))
            self.requests.append(args | {"_user_agent": request.headers.get("User-Agent", "")})
        return self._answer(args, in_batch=False)

    def _handle_batch(self, request: Request) -> Response:
        """The POST form: a JSON array of queries, answered with the GET form's answers in an
        array, in order. A query whose scripted answer is a response makes it the answer to
        the whole request; `batch_refusal` and `batch_mangle` play a GBIF without the batch
        form, or one whose answer does not line up."""
        queries = request.get_json(silent=True)
        user_agent = request.headers.get("User-Agent", "")
        with self._lock:
            self.http_requests += 1
            self.batches.append(len(queries) if isinstance(queries, list) else 0)
            self.matched_at.append((time.monotonic(), self.batches[-1]))
        if self.batch_refusal is not None:
            return self.batch_refusal
        if not isinstance(queries, list):
            return json_response({"message": "expected an array"}, 400)
        answers = []
        for query in queries:
            args = {key: str(value) for key, value in query.items()}
            with self._lock:
                self.requests.append(args | {"_user_agent": user_agent, "_batch": "true"})
            answer = self._answer(args, in_batch=True)
            if answer.status_code != 200:
                return answer
            answers.append(json.loads(answer.get_data()))
        if self.batch_mangle is not None:
            answers = self.batch_mangle(answers)
        return json_response(answers)

    def _answer(self, args: dict[str, str], *, in_batch: bool) -> Response:
        """The answer to one query. Inside a batch a key GBIF does not know is no match, as
        a 404 is from the GET form (a batch cannot answer one of its entries with a 404)."""
        scripted = self._next_scripted(args.get("scientificName") or args.get("usageKey") or "")
        if scripted is not None:
            return scripted
        if "usageKey" in args:
            body = self.by_key.get(int(args["usageKey"]))
            if body is None:
                if in_batch:  # what the GET form's 404 means: no match, nothing more
                    return json_response({"diagnostics": {"matchType": "NONE"}})
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
    """WDQS: answers the batched cross-walk and image queries from three maps."""

    server: HTTPServer
    inaturalist: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    images: dict[int, tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    """GBIF key -> (QID, [(file name, rank: preferred|normal|deprecated)])."""
    queries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request("/sparql", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        query = request.form.get("query", "")
        self.queries.append(query)
        if "p:P18" in query:
            return self._results(["gbif", "item", "image", "rank"], self._image_rows(query))
        if "wdt:P3151" in query:
            rows = [
                {"inat": _literal(i), "gbif": _literal(str(self.inaturalist[i]))}
                for i in re.findall(r'"([0-9]+)"', query)
                if i in self.inaturalist
            ]
            return self._results(["inat", "gbif"], rows)
        rows = [
            {"item": _entity(q), "gbif": _literal(str(self.items[q]))}
            for q in re.findall(r"wd:(Q[0-9]+)", query)
            if q in self.items
        ]
        return self._results(["item", "gbif"], rows)

    def _image_rows(self, query: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for key in re.findall(r'"([0-9]+)"', query):
            if int(key) not in self.images:
                continue
            qid, files = self.images[int(key)]
            base = {"gbif": _literal(key), "item": _entity(qid)}
            kept = [(f, r) for f, r in files if r != "deprecated"]
            rows.extend(
                base
                | {
                    "image": {
                        "type": "uri",
                        "value": COMMONS_FILE_PATH + quote(f.replace(" ", "_")),
                    },
                    "rank": {"type": "uri", "value": f"http://wikiba.se/ontology#{r.title()}Rank"},
                }
                for f, r in kept
            )
            if not kept:
                rows.append(base)
        return rows

    @staticmethod
    def _results(variables: list[str], rows: list[dict[str, Any]]) -> Response:
        return json_response({"head": {"vars": variables}, "results": {"bindings": rows}})


COMMONS_FILE_PATH = "http://commons.wikimedia.org/wiki/Special:FilePath/"


def _literal(value: str) -> dict[str, str]:
    return {"type": "literal", "value": value}


def _entity(qid: str) -> dict[str, str]:
    return {"type": "uri", "value": f"http://www.wikidata.org/entity/{qid}"}


@dataclass
class CommonsFile:
    license: str = "CC BY-SA 4.0"
    license_url: str | None = "https://creativecommons.org/licenses/by-sa/4.0"
    artist_html: str = (
        '<a href="//commons.wikimedia.org/wiki/User:Someone">Some One</a> &amp; friends'
    )
    attribution_required: str = "true"
    width: int = 4000


@dataclass
class FakeCommons:
    """The Commons Action API's `prop=imageinfo` (formatversion=2), thumbnails built by the
    documented upload.wikimedia.org rule."""

    server: HTTPServer
    files: dict[str, CommonsFile] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request("/w/api.php").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        args = dict(request.args)
        self.requests.append(args)
        width = int(args["iiurlwidth"])
        pages = []
        for title in args["titles"].split("|"):
            name = title.removeprefix("File:")
            file = self.files.get(name)
            if file is None:
                pages.append({"ns": 6, "title": title, "missing": True})
                continue
            slug = name.replace(" ", "_")
            digest = hashlib.md5(slug.encode()).hexdigest()
            info: dict[str, Any] = {
                "url": f"https://upload.wikimedia.org/wikipedia/commons/{digest[0]}/{digest[:2]}/{slug}",
                "thumburl": f"https://upload.wikimedia.org/wikipedia/commons/thumb/{digest[0]}/{digest[:2]}/{slug}/{width}px-{slug}",
                "thumbwidth": width,
                "thumbheight": width * 3 // 4,
                "descriptionurl": f"https://commons.wikimedia.org/wiki/File:{slug}",
            }
            if "extmetadata" in args.get("iiprop", ""):
                meta = {
                    "LicenseShortName": file.license,
                    "Artist": file.artist_html,
                    "AttributionRequired": file.attribution_required,
                }
                if file.license_url:
                    meta["LicenseUrl"] = file.license_url
                info["extmetadata"] = {
                    k: {"value": v, "source": "commons-desc-page"} for k, v in meta.items()
                }
            pages.append(
                {
                    "pageid": abs(hash(name)) % 10**8,
                    "ns": 6,
                    "title": title,
                    "imagerepository": "local",
                    "imageinfo": [info],
                }
            )
        return json_response({"batchcomplete": True, "query": {"pages": pages}})


@dataclass
class FakeIucn:
    """IUCN Red List v4: species by genus/species (no infraspecific taxa) and assessments by id,
    behind a token."""

    server: HTTPServer
    token: str
    taxa: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    assessments: dict[int, dict[str, Any]] = field(default_factory=dict)
    authorizations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(r"/api/v4/.*")).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.authorizations.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != self.token:
            return json_response({"error": "Unauthorized"}, 401)
        if request.path == "/api/v4/taxa/scientific_name":
            if request.args.get("infra_name"):
                body = None
            else:
                body = self.taxa.get((request.args["genus_name"], request.args["species_name"]))
        else:
            body = self.assessments.get(int(request.path.rsplit("/", 1)[-1]))
        return json_response(body) if body else json_response({"error": "Not found"}, 404)


def iucn_taxon(
    sis_id: int,
    name: str,
    assessments: list[tuple[int, str, bool, str]],
    common_language: Any = "eng",
) -> dict[str, Any]:
    """A `taxa/scientific_name` answer; assessments are (id, year, latest, scope code)."""
    genus, species = name.split()[:2]
    return {
        "taxon": {
            "sis_id": sis_id,
            "scientific_name": name,
            "genus_name": genus,
            "species_name": species,
            "common_names": [
                {"main": True, "name": f"Common {species}", "language": common_language}
            ],
        },
        "assessments": [
            {
                "assessment_id": aid,
                "year_published": year,
                "latest": latest,
                "sis_taxon_id": sis_id,
                "scopes": [
                    {"code": scope, "description": {"en": "Global" if scope == "1" else "Europe"}}
                ],
            }
            for aid, year, latest, scope in assessments
        ],
    }


def iucn_assessment(assessment_id: int, category: str, year: str) -> dict[str, Any]:
    return {
        "assessment_id": assessment_id,
        "year_published": year,
        "latest": True,
        "red_list_category": {"code": category, "version": "3.1", "description": {"en": category}},
        "scopes": [{"code": "1", "description": {"en": "Global"}}],
    }


@dataclass
class PacedGbif(FakeGbif):
    """FakeGbif that answers each request only while `gate` is open, and `delay` seconds late.

    Slow answers keep a pass running long enough to kill it, or to restart its database, in the
    middle; closing the gate holds every answer (and so the pass) still at a chosen moment.
    """

    delay: float = 0.0
    name_cost: float = 0.0
    """Seconds more a batch takes per name in it (the server's own work)."""

    def __post_init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.answering = 0
        """Requests past the gate and not yet answered."""
        super().__post_init__()

    def _handle(self, request: Request) -> Response:
        if not self.gate.wait(timeout=60):
            return Response("gate left closed", status=503)
        with self._lock:
            self.answering += 1
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.name_cost and request.method == "POST":
                time.sleep(self.name_cost * len(request.get_json(silent=True) or ()))
            return super()._handle(request)
        finally:
            with self._lock:
                self.answering -= 1

    def hold(self, settle_seconds: float = 0.3, timeout: float = 30.0) -> None:
        """Close the gate and wait until every answer already past it has been sent, plus
        `settle_seconds` for the client to act on them."""
        self.gate.clear()
        deadline = time.monotonic() + timeout
        while self.answering and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle_seconds)


FAULT_KINDS = ("429", "500", "timeout", "html", "truncated")


@dataclass
class FaultyGbif(FakeGbif):
    """FakeGbif answering a seeded share of requests with one of GBIF's failure modes.

    The choice is a hash of (seed, subject, kingdom, how often that question was asked before),
    so it does not depend on thread scheduling: the same data and seed always fail the same
    way. `served` logs (subject, kingdom, "ok" or the fault kind) per request; `timeout` sleeps
    `timeout_sleep` seconds, longer than the client waits, then answers.
    """

    fault_rate: float = 0.0
    seed: int = 0
    timeout_sleep: float = 1.0
    slow_retry_after_share: float = 0.25
    served: list[tuple[str, str | None, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._asked: dict[tuple[str, str | None], int] = defaultdict(int)
        super().__post_init__()

    def fault_for(self, subject: str, kingdom: str | None, nth: int) -> str | None:
        digest = hashlib.sha256(f"{self.seed}|{subject}|{kingdom}|{nth}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.fault_rate:
            return None
        return FAULT_KINDS[digest[8] % len(FAULT_KINDS)]

    def _handle(self, request: Request) -> Response:
        """A GET's fault is its question's; a batch's is its first question's, for the whole
        request (a server fails a request, not an entry of it)."""
        args: Mapping[str, str] = request.args
        if request.method == "POST":
            queries = request.get_json(silent=True) or [{}]
            args = {key: str(value) for key, value in queries[0].items()}
        subject = args.get("scientificName") or args.get("usageKey") or ""
        kingdom = args.get("kingdom")
        with self._lock:
            nth = self._asked[(subject, kingdom)]
            self._asked[(subject, kingdom)] += 1
            fault = self.fault_for(subject, kingdom, nth)
            self.served.append((subject, kingdom, fault or "ok"))
        if fault == "429":
            digest = hashlib.sha256(f"{self.seed}|retry|{subject}|{nth}".encode()).digest()
            slow = digest[0] / 256 < self.slow_retry_after_share
            return json_response(["slow down"], 429, {"Retry-After": "1" if slow else "0"})
        if fault == "500":
            return json_response({"error": "boom"}, 500)
        if fault == "html":
            return html_error(503)
        if fault == "truncated":
            return Response('{"diagnostics": {"matchTy', content_type="application/json")
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
        return super()._handle(request)
