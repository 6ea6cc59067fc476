"""Thumbnails job against real Postgres and local WDQS and Commons stand-ins."""

from __future__ import annotations

import json

import pytest

from observing_pipelines.clients.commons import parse_imageinfo, strip_html
from observing_pipelines.clients.wikidata import parse_bindings, pick_images
from observing_pipelines.db import taxa
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.thumbnails import Thumbnails, ThumbnailsOptions
from observing_pipelines_tests.fakes import CommonsFile, json_response


def cache_taxa(conn, *keys_and_names, rank="species", status="ACCEPTED"):
    rows = [
        TaxonRow(k, n, None, rank, status, k if status != "SYNONYM" else 1, None)
        for k, n in keys_and_names
    ]
    with conn:
        taxa.upsert_taxa(conn, rows)


def images(conn):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM pipelines.taxon_images ORDER BY taxon_key")
        names = [d.name for d in cur.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def failures(conn, job):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT item_key, attempts, last_error FROM pipelines.job_item_failures WHERE job = %s",
            (job,),
        )
        return {key: (attempts, error) for key, attempts, error in cur.fetchall()}


@pytest.fixture
def pictures(fake_wikidata, fake_commons):
    fake_wikidata.images |= {
        101: (
            "Q101",
            [
                ("Old photo.jpg", "normal"),
                ("Best photo.jpg", "preferred"),
                ("Bad.jpg", "deprecated"),
            ],
        ),
        102: ("Q102", []),
        103: ("Q103", [("Gone from Commons.jpg", "normal")]),
        105: ("Q105", [("Only deprecated.jpg", "deprecated")]),
    }
    fake_commons.files |= {
        "Best photo.jpg": CommonsFile(),
        "Old photo.jpg": CommonsFile(license="CC0"),
    }
    return fake_wikidata


def refresh_thumbnails(conn, wikidata_client, commons_client, **options):
    """One thumbnails pass, as its asset runs it."""
    config = ThumbnailsOptions(**options)
    job = Thumbnails(wikidata_client, commons_client, config)
    return enrichment.run(conn, job, config.limit, concurrency=1)


def test_first_run_records_every_taxon(
    conn, pictures, fake_commons, wikidata_client, commons_client
):
    cache_taxa(
        conn,
        (101, "Panthera leo"),
        (102, "Panthera uncia"),
        (103, "Felis catus"),
        (104, "Nullus"),
        (105, "Lynx lynx"),
    )
    cache_taxa(conn, (900, "A synonym"), status="SYNONYM")
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    rows = images(conn)
    assert {k: r["status"] for k, r in rows.items()} == {
        101: "found",
        102: "no_image",
        103: "file_missing",
        104: "no_item",
        105: "no_image",
    }
    found = rows[101]
    assert found["file_name"] == "Best photo.jpg" and found["wikidata_item"] == "Q101"
    assert (
        found["thumb_small_url"].endswith("/120px-Best_photo.jpg")
        and found["thumb_small_width"] == 120
    )
    assert (
        found["thumb_large_url"].endswith("/960px-Best_photo.jpg")
        and found["thumb_large_width"] == 960
    )
    assert found["original_url"].startswith("https://upload.wikimedia.org/wikipedia/commons/")
    assert found["file_page_url"] == "https://commons.wikimedia.org/wiki/File:Best_photo.jpg"
    assert (found["license_short_name"], found["artist"], found["attribution_required"]) == (
        "CC BY-SA 4.0",
        "Some One & friends",
        True,
    )
    assert report.metadata() | {"seconds": 0} == {
        "taxa_seen": 5,
        "taxa_changed": 5,
        "taxa_unchanged": 0,
        "taxa_failed": 0,
        "http_calls": 3,
        "seconds": 0,
        "with_image": 1,
    }
    assert {r["iiurlwidth"] for r in fake_commons.requests} == {"120", "960"}


