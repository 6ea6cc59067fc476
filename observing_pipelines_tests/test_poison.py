"""Nothing from upstream can poison a pass: NUL bytes, lone surrogates, invalid UTF-8, control
characters and megabyte bodies, through every client and every job.

A GBIF error body with a NUL byte once made `record_attempts` raise ("A string literal cannot
contain NUL characters"): the step failed, no attempt was written, and the next pass failed the
same way, forever. Here every stand-in answers poison, in error bodies and in the fields of good
answers; each pass must finish, store what it can cleaned and bounded (`text.storable`), record
each failure with a bounded error, and the next pass must run as well.
"""

from __future__ import annotations

import json
import re

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.clients.iucn import IucnClient
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines.text import MAX_ERROR, MAX_FIELD
from observing_pipelines_tests import fakes
from observing_pipelines_tests.fakes import CommonsFile, FakeIucn, iucn_assessment, iucn_taxon
from observing_pipelines_tests.support import polite
from observing_pipelines_tests.test_backbone_freshness import age_taxa, check_freshness
from observing_pipelines_tests.test_conservation_status import sync_conservation
from observing_pipelines_tests.test_resolve_taxa import identify, keys
from observing_pipelines_tests.test_thumbnails import (
    cache_taxa,
    failures,
    images,
    refresh_thumbnails,
)

POISON = "Poi\x00son\x07\x1b[31m\x7f\x9b\ud800 \t\n\u202e" + "x" * (3 * MAX_FIELD)
"""NUL, BEL, an ANSI escape, DEL, a C1 control, a lone surrogate, tab and newline, an RTL
override, and far too long."""

ERROR_BODIES = {
    "nul_and_controls": (b'{"message": "boom \\u0000 \x00 \x07\x1b[2J"}', "application/json"),
    "lone_surrogate": (b'{"message": "\\ud800\\udfff\\ud83d"}', "application/json"),
    "invalid_utf8": (b'{"message": "\xff\xfe\xc3\x28\xa0\xa1"}', "application/json; charset=utf-8"),
    "megabyte": (b"\x00" + b"y" * (1 << 20), "text/plain"),
    "html": (b"<html><title>\x00Oops\x07</title>" + b"z" * (1 << 20) + b"</html>", "text/html"),
}


def clean(value: object, limit: int = MAX_FIELD) -> None:
    """A stored text holds nothing unstorable and no control character, within its limit."""
    assert isinstance(value, str), value
    assert len(value) <= limit, len(value)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in value), repr(value)
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value), repr(value)


def always(server: HTTPServer, body: bytes, content_type: str, status: int = 500) -> None:
    """Every request, on every path, answers this (instead of any stand-in's own routes)."""
    server.clear()
    server.expect_request(re.compile(".*")).respond_with_response(
        Response(body, status=status, content_type=content_type)
    )


@pytest.fixture(params=sorted(ERROR_BODIES))
def error_body(request: pytest.FixtureRequest) -> tuple[bytes, str]:
    return ERROR_BODIES[request.param]


# --- every client: a poisoned error body becomes a bounded, storable error --------------------


def test_every_client_turns_a_poisoned_body_into_a_storable_error(
    error_body, gbif_server, wikidata_client, wikidata_server, commons_client, commons_server
):
    body, content_type = error_body
    calls = []
    for server in (gbif_server, wikidata_server, commons_server):
        always(server, body, content_type)
    with polite("gbif", gbif_server.url_for("")) as http:
        gbif = GbifClient(http)
        calls += [lambda: gbif.match_name("Helianthus annuus", "Plantae")]
        calls += [lambda: gbif.match_usage_key(9206251), lambda: gbif.red_list_category(1)]
        calls += [lambda: wikidata_client.images_for_gbif_keys([1])]
        calls += [lambda: commons_client.image_infos(["Sunflower.jpg"], 120, with_metadata=True)]
        with polite("iucn", gbif_server.url_for("/api/v4")) as iucn_http:
            iucn = IucnClient(iucn_http, "token")
            calls += [lambda: iucn.taxon("Gorilla", "gorilla", None)]
            for call in calls:
                with pytest.raises(UpstreamError) as failure:
                    call()
                clean(str(failure.value), MAX_ERROR)


# --- resolve_taxa ------------------------------------------------------------------------------


def test_resolve_records_poisoned_gbif_errors_and_passes_again(
    error_body, conn, gbif_server, gbif_client, wikidata_client
):
    body, content_type = error_body
    always(gbif_server, body, content_type)
    uris = identify(conn, ("Helianthus annuus", "Plantae"), ("Panthera leo", None))
    report = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    assert report.refreshed and report.names.errors == 2
    again = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    assert again.names.skipped_backoff == 2  # the failures recorded, backing off
    assert keys(conn, uris) == [None, None]
    with conn, conn.cursor() as cur:
        cur.execute("SELECT outcome, last_error FROM pipelines.resolution_attempts")
        recorded = cur.fetchall()
    assert {outcome for outcome, _ in recorded} == {"error"} and len(recorded) == 2
    for _, error in recorded:
        clean(error, MAX_ERROR)


