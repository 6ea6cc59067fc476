"""Migrations: our schema, Dagster's schema, the app mirror; nothing of ours in `public`.

The mirror is pinned to the app's own migrations (observ-ing/core `crates/observing-db/
migrations/`, at the contract's HEAD): column order, the generated `event_date_range`, the
indexes, PostGIS where it is installed, and the database's `search_path`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from observing_pipelines.db import migrate
from observing_pipelines_tests.cloud_sql import (
    ADMIN,
    as_user,
    new_database,
    postgis_available,
    relations,
    rows,
)


def columns(url, table):
    return [
        name
        for (name,) in rows(
            url,
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f"ingester.{table}",),
        )
    ]


def indexes(url, table):
    return dict(
        rows(
            url,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'ingester' AND tablename = %s",
            (table,),
        )
    )


def test_schemas_and_tables(db_url):
    assert relations(db_url, "public") == set()
    assert relations(db_url, "pipelines") == {
        "alembic_version",
        "resolution_attempts",
        "identification_stamps",
        "taxon_images",
        "taxon_conservation",
        "taxon_vernacular_names",
        "taxon_changes",
        "job_item_failures",
        "dead_letters",
        "change_marks",
        "job_requests",
        "view_refreshes",
    }
    dagster_tables = {"runs", "event_logs", "jobs", "job_ticks", "alembic_version", "kvs"}
    assert dagster_tables <= relations(db_url, "dagster")
    app_tables = {"identifications", "taxa", "occurrences", "community_ids"}
    assert app_tables <= relations(db_url, "ingester")


# Order as the app's migrations leave it: CREATE TABLE order, then columns added later.
IDENTIFICATION_COLUMNS = [
    "uri", "cid", "did", "subject_uri", "subject_cid", "scientific_name", "taxon_rank",
    "identification_qualifier", "taxon_id", "identification_verification_status", "type_status",
    "date_identified", "indexed_at", "kingdom", "phylum", "class", "order", "family", "genus",
    "accepted_taxon_key",  # 20260505100000_taxa_cache
    "model_name", "model_version",  # 20260521000000_add_identification_model_fields
]  # fmt: skip
OCCURRENCE_COLUMNS = [
    "uri", "cid", "did", "scientific_name",
    "event_date_start",  # created as event_date, renamed in 20260615010000
    "location", "coordinate_uncertainty_meters", "associated_media", "recorded_by", "taxon_id",
    "taxon_rank", "kingdom", "phylum", "class", "order", "family", "genus", "created_at",
    "indexed_at",
    "organism_quantity", "organism_quantity_type",  # 20260606000000
    "event_date_raw",  # 20260615000000
    "event_date_end", "event_date_range",  # 20260615010000
]  # fmt: skip
TAXA_COLUMNS = [
    "taxon_key", "scientific_name", "authorship", "rank", "status", "accepted_taxon_key",
    "parent_key", "kingdom", "kingdom_key", "phylum", "phylum_key", "class", "class_key",
    "order", "order_key", "family", "family_key", "genus", "genus_key", "species",
    "species_key", "vernacular_name", "extinct", "fetched_at", "source",
]  # fmt: skip
VIEW_COLUMNS = ["occurrence_uri", "scientific_name", "kingdom", "accepted_taxon_key", "id_count"]


def test_the_mirror_has_the_apps_columns_in_the_apps_order(db_url):
    assert columns(db_url, "identifications") == IDENTIFICATION_COLUMNS
    assert columns(db_url, "occurrences") == OCCURRENCE_COLUMNS
    assert columns(db_url, "taxa") == TAXA_COLUMNS
    assert columns(db_url, "community_ids") == VIEW_COLUMNS


def test_the_mirror_has_the_apps_indexes(db_url):
    assert set(indexes(db_url, "identifications")) == {
        "identifications_pkey",
        "identifications_subject_uri_idx",
        "identifications_did_idx",
        "identifications_scientific_name_idx",
        "idx_identifications_did_date_identified",
        "identifications_model_name_idx",
        "identifications_unstamped_idx",  # ours, recommended upstream (m0003)
    }
    occurrence_indexes = indexes(db_url, "occurrences")
    expected = {
        "occurrences_pkey",
        "occurrences_scientific_name_idx",
        "occurrences_did_idx",
        "occurrences_event_date_start_idx",
        "idx_occurrences_did_created_at",
        "occurrences_created_at_uri_idx",
        "occurrences_event_date_range_idx",
    }
    if postgis_available(db_url):
        expected.add("occurrences_location_idx")
        assert "USING gist (location)" in occurrence_indexes["occurrences_location_idx"]
    assert set(occurrence_indexes) == expected
    assert "USING gist (event_date_range)" in occurrence_indexes["occurrences_event_date_range_idx"]
    assert "UNIQUE" in indexes(db_url, "community_ids")["community_ids_occurrence_uri_idx"]


def test_location_is_postgis_geography_wherever_postgis_is_installed(db_url):
    ((location_type,),) = rows(
        db_url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'ingester.occurrences'::regclass AND attname = 'location'",
    )
    assert location_type == ("geography(Point,4326)" if postgis_available(db_url) else "text")


MAY_1, MAY_2 = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end"),
    [(None, None), (None, MAY_2), (MAY_1, None), (MAY_1, MAY_2)],
)
def test_event_date_range_is_generated_as_the_app_does(conn, start, end):
    """NULL for an undated occurrence (not the unbounded range), `[start, end)` otherwise."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ingester.occurrences (uri, cid, did, created_at, event_date_start, "
            "event_date_end) VALUES ('at://o', 'c', 'd', now(), %s, %s) "
            "RETURNING event_date_range IS NULL, lower(event_date_range), upper(event_date_range),"
            " lower_inc(event_date_range), upper_inc(event_date_range)",
            (start, end),
        )
        is_null, lower, upper, lower_inc, upper_inc = cur.fetchone()
    if start is None:
        assert is_null
    else:
        assert (lower, upper, lower_inc, upper_inc) == (start, end, True, False)


def test_the_database_search_path_is_the_apps(conn):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database() AND s.setrole = 0"
        )
        assert cur.fetchone()[0] == ["search_path=ingester, appview, public"]
        cur.execute("SHOW search_path")
        assert cur.fetchone()[0] == "ingester, appview, public"


def test_migrations_are_idempotent(db_url, admin_url, conn):
    assert migrate.upgrade_all(admin_url, app_mirror=False) == []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM pipelines.alembic_version ORDER BY 1")
        assert [v for (v,) in cur.fetchall()] == ["p0008"]


def test_the_dev_path_mirror_and_all_twice_as_a_superuser(server_url):
    """`observing-pipelines dev`: the mirror first, then ours, on the embedded superuser."""
    with new_database(server_url, prefix="op_dev_like") as url:
        assert migrate.upgrade_all(url, app_mirror=True)
        assert migrate.upgrade_all(url, app_mirror=True) == []
        assert rows(url, "SELECT version_num FROM pipelines.alembic_version ORDER BY 1") == [
            ("m0003",),
            ("p0008",),
        ]


def test_production_never_gets_the_mirror(server_url, template_database):
    with new_database(server_url, prefix="op_prod_like", owner=ADMIN) as url:
        migrate.upgrade_all(as_user(url, ADMIN), app_mirror=False)
        assert relations(url, "ingester") == set()
        assert "runs" in relations(url, "dagster")
