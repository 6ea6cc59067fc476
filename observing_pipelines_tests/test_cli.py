"""`observing-pipelines resolve-taxa`: today's flags and exit codes, without Dagster."""

from __future__ import annotations

import json

import pytest

from observing_pipelines.cli import main
from observing_pipelines_tests import fakes
from observing_pipelines_tests.test_resolve_taxa import identify, keys, snapshot


@pytest.fixture
def env(monkeypatch, gbif_server, wikidata_server):
    for name in ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GBIF_BASE_URL", gbif_server.url_for(""))
    monkeypatch.setenv("WIKIDATA_SPARQL_URL", wikidata_server.url_for("/sparql"))
    return monkeypatch


def test_no_database_configured_exits_2(env, caplog):
    assert main(["resolve-taxa"]) == 2
    assert "no database configured" in caplog.text


def test_unreachable_database_exits_1_without_leaking_the_password(env, caplog):
    env.setenv("DB_HOST", "127.0.0.1")
    env.setenv("DB_PORT", "1")
    env.setenv("DB_USER", "jobs")
    env.setenv("DB_PASSWORD", "s3cret-pa55")
    assert main(["resolve-taxa"]) == 1
    assert "s3cret-pa55" not in caplog.text and "***" in caplog.text


def test_a_pass_exits_0_and_prints_its_summary(env, conn, db_url, fake_gbif, capsys):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    uris = identify(conn, ("Helianthus annuus", "Plantae"), ("Aaasdfadsf", None))
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa", "--rate-limit-ms", "0", "--limit", "10"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        summary["names_resolved"] == 1
        and summary["names_not_found"] == 1
        and summary["rows_stamped"] == 1
    )
    assert keys(conn, uris) == [9206251, None]


def test_dry_run_writes_nothing(env, conn, db_url, fake_gbif, capsys):
    identify(conn, ("Helianthus annuus", "Plantae"))
    before = snapshot(conn)
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa", "--dry-run"]) == 0
    assert snapshot(conn) == before and fake_gbif.calls == 0


def test_refresh_failure_exits_1(env, conn, db_url, fake_gbif):
    with (
        conn,
        conn.cursor() as cur,
    ):  # without its unique index the view cannot refresh concurrently
        cur.execute("DROP INDEX ingester.community_ids_occurrence_uri_idx")
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa"]) == 1


def test_bad_flags_are_rejected(env):
    with pytest.raises(SystemExit) as exit_info:
        main(["resolve-taxa", "--limit", "0"])
    assert exit_info.value.code == 2