def test_resolve_stores_poisoned_names_clean(conn, fake_gbif, gbif_client, wikidata_client):
    """Every text of a good answer poisoned: the taxon is cached and the stamp made, each
    text stored cleaned and bounded."""
    lineage = [(key, f"{name}{POISON}", rank) for key, name, rank in fakes.HELIANTHUS_LINEAGE]
    answer = fakes.match_body(
        "EXACT", (9206251, f"Helianthus annuus{POISON}", "SPE\x00CIES"), lineage
    )
    answer["usage"]["authorship"] = POISON
    answer["diagnostics"]["matchType"] = "EX\x00ACT"
    fake_gbif.add_name("Helianthus annuus", answer)
    (uri,) = identify(conn, ("Helianthus annuus", "Plantae"))
    report = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    assert report.names.resolved == 1 and keys(conn, [uri]) == [9206251]
    with conn, conn.cursor() as cur:
        cur.execute('SELECT scientific_name, rank, authorship, kingdom, "order" FROM ingester.taxa')
        for row in cur.fetchall():
            for value in row:
                if value is not None:
                    clean(value)
        cur.execute("SELECT subject, match_type FROM pipelines.resolution_attempts")
        for row in cur.fetchall():
            for value in row:
                clean(value)


def test_resolve_survives_poisoned_wikidata_answers(
    error_body, conn, fake_gbif, gbif_client, wikidata_server, wikidata_client
):
    """The taxonID pass: WDQS answering poison (errors here; its values are cleaned by the
    same function as every other client's, `parse_bindings`)."""
    body, content_type = error_body
    always(wikidata_server, body, content_type)
    uris = identify(conn, ("Lion", None, "https://www.inaturalist.org/taxa/41944"))
    report = TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    assert report.refreshed and keys(conn, uris) == [None]
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT last_error FROM pipelines.resolution_attempts WHERE subject_kind = 'taxon_id'"
        )
        (error,) = cur.fetchone()
    clean(error, MAX_ERROR)


# --- thumbnails --------------------------------------------------------------------------------


def test_thumbnails_store_poisoned_labels_clean(
    conn, fake_wikidata, fake_commons, wikidata_client, commons_client
):
    cache_taxa(conn, (101, "Helianthus annuus"))
    file_name = "Sun\u202eflower.jpg"  # an odd name Commons could hold, stored as it is
    fake_wikidata.images[101] = (f"Q101{POISON}", [(file_name, "preferred")])
    fake_commons.files[file_name] = CommonsFile(
        license=POISON, license_url=f"https://example.org/{POISON}", artist_html=f"<b>{POISON}</b>"
    )
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert report.failed == 0
    (row,) = images(conn).values()
    for column in ("file_name", "license_short_name", "license_url", "artist", "wikidata_item"):
        clean(row[column])


def test_thumbnails_record_poisoned_errors(
    error_body, conn, fake_wikidata, wikidata_client, commons_server, commons_client
):
    body, content_type = error_body
    cache_taxa(conn, (101, "Helianthus annuus"))
    fake_wikidata.images[101] = ("Q101", [("Sun.jpg", "preferred")])
    always(commons_server, body, content_type)
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert report.failed == 1
    ((_, error),) = failures(conn, "thumbnails").values()
    clean(error, MAX_ERROR)


# --- conservation status -----------------------------------------------------------------------


def test_conservation_from_gbif_records_poisoned_errors(error_body, conn, gbif_server, gbif_client):
    body, content_type = error_body
    cache_taxa(conn, (201, "Gorilla gorilla"))
    always(gbif_server, body, content_type)
    assert sync_conservation(conn, gbif_client, None).failed == 1
    ((_, error),) = failures(conn, "conservation_status").values()
    clean(error, MAX_ERROR)


def test_conservation_from_iucn_stores_poisoned_names_clean(conn, iucn_server, gbif_client):
    cache_taxa(conn, (201, "Gorilla gorilla"))
    iucn = FakeIucn(iucn_server, "token")
    answer = iucn_taxon(9404, "Gorilla gorilla", [(136250858, "2018", True, "1")])
    answer["taxon"]["common_names"][0]["name"] = POISON
    iucn.taxa[("Gorilla", "gorilla")] = answer
    iucn.assessments[136250858] = iucn_assessment(136250858, "C\x00R", "2018")
    with polite("iucn", iucn_server.url_for("/api/v4")) as http:
        client = IucnClient(http, "token")
        report = sync_conservation(conn, gbif_client, client)
    assert report.failed == 0
    with conn, conn.cursor() as cur:
        cur.execute("SELECT status, category, common_name_en FROM pipelines.taxon_conservation")
        status, category, common_name = cur.fetchone()
    assert (status, category) == ("assessed", "CR")
    clean(common_name)


# --- backbone freshness ------------------------------------------------------------------------


def test_freshness_stores_poisoned_changes_clean(conn, fake_gbif, gbif_client, wikidata_client):
    fake_gbif.add_name(
        "Panthera leo", fakes.match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE)
    )
    identify(conn, ("Panthera leo", "Animalia"))
    TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    age_taxa(conn)
    renamed = fakes.match_body(
        "EXACT", (5219404, f"Panthera leo{POISON}", "SPECIES"), fakes.PANTHERA_LINEAGE
    )
    fake_gbif.add_key(5219404, renamed)
    report = check_freshness(conn, gbif_client)
    assert report.changed == 1 and report.failed == 0
    with conn, conn.cursor() as cur:
        cur.execute("SELECT new_values::text, reasons FROM pipelines.taxon_changes")
        new_values, reasons = cur.fetchone()
    assert "\\u0000" not in new_values
    for reason in reasons:
        clean(reason)
    for value in json.loads(new_values).values():
        if isinstance(value, str):
            clean(value)


def test_freshness_records_poisoned_errors(
    error_body, conn, fake_gbif, gbif_server, gbif_client, wikidata_client
):
    fake_gbif.add_name(
        "Panthera leo", fakes.match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE)
    )
    identify(conn, ("Panthera leo", "Animalia"))
    TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    age_taxa(conn)
    body, content_type = error_body
    always(gbif_server, body, content_type)
    assert check_freshness(conn, gbif_client).failed >= 1
    for _, error in failures(conn, "backbone_freshness").values():
        clean(error, MAX_ERROR)
