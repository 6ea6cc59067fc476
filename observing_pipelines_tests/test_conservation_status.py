"""Conservation status job: GBIF without a token, IUCN v4 with one; the token never leaks."""

from __future__ import annotations

import json
import logging

import pytest

from observing_pipelines.clients.gbif import parse_red_list_category
from observing_pipelines.clients.http import PoliteHttpClient
from observing_pipelines.clients.iucn import IucnClient, parse_assessment, parse_taxon
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.conservation_status import (
    ConservationStatus,
    ConservationStatusOptions,
)
from observing_pipelines_tests.fakes import FakeIucn, iucn_assessment, iucn_taxon
from observing_pipelines_tests.support import TEST_POLICY
from observing_pipelines_tests.test_thumbnails import cache_taxa, failures

TOKEN = "iucn-secret-token-0123456789"


def sync_conservation(conn, gbif_client, iucn_client, **options):
    """One conservation_status pass, as its asset runs it."""
    config = ConservationStatusOptions(**options)
    return enrichment.run(conn, ConservationStatus(gbif_client, iucn_client), config.limit, 2)


def statuses(conn):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT taxon_key, status, category, source, assessment_id, assessment_year, "
            "iucn_taxon_id, common_name_en FROM pipelines.taxon_conservation ORDER BY 1"
        )
        return {row[0]: row[1:] for row in cur.fetchall()}


@pytest.fixture
def species(conn):
    cache_taxa(
        conn,
        (201, "Gorilla gorilla"),
        (202, "Branta canadensis"),
        (203, "Fratercula arctica"),
        (204, "Nullus ignotus"),
        (205, "Gorilla gorilla diehli"),
    )
    cache_taxa(conn, (200, "Gorilla"), rank="genus")
    cache_taxa(conn, (299, "Troglodytes gorilla"), status="SYNONYM")


@pytest.fixture
def fake_iucn(iucn_server):
    iucn = FakeIucn(iucn_server, TOKEN)
    iucn.taxa |= {
        ("Gorilla", "gorilla"): iucn_taxon(
            9404,
            "Gorilla gorilla",
            [(1, "2016", False, "1"), (136250858, "2018", True, "1")],
            common_language={"code": "eng", "description": {"en": "English"}},
        ),
        ("Branta", "canadensis"): iucn_taxon(
            22679935, "Branta canadensis", [(9, "2021", True, "2"), (10, "2018", True, "1")]
        ),
        ("Fratercula", "arctica"): iucn_taxon(
            22694927, "Fratercula arctica", [(166290968, "2021", True, "2")]
        ),
    }
    iucn.assessments |= {
        136250858: iucn_assessment(136250858, "CR", "2018"),
        10: iucn_assessment(10, "LC", "2018"),
    }
    return iucn


@pytest.fixture
def iucn_client(iucn_server):
    http = PoliteHttpClient("iucn", iucn_server.url_for("/api/v4"), TEST_POLICY)
    yield IucnClient(http, TOKEN)
    http.close()


def test_from_gbif_without_a_token(conn, species, fake_gbif, gbif_client):
    fake_gbif.red_list |= {
        201: {"category": "CRITICALLY_ENDANGERED", "code": "CR"},
        202: {"category": "LEAST_CONCERN", "code": "LC"},
        203: {"category": "NOT_EVALUATED", "code": "NE", "acceptedName": "Fratercula arctica"},
    }
    report = sync_conservation(conn, gbif_client, None)
    assert statuses(conn) == {
        201: ("assessed", "CR", "gbif", None, None, None, None),
        202: ("assessed", "LC", "gbif", None, None, None, None),
        203: ("assessed", "NE", "gbif", None, None, None, None),
        204: ("not_assessed", None, "gbif", None, None, None, None),
        205: ("not_assessed", None, "gbif", None, None, None, None),
    }
    assert report.metadata()["taxa_seen"] == 5 and report.metadata()["threatened"] == 1
    assert report.http_calls == 5  # the genus and the synonym are not asked about
    again = sync_conservation(conn, gbif_client, None)
    assert again.seen == 0 and again.http_calls == 0


def test_from_iucn_with_a_token(conn, species, fake_iucn, gbif_client, iucn_client, caplog):
    caplog.set_level(logging.DEBUG)
    report = sync_conservation(conn, gbif_client, iucn_client)
    assert statuses(conn) == {
        201: ("assessed", "CR", "iucn", 136250858, 2018, 9404, "Common gorilla"),
        202: ("assessed", "LC", "iucn", 10, 2018, 22679935, "Common canadensis"),
        203: ("regional_only", None, "iucn", None, None, 22694927, "Common arctica"),
        204: ("not_found", None, "iucn", None, None, None, None),
        205: ("not_found", None, "iucn", None, None, None, None),  # IUCN has no such subspecies
    }
    assert set(fake_iucn.authorizations) == {TOKEN}
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(report.metadata())
    assert report.failed == 0


