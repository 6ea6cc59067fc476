"""Backbone freshness: hot taxa re-checked, changes logged, identifications re-stamped."""

from __future__ import annotations

import pytest

from observing_pipelines.db import taxa
from observing_pipelines.db.connection import count_rows
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.backbone_freshness import BackboneFreshness, BackboneFreshnessOptions
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests import fakes
from observing_pipelines_tests.fakes import match_body
from observing_pipelines_tests.support import invariant_queries
from observing_pipelines_tests.test_resolve_taxa import identify, keys
from observing_pipelines_tests.test_thumbnails import failures


def check_freshness(conn, gbif_client, **options):
    """One backbone_freshness pass, as its asset runs it."""
    config = BackboneFreshnessOptions(**options)
    return enrichment.run(conn, BackboneFreshness(gbif_client, config), config.limit, 4)


def age_taxa(conn, days=60):
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ingester.taxa SET fetched_at = now() - make_interval(days => %s)", (days,)
        )


def changes(conn):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT taxon_key, reasons, old_values, new_values, identifications_restamped "
            "FROM pipelines.taxon_changes ORDER BY taxon_key"
        )
        return {row[0]: row[1:] for row in cur.fetchall()}


@pytest.fixture
def stamped(conn, fake_gbif, gbif_client, wikidata_client):
    """Identifications resolved by the real pass, then their taxa aged past the threshold."""
    fake_gbif.add_name(
        "Helianthus annuus", match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    )
    fake_gbif.add_name(
        "Panthera leo", match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE)
    )
    fake_gbif.add_name(
        "Panthera uncia", match_body("EXACT", fakes.PANTHERA_UNCIA, fakes.PANTHERA_LINEAGE)
    )
    fake_gbif.add_name(
        "Calopteryx", match_body("HIGHERRANK", fakes.CALOPTERYX, fakes.CALOPTERYX_LINEAGE)
    )
    uris = identify(
        conn,
        ("Helianthus annuus", "Plantae"),
        ("Helianthus annuus", "Plantae"),
        ("Panthera leo", "Animalia"),
        ("Panthera uncia", "Animalia"),
        ("Calopteryx", "Animalia"),
    )
    TaxaResolver(conn, gbif_client, wikidata_client, ResolveOptions()).run()
    assert keys(conn, uris) == [9206251, 9206251, 5219404, 5219436, 1427007]
    age_taxa(conn)
    return uris


