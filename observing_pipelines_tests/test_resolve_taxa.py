"""resolve_taxa end to end: real Postgres, real HTTP servers standing in for GBIF and WDQS."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from observing_pipelines.db import identifications
from observing_pipelines.db.identifications import NewIdentification
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests import fakes
from observing_pipelines_tests.fakes import match_body


def identify(conn, *rows: tuple[str, str | None] | tuple[str, str | None, str | None]) -> list[str]:
    """Insert identifications (name, kingdom[, taxon_id]); returns their URIs in order."""
    existing = identifications.count_identifications(conn)
    new = [
        NewIdentification(
            uri=f"at://did:plc:test/identification/{existing + n}",
            did=f"did:plc:user{existing + n}",
            subject_uri=f"at://did:plc:test/occurrence/{existing + n}",
            scientific_name=row[0],
            kingdom=row[1],
            taxon_id=row[2] if len(row) > 2 else None,
        )
        for n, row in enumerate(rows)
    ]
    with conn:
        identifications.insert_identifications(conn, new)
    return [r.uri for r in new]


def keys(conn, uris: list[str]) -> list[int | None]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT uri, accepted_taxon_key FROM ingester.identifications WHERE uri = ANY(%s)",
            (uris,),
        )
        found = dict(cur.fetchall())
    return [found[u] for u in uris]


def taxon(conn, key: int) -> dict | None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM ingester.taxa WHERE taxon_key = %s", (key,))
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row, strict=True)) if row else None


def attempts(conn, subject: str, kingdom: str | None = None) -> dict | None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT * FROM pipelines.resolution_attempts WHERE subject = %s "
            "AND kingdom IS NOT DISTINCT FROM %s",
            (subject, kingdom),
        )
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row, strict=True)) if row else None


def outcome(conn, subject: str, kingdom: str | None = None) -> str | None:
    """The last outcome remembered for a name or taxonID, None if it was never tried."""
    tried = attempts(conn, subject, kingdom)
    return tried["outcome"] if tried else None


def snapshot(conn) -> dict[str, list]:
    """Every row the pass may touch, to prove a run changed nothing."""
    tables = {
        "identifications": "SELECT * FROM ingester.identifications ORDER BY uri",
        "taxa": "SELECT * FROM ingester.taxa ORDER BY taxon_key",
        "community_ids": "SELECT * FROM ingester.community_ids ORDER BY occurrence_uri",
        "attempts": "SELECT * FROM pipelines.resolution_attempts ORDER BY 1, 2",
        "stamps": "SELECT * FROM pipelines.identification_stamps ORDER BY uri",
    }
    with conn, conn.cursor() as cur:
        result = {}
        for name, sql in tables.items():
            cur.execute(sql)
            result[name] = cur.fetchall()
        return result


@pytest.fixture
def run_pass(conn, gbif_client, wikidata_client):
    def run(**options):
        return TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions(**options)).run()

    return run


@pytest.fixture
def world(fake_gbif, fake_wikidata):
    return serve_world(fake_gbif, fake_wikidata)


def serve_world(fake_gbif, fake_wikidata):
    """The test taxonomy, served by the fake GBIF and WDQS."""
    helianthus = match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    fake_gbif.add_name("Helianthus annuus", helianthus)
    fake_gbif.add_name("Helianthus annuus L.", helianthus)
    fake_gbif.add_name(
        "Helianthus anuus",
        match_body("VARIANT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE, confidence=94),
    )
    fake_gbif.add_name(
        "Anastrophyllum minutum",
        match_body(
            "EXACT",
            fakes.ANASTROPHYLLUM_MINUTUM,
            fakes.SPHENOLOBUS_LINEAGE,
            accepted=fakes.SPHENOLOBUS_MINUTUS,
        ),
    )
    fake_gbif.add_name(
        "Calopteryx",
        match_body("HIGHERRANK", fakes.CALOPTERYX, fakes.CALOPTERYX_LINEAGE, confidence=92),
    )
    fake_gbif.add_name(
        "Calopteryx fakeus",
        match_body("HIGHERRANK", fakes.CALOPTERYX, fakes.CALOPTERYX_LINEAGE, confidence=92),
    )
    fake_gbif.add_name(
        "Satyrium",
        match_body("EXACT", fakes.SATYRIUM_ORCHID, fakes.HELIANTHUS_LINEAGE[:4]),
        kingdom="Plantae",
    )
    fake_gbif.add_name(
        "Satyrium",
        match_body("EXACT", fakes.SATYRIUM_BUTTERFLY, fakes.CALOPTERYX_LINEAGE[:4]),
        kingdom="Animalia",
    )
    fake_gbif.add_name("Satyrium", match_body("NONE", confidence=100))
    fake_gbif.add_key(
        5219404, match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE, confidence=100)
    )
    fake_gbif.add_key(
        5219436, match_body("EXACT", fakes.PANTHERA_UNCIA, fakes.PANTHERA_LINEAGE, confidence=100)
    )
    fake_gbif.add_key(
        4277323,
        match_body(
            "EXACT",
            fakes.ANASTROPHYLLUM_MINUTUM,
            fakes.SPHENOLOBUS_LINEAGE,
            accepted=fakes.SPHENOLOBUS_MINUTUS,
            confidence=100,
        ),
    )
    fake_wikidata.inaturalist["41944"] = 5219404
    fake_wikidata.items["Q30197"] = 5219436
    return fake_gbif


def test_exact_match_stamps_and_caches_ancestry_without_self_parent(conn, world, run_pass):
    uris = identify(conn, ("Helianthus annuus", "Plantae"), ("Helianthus annuus", "Plantae"))
    report = run_pass()
    assert keys(conn, uris) == [9206251, 9206251]
    assert report.names.resolved == 1 and report.names.rows_stamped == 2
    target = taxon(conn, 9206251)
    assert target["parent_key"] == 3119134  # the genus, not itself (GBIF repeats the target)
    assert (target["status"], target["accepted_taxon_key"], target["rank"]) == (
        "ACCEPTED",
        9206251,
        "species",
    )
    assert (target["kingdom"], target["family"], target["genus"], target["species"]) == (
        "Plantae",
        "Asteraceae",
        "Helianthus",
        "Helianthus annuus",
    )
    assert taxon(conn, 3065)["parent_key"] == 414
    assert taxon(conn, 6)["parent_key"] is None
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ingester.taxa WHERE parent_key = taxon_key")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT accepted_taxon_key FROM ingester.community_ids")
        assert {k for (k,) in cur.fetchall()} == {9206251}


def test_variant_match_is_accepted_and_remembered(conn, world, run_pass):
    uris = identify(conn, ("Helianthus anuus", "Plantae"))
    run_pass()
    assert keys(conn, uris) == [9206251]
    memo = attempts(conn, "Helianthus anuus", "Plantae")
    assert (memo["outcome"], memo["match_type"], memo["accepted_taxon_key"]) == (
        "resolved",
        "VARIANT",
        9206251,
    )
    calls = world.calls
    more = identify(conn, ("helianthus  ANUUS", "plantae"))  # same question, other spelling
    report = run_pass()
    assert keys(conn, more) == [9206251]
    assert world.calls == calls and report.names.cache_hits == 1


def test_synonym_is_cached_and_identifications_get_the_accepted_key(conn, world, run_pass):
    uris = identify(conn, ("Anastrophyllum minutum", "Plantae"))
    run_pass()
    assert keys(conn, uris) == [2689422]
    synonym = taxon(conn, 4277323)
    assert (synonym["status"], synonym["accepted_taxon_key"], synonym["parent_key"]) == (
        "SYNONYM",
        2689422,
        2689422,
    )
    assert (synonym["species"], synonym["species_key"]) == ("Sphenolobus minutus", 2689422)
    accepted = taxon(conn, 2689422)
    assert (accepted["status"], accepted["accepted_taxon_key"], accepted["parent_key"]) == (
        "ACCEPTED",
        2689422,
        2689399,
    )


def test_higherrank_is_accepted_only_when_the_name_is_the_one_asked(conn, world, run_pass):
    same, different = identify(conn, ("Calopteryx", "Animalia"), ("Calopteryx fakeus", "Animalia"))
    report = run_pass()
    assert keys(conn, [same, different]) == [1427007, None]
    rejected = attempts(conn, "Calopteryx fakeus", "Animalia")
    assert (rejected["outcome"], rejected["match_type"], rejected["taxon_key"]) == (
        "rejected",
        "HIGHERRANK",
        1427007,
    )
    assert rejected["next_attempt_at"] is not None
    assert report.names.not_found == 1


def test_none_is_remembered_and_not_asked_again_until_its_next_try(conn, world, run_pass):
    uris = identify(conn, ("Aaasdfadsf", None))
    run_pass()
    assert keys(conn, uris) == [None]
    first = attempts(conn, "Aaasdfadsf")
    assert (first["outcome"], first["attempts"]) == ("not_found", 1)
    calls = world.calls
    report = run_pass()
    assert world.calls == calls and report.names.skipped_backoff == 1
    with conn, conn.cursor() as cur:  # due again: asked again, and the backoff doubles
        cur.execute(
            "UPDATE pipelines.resolution_attempts SET next_attempt_at = now() - interval '1 minute'"
        )
    run_pass()
    second = attempts(conn, "Aaasdfadsf")
    assert world.calls == calls + 1 and second["attempts"] == 2
    assert (second["next_attempt_at"] - second["last_attempt_at"]).days >= 1


def test_homonym_is_told_apart_by_kingdom(conn, world, run_pass):
    orchid, butterfly, unknown = identify(
        conn, ("Satyrium", "Plantae"), ("Satyrium", "Animalia"), ("Satyrium", None)
    )
    run_pass()
    assert keys(conn, [orchid, butterfly, unknown]) == [5307264, 1927718, None]
    # Both homonyms are now cached; a name without kingdom is still not guessed from the cache.
    assert attempts(conn, "Satyrium")["outcome"] == "not_found"


def test_authorship_in_a_name_finds_the_cached_canonical_name(conn, world, run_pass):
    identify(conn, ("Helianthus annuus", "Plantae"))
    run_pass()
    calls = world.calls
    uris = identify(
        conn, ("Helianthus annuus L.", "Plantae"), ("  helianthus   ANNUUS ", "Plantae")
    )
    report = run_pass()
    assert keys(conn, uris) == [9206251, 9206251]
    assert world.calls == calls and report.names.cache_hits == 2


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gbif:5219404", 5219404),
        ("https://www.gbif.org/species/5219404", 5219404),
        ("HTTPS://GBIF.ORG/species/5219404/?foo=bar#x", 5219404),
        ("https://api.gbif.org/v1/species/5219404", 5219404),
        ("https://www.inaturalist.org/taxa/41944", 5219404),
        ("https://inaturalist.org/taxa/41944-Panthera-leo", 5219404),
        ("https://www.wikidata.org/wiki/Q30197", 5219436),
        ("http://www.wikidata.org/entity/Q30197", 5219436),
        ("gbif:4277323", 2689422),  # a synonym's key stamps its accepted key
        ("https://example.org/taxa/1", None),
        ("https://www.inaturalist.org/taxa/999999", None),
        ("https://www.gbif.org/species/123456789", None),
    ],
)
def test_taxon_id_forms(conn, world, fake_wikidata, run_pass, uri, expected):
    uris = identify(conn, ("Unmatchable vernacular", None, uri))
    report = run_pass()
    assert keys(conn, uris) == [expected]
    assert report.taxon_ids.seen == 1
    assert attempts(conn, uri)["outcome"] == (
        "resolved" if expected else ("invalid" if "example" in uri else "not_found")
    )


def test_taxon_id_crosswalks_are_batched(conn, world, fake_wikidata, run_pass):
    fake_wikidata.inaturalist |= {"1": 5219404, "2": 5219436}
    identify(
        conn,
        *[(f"Nothing {n}", None, f"https://www.inaturalist.org/taxa/{n}") for n in (1, 2, 41944)],
    )
    run_pass()
    assert len(fake_wikidata.queries) == 1


def test_second_run_makes_no_http_call_and_changes_no_row(conn, world, run_pass):
    identify(
        conn,
        ("Helianthus annuus", "Plantae"),
        ("Anastrophyllum minutum", "Plantae"),
        ("Aaasdfadsf", None),
        ("Calopteryx fakeus", "Animalia"),
        ("Lion", None, "https://www.inaturalist.org/taxa/41944"),
        ("Nonsense", None, "urn:nothing"),
    )
    run_pass()
    before, calls = snapshot(conn), world.calls
    report = run_pass()
    assert world.calls == calls and report.http_calls == 0
    assert snapshot(conn) == before


def test_dry_run_changes_nothing_and_calls_nobody(conn, world, fake_wikidata, run_pass):
    identify(
        conn,
        ("Helianthus annuus", "Plantae"),
        ("Lion", None, "https://www.inaturalist.org/taxa/41944"),
    )
    before = snapshot(conn)
    report = run_pass(dry_run=True)
    assert snapshot(conn) == before
    assert world.calls == 0 and not fake_wikidata.queries
    assert report.names.would_fetch == 2 and report.taxon_ids.would_fetch == 1
    assert not report.refreshed


def test_limit_bounds_each_pass(conn, world, run_pass):
    identify(
        conn, ("Helianthus annuus", "Plantae"), ("Aaasdfadsf", None), ("Calopteryx", "Animalia")
    )
    report = run_pass(limit=2)
    assert report.names.seen == 3 and world.calls == 2  # the third name waits for the next pass
    report = run_pass(limit=2)
    assert world.calls == 3 and (report.names.seen, report.names.skipped_backoff) == (2, 1)


def test_edited_name_is_resolved_again(conn, world, run_pass):
    (uri,) = identify(conn, ("Helianthus annuus", "Plantae"))
    run_pass()
    with conn, conn.cursor() as cur:  # the ingester's upsert: new name, key COALESCEd (kept)
        cur.execute(
            "UPDATE ingester.identifications SET scientific_name = 'Anastrophyllum minutum', "
            "indexed_at = now() WHERE uri = %s",
            (uri,),
        )
        identifications.publish_own_writes(conn)
    report = run_pass()
    assert report.rows_reset == 1
    assert keys(conn, [uri]) == [2689422]
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT scientific_name, accepted_taxon_key FROM pipelines.identification_stamps"
        )
        assert cur.fetchall() == [("Anastrophyllum minutum", 2689422)]


def test_a_pass_with_nothing_to_do_skips_the_whole_table_steps(conn, world, run_pass):
    """The edit sweep and the view refresh read every identification: they run only when
    someone wrote identifications since the last pass, or this pass stamped some."""
    (sunflower,) = identify(conn, ("Helianthus annuus", "Plantae"))
    first = run_pass()
    assert first.identifications_changed and first.refreshed
    idle = run_pass()
    assert (idle.identifications_changed, idle.refreshed, idle.rows_reset) == (False, False, 0)

    identify(conn, ("Aaasdfadsf", None))  # a new ingest nobody can stamp still changes the view
    after_ingest = run_pass()
    assert after_ingest.identifications_changed and after_ingest.refreshed
    assert after_ingest.names.rows_stamped == 0 and not run_pass().refreshed

    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ingester.identifications WHERE uri = %s", (sunflower,))
        identifications.publish_own_writes(conn)
    assert run_pass().refreshed
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ingester.community_ids")
        assert cur.fetchone()[0] == 1


def test_an_occurrence_arriving_after_its_identification_refreshes_the_view(conn, world, run_pass):
    """The view joins occurrences: one ingested after its identification (the ingester allows
    that order) must reach `community_ids` at the next pass, though nothing is stamped."""
    with conn:
        identifications.insert_identifications(
            conn,
            [NewIdentification("at://i/late", "did:plc:a", "at://o/late", "Helianthus annuus")],
        )
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ingester.occurrences")
        identifications.publish_own_writes(conn)
    run_pass()
    assert not run_pass().refreshed
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ingester.occurrences (uri, cid, did, created_at) "
            "VALUES ('at://o/late', 'cid', 'did:plc:a', now())"
        )
        identifications.publish_own_writes(conn)
    assert run_pass().refreshed
    with conn, conn.cursor() as cur:
        cur.execute("SELECT occurrence_uri FROM ingester.community_ids")
        assert cur.fetchall() == [("at://o/late",)]


def test_the_whole_table_steps_run_at_least_hourly(conn, world, run_pass):
    """Statistics can miss a write (track_counts off, a lost message on old servers): an old
    mark counts as a change."""
    identify(conn, ("Helianthus annuus", "Plantae"))
    run_pass()
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.change_marks SET recorded_at = now() - interval '61 minutes'")
    assert run_pass().refreshed
    assert not run_pass().refreshed


def test_a_kingdom_pass_leaves_the_change_mark_to_full_passes(conn, world, run_pass):
    identify(conn, ("Helianthus annuus", "Plantae"), ("Panthera leo", "Animalia"))
    run_pass()
    identify(conn, ("Helianthus annuus", "Plantae"))
    kingdom = run_pass(kingdom="Plantae")
    assert kingdom.identifications_changed and kingdom.names.rows_stamped == 1
    assert kingdom.refreshed
    assert run_pass().identifications_changed  # the ingest came after the full pass's mark
    assert not run_pass().identifications_changed


def test_identifications_stamped_by_the_old_resolver_are_left_alone(conn, world, run_pass):
    (uri,) = identify(conn, ("Renamed by the app", "Plantae"))
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE ingester.identifications SET accepted_taxon_key = 42")
    report = run_pass()
    assert report.rows_reset == 0 and keys(conn, [uri]) == [42]


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("   ", "invalid"),
        ("x" * 10_000, "invalid"),
        ("12345", "invalid"),
        ("Ёлка обыкновенная", "not_found"),
        ("銀杏", "not_found"),
        ("Helianthus\tannuus\u200b", "resolved"),
    ],
)
def test_odd_names_are_recorded_not_fatal(conn, world, run_pass, name, outcome):
    identify(conn, (name, "Plantae"))
    report = run_pass()
    assert report.names.seen == 1
    with conn, conn.cursor() as cur:
        cur.execute("SELECT outcome, length(subject) FROM pipelines.resolution_attempts")
        ((recorded, length),) = cur.fetchall()
    assert recorded == outcome
    if outcome == "invalid":
        assert world.calls == 0 and length <= 10_000


def test_nul_bytes_from_upstream_are_dropped_not_fatal(conn, fake_gbif, run_pass):
    body = match_body("EXACT", (9999, "Nul\x00lus species", "SPECIES"), [fakes.PLANTAE])
    fake_gbif.add_name("Nullus species", body)
    uris = identify(conn, ("Nullus species", "Plantae"))
    run_pass()
    assert keys(conn, uris) == [9999]
    assert taxon(conn, 9999)["scientific_name"] == "Nullus species"


def test_http_failures_are_recorded_per_item_and_the_pass_completes(conn, world, run_pass):
    world.script("Helianthus annuus", fakes.json_response(["slow down"], 429, {"Retry-After": "1"}))
    for _ in range(3):
        world.script("Calopteryx", fakes.json_response({"error": "boom"}, 500))
        world.script("Anastrophyllum minutum", fakes.html_error(503))
        world.script(
            "Satyrium", fakes.Response('{"diagnostics": {"matchTy', content_type="application/json")
        )
    world.script("Aaasdfadsf", 3.0)  # longer than the client's timeout, on every attempt
    world.script("Aaasdfadsf", 3.0)
    world.script("Aaasdfadsf", 3.0)
    uris = identify(
        conn,
        ("Helianthus annuus", "Plantae"),
        ("Calopteryx", "Animalia"),
        ("Anastrophyllum minutum", "Plantae"),
        ("Satyrium", "Plantae"),
        ("Aaasdfadsf", None),
    )
    report = run_pass()
    assert keys(conn, uris) == [9206251, None, None, None, None]
    assert report.names.resolved == 1 and report.names.errors == 4
    errors = {
        name: attempts(conn, name, kingdom)
        for name, kingdom in (
            ("Calopteryx", "Animalia"),
            ("Anastrophyllum minutum", "Plantae"),
            ("Satyrium", "Plantae"),
            ("Aaasdfadsf", None),
        )
    }
    assert all(e["outcome"] == "error" and e["next_attempt_at"] for e in errors.values())
    assert "HTTP 500" in errors["Calopteryx"]["last_error"]
    assert "text/html" in errors["Anastrophyllum minutum"]["last_error"]
    assert "unreadable body" in errors["Satyrium"]["last_error"]
    assert "timed out" in errors["Aaasdfadsf"]["last_error"]
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ingester.identifications")
        assert cur.fetchone()[0] == 5
    # Once the failures are due again and GBIF is healthy, the same pass finishes the work.
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE pipelines.resolution_attempts SET next_attempt_at = now()")
    run_pass()
    assert keys(conn, uris) == [9206251, 1427007, 2689422, 5307264, None]


def test_wikidata_outage_is_recorded_for_each_crosswalk(conn, world, wikidata_server, run_pass):
    wikidata_server.clear()
    wikidata_server.expect_request("/sparql").respond_with_data("down", status=502)
    uris = identify(
        conn,
        ("Lion", None, "https://www.inaturalist.org/taxa/41944"),
        ("Snow leopard", None, "gbif:5219436"),
    )
    report = run_pass()
    assert keys(conn, uris) == [None, 5219436]
    assert report.taxon_ids.errors == 1
    assert attempts(conn, "https://www.inaturalist.org/taxa/41944")["outcome"] == "error"


def test_two_overlapping_runs_leave_correct_data(db_url, world, gbif_client, wikidata_client):
    setup = psycopg2.connect(db_url)
    names = [
        ("Helianthus annuus", "Plantae"),
        ("Anastrophyllum minutum", "Plantae"),
        ("Calopteryx", "Animalia"),
        ("Satyrium", "Plantae"),
        ("Satyrium", "Animalia"),
        ("Helianthus anuus", "Plantae"),
    ]
    uris = identify(setup, *(names * 20))
    errors = []

    def one_run() -> None:
        conn = psycopg2.connect(db_url)
        try:
            TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions(batch_size=3)).run()
        except Exception as error:
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {
        "Helianthus annuus": 9206251,
        "Anastrophyllum minutum": 2689422,
        "Calopteryx": 1427007,
        "Helianthus anuus": 9206251,
    }
    stamped = keys(setup, uris)
    for (name, kingdom), key in zip(names * 20, stamped, strict=True):
        assert key == expected.get(name, {"Plantae": 5307264, "Animalia": 1927718}[kingdom])
    with setup, setup.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT uri) FROM pipelines.identification_stamps")
        assert cur.fetchone() == (len(uris), len(uris))
    setup.close()