def test_a_bad_token_is_recorded_per_taxon_without_leaking(
    conn, species, iucn_server, gbif_client, caplog
):
    FakeIucn(iucn_server, "the-right-token")
    http = PoliteHttpClient("iucn", iucn_server.url_for("/api/v4"), TEST_POLICY)
    caplog.set_level(logging.DEBUG)
    report = sync_conservation(conn, gbif_client, IucnClient(http, TOKEN))
    assert report.failed == 5 and statuses(conn) == {}
    recorded = failures(conn, "conservation_status")
    assert all("HTTP 401" in error and TOKEN not in error for _, error in recorded.values())
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(
        report.metadata() | {"f": report.failures.rows}
    )


def test_gbif_failures_and_empty_answers(conn, species, fake_gbif, gbif_server, gbif_client):
    fake_gbif.red_list[201] = {}  # GBIF's "no status"
    gbif_server.expect_request("/v1/species/202/iucnRedListCategory").respond_with_data(
        "<html/>", status=503, content_type="text/html"
    )
    unknown = gbif_server.expect_request("/v1/species/203/iucnRedListCategory")
    unknown.respond_with_json(
        {"timestamp": "2026-12-01T00:00:00Z", "status": 404, "error": "", "message": "no"},
        status=404,
    )
    for _ in range(2):  # both answer before the generic route
        gbif_server.handlers.insert(0, gbif_server.handlers.pop())
    report = sync_conservation(conn, gbif_client, None)
    assert report.failed == 2
    recorded = failures(conn, "conservation_status")
    assert set(recorded) == {202, 203} and "HTTP 404" in recorded[203][1]
    assert statuses(conn)[201][0] == "not_assessed" and 203 not in statuses(conn)

    # Backing off: the next run leaves them; once due, a good answer clears the failure.
    assert sync_conservation(conn, gbif_client, None).seen == 0
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.job_item_failures SET next_attempt_at = now()")
    gbif_server.handlers.remove(unknown)  # 203 is known again
    fake_gbif.red_list[203] = {"category": "VULNERABLE", "code": "VU"}
    again = sync_conservation(conn, gbif_client, None)
    assert set(failures(conn, "conservation_status")) == {202}
    assert statuses(conn)[203][:2] == ("assessed", "VU") and again.failed == 1


def test_iucn_recordings_parse(shared_fixtures):
    iucn = shared_fixtures / "iucn"
    gorilla = parse_taxon(
        json.loads((iucn / "v4-taxa-scientific-name-gorilla-gorilla.json").read_text())
    )
    assert gorilla.sis_id == 9404 and gorilla.latest_global().assessment_id == 136250858
    assert gorilla.common_name_en == "Western Gorilla"  # 2024 shape: language is an object
    goose = parse_taxon(
        json.loads((iucn / "v4-taxa-scientific-name-branta-canadensis.json").read_text())
    )
    assert goose.common_name_en == "Canada Goose"  # 2025 shape: language is "eng"
    assert goose.latest_global().is_global
    no_latest = parse_taxon(json.loads((iucn / "v4-taxa-sis-41129.json").read_text()))
    assert no_latest.latest_global() is None
    for path in sorted(iucn.glob("v4-taxa-s*.json")):
        if (
            not path.name.endswith(".meta.json")
            and "404" not in path.name
            and "401" not in path.name
        ):
            assert parse_taxon(json.loads(path.read_text())).sis_id > 0, path.name
    categories = {
        path.name: parse_assessment(json.loads(path.read_text())).category
        for path in sorted(iucn.glob("v4-assessment-[0-9]*.json"))
        if not path.name.endswith(".meta.json") and "404" not in path.name
    }
    assert categories["v4-assessment-9618913-abies-koreana.json"] == "EN"
    assert all(categories.values()), categories


def test_gbif_red_list_recordings_parse(shared_fixtures):
    for name in (
        "v1-species-7412043-iucnredlistcategory-accepted-ne.json",
        "v1-species-5097652-iucnredlistcategory-synonym.json",
    ):
        parsed = parse_red_list_category(json.loads((shared_fixtures / "gbif" / name).read_text()))
        assert parsed.code == "NE"
    assert parse_red_list_category({}).code is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"taxon": "not an object"}, "no taxon object"),
        (200, ["a", "list"], "no taxon object"),
        (429, {"error": "Too many requests"}, "HTTP 429"),
        (502, "<html><title>Bad gateway</title></html>", "HTML page"),
    ],
)
def test_malformed_and_refused_iucn_answers_are_recorded(
    conn, iucn_server, gbif_client, status, body, error
):
    cache_taxa(conn, (201, "Gorilla gorilla"))
    if isinstance(body, str):
        iucn_server.expect_request("/api/v4/taxa/scientific_name").respond_with_data(
            body, status=status, content_type="text/html"
        )
    else:
        iucn_server.expect_request("/api/v4/taxa/scientific_name").respond_with_json(
            body, status=status, headers={"Retry-After": "0"}
        )
    http = PoliteHttpClient("iucn", iucn_server.url_for("/api/v4"), TEST_POLICY)
    report = sync_conservation(conn, gbif_client, IucnClient(http, TOKEN))
    assert report.failed == 1 and error in failures(conn, "conservation_status")[201][1]
    assert statuses(conn) == {}