def test_changes_are_applied_logged_and_restamped(conn, stamped, fake_gbif, gbif_client):
    # Unchanged: the sunflower. Renamed: the lion. Lumped into the lion: the snow leopard.
    # Gone from the backbone: the damselfly genus.
    fake_gbif.add_key(
        9206251, match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    )
    renamed_lion = (5219404, "Panthera leo leo", "SPECIES")
    fake_gbif.add_key(5219404, match_body("EXACT", renamed_lion, fakes.PANTHERA_LINEAGE))
    fake_gbif.add_key(
        5219436,
        match_body("EXACT", fakes.PANTHERA_UNCIA, fakes.PANTHERA_LINEAGE, accepted=renamed_lion),
    )
    first = check_freshness(conn, gbif_client, top_n=10)
    assert keys(conn, stamped) == [9206251, 9206251, 5219404, 5219404, 1427007]  # gone: once only
    assert first.metadata() | {"seconds": 0} == {
        "taxa_seen": 4,
        "taxa_changed": 2,
        "taxa_unchanged": 1,
        "taxa_failed": 0,
        "http_calls": 4,
        "seconds": 0,
        "identifications_restamped": 1,
        "keys_gone": 0,
        "gone_unconfirmed": 1,
    }
    with conn, conn.cursor() as cur:  # the confirmation is due
        cur.execute("UPDATE pipelines.job_item_failures SET next_attempt_at = now()")
    report = check_freshness(conn, gbif_client, top_n=10)
    assert keys(conn, stamped) == [9206251, 9206251, 5219404, 5219404, None]
    logged = changes(conn)
    assert set(logged) == {5219404, 5219436, 1427007}
    assert logged[5219404][0] == ["scientific_name_changed"] and logged[5219404][3] == 0
    assert logged[5219436][0] == ["status_changed", "accepted_taxon_key_changed"]
    assert (
        logged[5219436][1]["accepted_taxon_key"] == 5219436
        and logged[5219436][2]["accepted_taxon_key"] == 5219404
    )
    assert logged[5219436][3] == 1
    assert (
        logged[1427007][0] == ["key_gone"]
        and logged[1427007][2] is None
        and logged[1427007][3] == 1
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT taxon_key, status, accepted_taxon_key, scientific_name, "
            "fetched_at > now() - interval '1 minute' "
            "FROM ingester.taxa WHERE taxon_key IN (9206251, 5219404, 5219436, 1427007) ORDER BY 1"
        )
        assert cur.fetchall() == [
            (1427007, "NOT_FOUND", None, "Calopteryx", True),
            (5219404, "ACCEPTED", 5219404, "Panthera leo leo", True),
            (5219436, "SYNONYM", 5219404, "Panthera uncia", True),
            (9206251, "ACCEPTED", 9206251, "Helianthus annuus", True),
        ]
        cur.execute(
            "SELECT accepted_taxon_key FROM pipelines.resolution_attempts "
            "WHERE subject = 'Panthera uncia'"
        )
        assert cur.fetchall() == [(5219404,)]  # the remembered answer follows the lump
        cur.execute(
            "SELECT count(*) FROM pipelines.resolution_attempts WHERE subject = 'Calopteryx'"
        )
        assert cur.fetchone()[0] == 0  # forgotten: the name is resolved afresh
        cur.execute(
            "SELECT accepted_taxon_key, count(*) FROM ingester.community_ids GROUP BY 1 ORDER BY 1"
        )
        assert cur.fetchall() == [(5219404, 2), (9206251, 2), (None, 1)]
    assert report.metadata() | {"seconds": 0} == {
        "taxa_seen": 1,
        "taxa_changed": 1,
        "taxa_unchanged": 0,
        "taxa_failed": 0,
        "http_calls": 1,
        "seconds": 0,
        "identifications_restamped": 1,
        "keys_gone": 1,
        "gone_unconfirmed": 0,
    }
    with conn:
        assert count_rows(conn, invariant_queries()["stamps_on_unusable_taxa"]) == 0


def test_second_run_asks_nothing(conn, stamped, fake_gbif, gbif_client):
    for key, entry, lineage in (
        (9206251, fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
        (5219404, fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE),
        (5219436, fakes.PANTHERA_UNCIA, fakes.PANTHERA_LINEAGE),
        (1427007, fakes.CALOPTERYX, fakes.CALOPTERYX_LINEAGE),
    ):
        fake_gbif.add_key(key, match_body("EXACT", entry, lineage))
    first = check_freshness(conn, gbif_client)
    assert (first.seen, first.changed, first.unchanged) == (4, 0, 4) and changes(conn) == {}
    calls = fake_gbif.calls
    second = check_freshness(conn, gbif_client)
    assert second.seen == 0 and fake_gbif.calls == calls


def test_only_hot_taxa_are_checked(conn, stamped, fake_gbif, gbif_client):
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ingester.identifications SET date_identified = now() - interval '1 year'"
        )
    report = check_freshness(conn, gbif_client, top_n=1, recent_days=7)
    assert (
        report.seen == 1 and fake_gbif.requests[-1]["usageKey"] == "9206251"
    )  # the most identified


def test_failures_are_recorded_and_the_rest_goes_on(conn, stamped, fake_gbif, gbif_client):
    fake_gbif.add_key(
        9206251, match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE)
    )
    fake_gbif.add_key(5219404, match_body("EXACT", fakes.PANTHERA_LEO, fakes.PANTHERA_LINEAGE))
    fake_gbif.add_key(1427007, match_body("EXACT", fakes.CALOPTERYX, fakes.CALOPTERYX_LINEAGE))
    for _ in range(3):
        fake_gbif.script("5219436", fakes.json_response({"message": "boom"}, 500))
    report = check_freshness(conn, gbif_client)
    assert (report.failed, report.unchanged) == (1, 3)
    assert set(failures(conn, "backbone_freshness")) == {5219436}
    assert keys(conn, stamped)[3] == 5219436  # untouched until GBIF answers


def test_nothing_stale_nothing_asked(conn, fake_gbif, gbif_client):
    with conn:
        taxa.upsert_taxa(conn, [TaxonRow(1, "Animalia", None, "kingdom", "ACCEPTED", 1, None)])
    assert check_freshness(conn, gbif_client).seen == 0 and fake_gbif.calls == 0