def test_second_run_asks_nothing_and_a_due_recheck_changes_nothing(
    conn, pictures, wikidata_client, commons_client
):
    cache_taxa(conn, (101, "Panthera leo"), (104, "Nullus"))
    refresh_thumbnails(conn, wikidata_client, commons_client)
    before = images(conn)
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert report.seen == 0 and report.http_calls == 0
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.taxon_images SET next_check_at = now()")
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert (report.seen, report.changed, report.unchanged) == (2, 0, 2)
    after = images(conn)
    assert {k: {c: v for c, v in r.items() if not c.endswith("_at")} for k, r in after.items()} == {
        k: {c: v for c, v in r.items() if not c.endswith("_at")} for k, r in before.items()
    }


def test_new_taxa_come_before_stale_ones(conn, pictures, wikidata_client, commons_client):
    cache_taxa(conn, (101, "Panthera leo"))
    refresh_thumbnails(conn, wikidata_client, commons_client)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.taxon_images SET next_check_at = now()")
    cache_taxa(conn, (104, "Nullus"))
    report = refresh_thumbnails(conn, wikidata_client, commons_client, limit=1)
    assert report.seen == 1 and 104 in images(conn)


def test_upstream_failures_are_recorded_and_back_off(
    conn, pictures, wikidata_server, wikidata_client, commons_client
):
    cache_taxa(conn, (101, "Panthera leo"), (104, "Nullus"))
    wikidata_server.clear()
    wikidata_server.expect_request("/sparql").respond_with_response(
        json_response({"error": "slow down"}, 429, {"Retry-After": "1"})
    )
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert report.failed == 2 and images(conn) == {}
    recorded = failures(conn, "thumbnails")
    assert set(recorded) == {101, 104} and all("HTTP 429" in e for _, e in recorded.values())
    assert (
        refresh_thumbnails(conn, wikidata_client, commons_client).seen == 0
    )  # backing off, not asked again


def test_garbage_from_commons_is_a_recorded_failure(
    conn, pictures, commons_server, wikidata_client, commons_client
):
    cache_taxa(conn, (101, "Panthera leo"))
    commons_server.clear()
    commons_server.expect_request("/w/api.php").respond_with_data(
        "<html>oops</html>", content_type="text/html"
    )
    report = refresh_thumbnails(conn, wikidata_client, commons_client)
    assert report.failed == 1 and "unreadable body" in failures(conn, "thumbnails")[101][1]


def test_widths_must_be_standard(commons_client):
    with pytest.raises(ValueError, match="standard"):
        commons_client.image_infos(["A.jpg"], 320, with_metadata=False)


def test_artist_html_is_stripped():
    assert strip_html('<span class="x">Jane &amp; <b>Doe</b></span>\n') == "Jane & Doe"
    assert strip_html("") is None


def test_commons_recordings_parse(shared_fixtures):
    lisa = json.loads(
        (
            shared_fixtures
            / "commons/imageinfo-iiurlheight300-extmetadata-apple-lisa-query-member.json"
        ).read_text()
    )
    image = parse_imageinfo({"query": lisa})["File:Apple Lisa2-IMG 1517.jpg"]
    assert image.license_short_name == "CC BY-SA 2.0 fr" and image.artist == "Rama & Musée Bolo"
    assert image.thumb_url.endswith("300px-Apple_Lisa2-IMG_1517.jpg")
    for name in (
        "imageinfo-generator-allimages-extmetadata-full-response.json",
        "search-generator-imageinfo-iiurlheight-thumburl-responsiveurls.json",
    ):
        body = json.loads((shared_fixtures / "commons" / name).read_text())
        body = body if "query" in body else {"query": body}
        parsed = parse_imageinfo(body)
        assert parsed and all(i.original_url for i in parsed.values())


def test_sparql_recording_parses(shared_fixtures):
    body = json.loads(
        (
            shared_fixtures / "wikidata/sparql-json-results-shape-optional-values-nontaxon.json"
        ).read_text()
    )
    variables = body["head"]["vars"]
    rows = parse_bindings(body, variables[:1], variables[1:])
    assert rows and all(variables[0] in row for row in rows)
    assert pick_images(rows) == {}  # not taxa: nothing to pick, nothing to crash on


@pytest.mark.parametrize("body", [None, [], {"results": []}, {"results": {"bindings": "x"}}])
def test_malformed_sparql_is_an_error(body):
    from observing_pipelines.clients.http import MalformedResponseError

    with pytest.raises(MalformedResponseError):
        parse_bindings(body, ["x"])
