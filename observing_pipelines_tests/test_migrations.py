"""Migrations: our schema, Dagster's schema, the app mirror; nothing of ours in `public`."""

from __future__ import annotations

import uuid

from observing_pipelines.db import migrate


def tables(conn, schema):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {name for (name,) in cur.fetchall()}


def test_schemas_and_tables(conn):
    assert tables(conn, "public") == set()
    assert tables(conn, "pipelines") == {
        "alembic_version",
        "resolution_attempts",
        "identification_stamps",
        "taxon_images",
        "taxon_conservation",
        "taxon_changes",
        "job_item_failures",
        "dead_letters",
        "change_marks",
    }
    assert {"runs", "event_logs", "jobs", "job_ticks", "alembic_version", "kvs"} <= tables(
        conn, "dagster"
    )
    assert {"identifications", "taxa", "occurrences"} <= tables(conn, "ingester")


def test_app_mirror_matches_the_contract(conn):
    with conn, conn.cursor() as cur:
        cur.execute("""SELECT column_name, data_type FROM information_schema.columns
                       WHERE table_schema = 'ingester' AND table_name = 'identifications'
                       ORDER BY ordinal_position""")
        assert [c for c, _ in cur.fetchall()] == [
            "uri",
            "cid",
            "did",
            "subject_uri",
            "subject_cid",
            "scientific_name",
            "taxon_rank",
            "identification_qualifier",
            "taxon_id",
            "identification_verification_status",
            "type_status",
            "date_identified",
            "indexed_at",
            "kingdom",
            "phylum",
            "class",
            "order",
            "family",
            "genus",
            "accepted_taxon_key",
        ]
        cur.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'community_ids_occurrence_uri_idx'"
        )
        assert "UNIQUE" in cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_schema = 'ingester' AND table_name = 'taxa'"
        )
        assert cur.fetchone()[0] == 25


def test_migrations_are_idempotent(db_url, conn):
    migrate.upgrade_all(db_url, app_mirror=True)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM pipelines.alembic_version ORDER BY 1")
        assert [v for (v,) in cur.fetchall()] == ["m0003", "p0004"]


def test_production_never_gets_the_mirror(server_url, db_url):
    import psycopg2

    from observing_pipelines_tests.conftest import _admin, _with_database

    name = f"op_prod_like_{uuid.uuid4().hex[:8]}"
    _admin(server_url, f"CREATE DATABASE {name}")
    try:
        url = _with_database(server_url, name)
        migrate.upgrade_all(url, app_mirror=False)
        conn = psycopg2.connect(url)
        try:
            assert tables(conn, "ingester") == set()
            assert "runs" in tables(conn, "dagster")
        finally:
            conn.close()
    finally:
        _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
