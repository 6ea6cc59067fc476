"""GBIF's batch matcher (POST /v2/species/match): the same results as one GET a name, a POST a
hundred names, and a clean fall back to GETs when the batch form is missing or answers badly."""

from __future__ import annotations

import logging

import psycopg2
import pytest
from werkzeug import Response

from observing_pipelines.clients.gbif import GbifClient, MatchQuery
from observing_pipelines.clients.http import UpstreamError
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.backbone_freshness import BackboneFreshness, BackboneFreshnessOptions
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests import fakes
from observing_pipelines_tests.cloud_sql import ADMIN, copy_of
from observing_pipelines_tests.fakes import html_error, json_response, match_body
from observing_pipelines_tests.support import polite
from observing_pipelines_tests.test_backbone_freshness import age_taxa
from observing_pipelines_tests.test_resolve_taxa import identify, serve_world

GENERATED = [f"Generatus species{n:03d}" for n in range(150)]
REFUSED = "GBIF does not take batch matches here"


@pytest.fixture
def batch_client(gbif_server):
    with polite("gbif", gbif_server.url_for("")) as http:
        yield GbifClient(http, match_batch_size=100)


@pytest.fixture
def many(fake_gbif, fake_wikidata):
    """The test taxonomy (`serve_world`) and 150 more species: two batches of 100 and a rest."""
    world = serve_world(fake_gbif, fake_wikidata)
    for n, name in enumerate(GENERATED):
        world.add_name(name, match_body("EXACT", (700_000 + n, name, "SPECIES")))
    return world


def questions(names):
    return [MatchQuery(scientific_name=name) for name in names]


def test_a_batch_is_one_request_and_answers_in_order(many, batch_client):
    answers = batch_client.match_many(questions(GENERATED))
    assert [a.usage.key for a in answers] == [700_000 + n for n in range(150)]
    assert many.batches == [100, 50] and many.calls == 2
    assert {r["_batch"] for r in many.requests} == {"true"}


@pytest.mark.parametrize(
    "refusal",
    [
        Response(
            "<html><title>405 Method Not Allowed</title></html>", 405, content_type="text/html"
        ),
        Response('{"message": "no"}', 404, content_type="application/json"),
        Response("", 415),
        Response("", 501),
        Response("<html><body>maintenance</body></html>", 200, content_type="text/html"),
    ],
)
def test_no_batch_form_falls_back_to_gets_for_the_rest_of_the_pass(
    many, batch_client, refusal, caplog
):
    many.batch_refusal = refusal
    with caplog.at_level(logging.WARNING):
        first = batch_client.match_many(questions(GENERATED[:120]))
        second = batch_client.match_many(questions(GENERATED[120:]))
    assert [a.usage.key for a in first + second] == [700_000 + n for n in range(150)]
    assert len(set(many.batches)) == 1  # the first batch only (and its retries, for a 5xx)
    (line,) = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
    assert line.startswith(REFUSED) and "one name a request" in line
    assert not batch_client.batching


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda answers: answers[:-1], "99 entries for 100 queries"),
        (lambda answers: list(reversed(answers)), "not in query order"),
        (lambda answers: {"results": answers}, "not an array"),
        (lambda answers: [*answers[:-1], {"no": "diagnostics"}], "no diagnostics"),
    ],
)
def test_an_answer_that_does_not_line_up_is_asked_again_then_by_gets(
    many, batch_client, mangle, problem, caplog
):
    many.batch_mangle = mangle
    with caplog.at_level(logging.WARNING):
        answers = batch_client.match_many(questions(GENERATED[:100]))
    assert [a.usage.key for a in answers] == [700_000 + n for n in range(100)]
    assert many.batches == [100, 100]  # the batch, once more, then one GET a name
    assert many.calls == 2 + 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(problem in w and "asking again" in w for w in warnings), warnings
    assert any("one by one" in w for w in warnings), warnings
    assert batch_client.batching  # the form exists; this answer was bad


def test_one_failing_name_never_fails_its_neighbours(many, batch_client):
    many.script(GENERATED[7], *[Response("boom", status=500)] * 6)  # its POSTs, then its GETs
    answers = batch_client.match_many(questions(GENERATED[:100]))
    assert isinstance(answers[7], UpstreamError) and "HTTP 500" in str(answers[7])
    others = [a for n, a in enumerate(answers) if n != 7]
    assert [a.usage.key for a in others] == [700_000 + n for n in range(100) if n != 7]


