"""vernacular_names: every GBIF vernacular name of a taxon kept, the appview's choice shown in
`ingester.taxa.vernacular_name`, failures recorded per taxon."""

from __future__ import annotations

import json

import pytest
from werkzeug import Response

from observing_pipelines.clients.gbif import VernacularName, parse_vernacular_page
from observing_pipelines.clients.http import MalformedResponseError
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.vernacular_names import (
    VernacularNames,
    VernacularNamesOptions,
    preferred_name,
)
from observing_pipelines_tests.fakes import html_error, json_response
from observing_pipelines_tests.test_thumbnails import cache_taxa, failures

SPARROW, NAMELESS, OAK = 5231190, 5136034, 2878266


def names(*entries: tuple[str, str]) -> list[dict[str, object]]:
    return [
        {"taxonKey": 1, "vernacularName": name, "language": language, "source": "Catalogue of Life"}
        for name, language in entries
    ]


def sync(conn, gbif_client, **options):
    """One vernacular_names pass, as its asset runs it."""
    config = VernacularNamesOptions(**options)
    return enrichment.run(conn, VernacularNames(gbif_client), config.limit, concurrency=4)


def stored(conn):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT v.taxon_key, v.preferred_name, jsonb_array_length(v.names), t.vernacular_name "
            "FROM pipelines.taxon_vernacular_names v "
            "JOIN ingester.taxa t USING (taxon_key) ORDER BY 1"
        )
        return {row[0]: row[1:] for row in cur.fetchall()}


@pytest.fixture
def taxa(conn, fake_gbif):
    cache_taxa(conn, (SPARROW, "Passer domesticus"), (NAMELESS, "Nullus ignotus"), (OAK, "Quercus"))
    # 130 names: two pages of GBIF's 100. English appears only on the second.
    fake_gbif.vernacular_names[SPARROW] = names(
        *[(f"Spatz {n}", "deu") for n in range(120)], ("house sparrow", "eng"), ("moineau", "fra")
    ) + names(*[(f"pardal {n}", "por") for n in range(8)])
    fake_gbif.vernacular_names[OAK] = names(("Blau-Eiche", "deu"), ("blue oak", "eng"))
    fake_gbif.own_names[OAK] = "blue oak (GBIF's own)"
    return fake_gbif


def test_first_run_keeps_every_name_and_fills_the_apps_column(conn, taxa, gbif_client):
    report = sync(conn, gbif_client)
    assert stored(conn) == {
        NAMELESS: (None, 0, None),
        OAK: ("blue oak (GBIF's own)", 2, "blue oak (GBIF's own)"),
        SPARROW: ("house sparrow", 130, "house sparrow"),
    }
    assert report.metadata() | {"seconds": 0} == {
        "taxa_seen": 3,
        "taxa_changed": 3,
        "taxa_unchanged": 0,
        "taxa_failed": 0,
        "http_calls": 7,  # a species call each, two name pages for the sparrow, one for the others
        "seconds": 0,
        "with_name": 2,
    }
    pages = [r for r in taxa.requests if r["path"] == f"/v1/species/{SPARROW}/vernacularNames"]
    assert [(p["offset"], p["limit"]) for p in pages] == [("0", "100"), ("100", "100")]
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT names -> 0 FROM pipelines.taxon_vernacular_names WHERE taxon_key = %s", (OAK,)
        )
        assert cur.fetchone()[0] == {
            "name": "Blau-Eiche",
            "language": "deu",
            "source": "Catalogue of Life",
            "country": None,
            "preferred": False,
        }


def test_second_run_makes_no_call_and_a_due_recheck_changes_nothing(conn, taxa, gbif_client):
    sync(conn, gbif_client)
    calls = taxa.calls
    again = sync(conn, gbif_client)
    assert (again.seen, taxa.calls - calls) == (0, 0)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.taxon_vernacular_names SET next_check_at = now()")
    recheck = sync(conn, gbif_client)
    assert (recheck.seen, recheck.changed, recheck.unchanged) == (3, 0, 3)


def test_a_name_that_changes_upstream_is_rewritten(conn, taxa, gbif_client):
    sync(conn, gbif_client)
    taxa.vernacular_names[SPARROW] = names(("sparrow", "eng"))
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.taxon_vernacular_names SET next_check_at = now()")
    assert sync(conn, gbif_client).changed == 1
    assert stored(conn)[SPARROW] == ("sparrow", 1, "sparrow")


@pytest.mark.parametrize(
    ("entries", "own_name", "chosen"),
    [
        ([("Spatz", "deu"), ("sparrow", "eng")], "GBIF's own", "GBIF's own"),
        ([("Spatz", "deu"), ("sparrow", "eng"), ("sparrer", None)], None, "sparrow"),
        ([("Spatz", "deu"), ("sparrer", None)], None, "sparrer"),
        ([("Spatz", "deu"), ("moineau", "fra", True)], None, "moineau"),
        ([("Spatz", "deu"), ("moineau", "fra")], None, "Spatz"),
        ([], None, None),
    ],
)
def test_the_appviews_preference(entries, own_name, chosen):
    listed = [
        VernacularName(entry[0], entry[1], None, None, len(entry) > 2 and entry[2] is True)
        for entry in entries
    ]
    assert preferred_name(own_name, listed) == chosen


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response("", status=429, headers={"Retry-After": "0"}), "HTTP 429"),
        (Response("oops", status=500), "HTTP 500"),
        (html_error(503), "HTML page"),
        (
            Response('{"offset": 0, "results": [{"vernac', content_type="application/json"),
            "unreadable",
        ),
        (json_response({"offset": 0, "limit": 100, "results": []}), "no endOfRecords"),
        (json_response({"endOfRecords": False, "results": []}), "empty but not the last"),
        (json_response(["not", "a", "page"]), "not an object"),
    ],
)
def test_bad_answers_are_recorded_per_taxon(conn, taxa, gbif_client, answer, error):
    taxa.script(f"names {SPARROW}", *[answer] * 3)  # every attempt the client makes
    report = sync(conn, gbif_client)
    assert (report.failed, report.changed) == (1, 2)
    ((attempts, recorded),) = failures(conn, "vernacular_names").values()
    assert attempts == 1 and error in recorded
    assert SPARROW not in stored(conn)
    assert sync(conn, gbif_client).seen == 0  # backing off: not asked again at once


def test_a_list_that_never_ends_is_an_error(conn, taxa, gbif_client):
    taxa.vernacular_names[SPARROW] = names(*[("Spatz", "deu")] * 6000)
    report = sync(conn, gbif_client)
    assert report.failed == 1 and "did not end after 50 pages" in report.failures.rows[0]["error"]


def test_the_recordings_parse(shared_fixtures):
    gbif = shared_fixtures / "gbif"
    full = json.loads(
        (gbif / "v1-species-5231190-vernacularnames-passer-domesticus.json").read_text()
    )
    page = parse_vernacular_page(full)
    assert (len(page.names), page.received, page.end_of_records) == (100, 100, False)
    assert page.names[2] == VernacularName(
        "English sparrow", None, "Global Invasive Species Database", None, False
    )
    assert preferred_name(None, page.names) == next(
        n.name for n in page.names if n.language == "eng"
    )
    empty = json.loads((gbif / "v1-species-5136034-vernacularnames-empty.json").read_text())
    assert parse_vernacular_page(empty).names == () and parse_vernacular_page(empty).end_of_records
    with pytest.raises(MalformedResponseError):
        parse_vernacular_page({k: v for k, v in full.items() if k != "endOfRecords"})