def test_a_429_pauses_and_the_batch_is_sent_again(many, batch_client):
    many.script(GENERATED[0], json_response(["slow down"], 429, {"Retry-After": "1"}))
    answers = batch_client.match_many(questions(GENERATED[:100]))
    assert [a.usage.key for a in answers] == [700_000 + n for n in range(100)]
    assert many.batches == [100, 100] and many.calls == 2


def resolved_state(db_url):
    """What a pass decided, without the timestamps of when."""
    queries = {
        "identifications": "SELECT uri, accepted_taxon_key FROM ingester.identifications",
        "taxa": "SELECT taxon_key, scientific_name, rank, status, accepted_taxon_key, "
        "parent_key, kingdom, family, genus, species FROM ingester.taxa",
        "attempts": "SELECT subject_kind, subject, kingdom, outcome, taxon_key, "
        "accepted_taxon_key, match_type, confidence, last_error, attempts "
        "FROM pipelines.resolution_attempts",
        "stamps": "SELECT uri, accepted_taxon_key, stamped_via "
        "FROM pipelines.identification_stamps",
        "community_ids": "SELECT * FROM ingester.community_ids",
    }
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        state = {}
        for table, sql in queries.items():
            cur.execute(sql)
            state[table] = sorted(cur.fetchall(), key=repr)
    conn.close()
    return state


def test_batches_and_gets_decide_the_same(
    many, server_url, template_database, gbif_server, gbif_client, batch_client, wikidata_client
):
    """The same identifications (exact, variant, synonym, HIGHERRANK kept and rejected,
    homonyms, NONE, authorship, taxonIDs by key and by cross-walk, 150 generated species)
    through both forms leave the same keys, cache, memory and stamps."""
    rows = [
        ("Helianthus annuus", "Plantae"),
        ("Helianthus annuus L.", "Plantae"),
        ("Helianthus anuus", "Plantae"),
        ("Anastrophyllum minutum", "Plantae"),
        ("Calopteryx", "Animalia"),
        ("Calopteryx fakeus", "Animalia"),
        ("Satyrium", "Plantae"),
        ("Satyrium", "Animalia"),
        ("Satyrium", None),
        ("Nonsensia nonsensica", None),
        ("Lion", None, "https://www.gbif.org/species/5219404"),
        ("Snow leopard", None, "https://www.inaturalist.org/taxa/41944"),
        ("Sphenolobus", None, "https://www.gbif.org/species/4277323"),
        ("Gone", None, "https://www.gbif.org/species/999999999"),
        *((name, "Plantae") for name in GENERATED),
    ]
    states = []
    for client in (gbif_client, batch_client):
        with copy_of(server_url, template_database, owner=ADMIN) as db_url:
            conn = psycopg2.connect(db_url)
            try:
                identify(conn, *rows)
                TaxaResolver(conn, client, wikidata_client, ResolveOptions()).run()
            finally:
                conn.close()
            states.append(resolved_state(db_url))
    single, batched = states
    assert batched == single
    assert len([1 for _, key in single["identifications"] if key]) >= 150
    assert many.batches and max(many.batches) == 100


def test_freshness_rechecks_in_batches(conn, many, gbif_client, batch_client, wikidata_client):
    identify(conn, ("Helianthus annuus", "Plantae"), *((name, "Plantae") for name in GENERATED))
    TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    age_taxa(conn)
    for n, name in enumerate(GENERATED):
        many.add_key(700_000 + n, match_body("EXACT", (700_000 + n, name, "SPECIES")))
    many.add_key(9206251, match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE))
    calls = many.calls
    job = BackboneFreshness(batch_client, BackboneFreshnessOptions(top_n=1000))
    report = enrichment.run(conn, job, limit=2000, concurrency=4)
    assert (report.seen, report.unchanged, report.failed) == (151, 151, 0)
    assert many.calls - calls == 2  # two chunks of 100 keys or fewer, one POST each


def test_html_from_the_batch_form_is_logged_once(many, batch_client, caplog):
    many.batch_refusal = html_error(503)
    with caplog.at_level(logging.WARNING):
        for start in range(0, 150, 50):
            batch_client.match_many(questions(GENERATED[start : start + 50]))
    assert sum(REFUSED in r.getMessage() for r in caplog.records) == 1
