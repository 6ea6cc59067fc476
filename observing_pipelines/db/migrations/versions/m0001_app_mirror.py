"""Development and test mirror of the app tables the jobs use (never applied in production).

As observ-ing/core's sqlx migrations leave them at the contract's HEAD (`../shared/docs/
app-database-contract.md` §4, checked against `crates/observing-db/migrations/`), column for
column and in the same order (columns added later by the app come last, as `ALTER TABLE ...
ADD COLUMN` put them): `ingester.identifications`, `ingester.taxa`, `ingester.occurrences`
with their indexes, and the `ingester.community_ids` materialized view with the unique index
that `REFRESH ... CONCURRENTLY` needs. The database's `search_path` is the app's
(`20260419000000_table_schemas`), so code relying on an unqualified name fails here as it
would there. Production gets all of this from the app; this branch exists so tests and
`observing-pipelines dev` run against the same shapes.

It is the app's CI and local shape: no runtime roles, everything owned by whoever migrates.
The tests build production's shape around it (runtime roles made beforehand, the view owned by
`ingester_runtime`; `observing_pipelines_tests/cloud_sql.py`).

`occurrences.location` is `geography(Point,4326)` with the app's GiST index where PostGIS is
installed; elsewhere (the embedded server, a Postgres without PostGIS) it is `text`, which the
jobs never read, and has no index.

Revision ID: m0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op
from sqlalchemy import text

revision = "m0001"
down_revision = None
branch_labels = ("app_mirror",)
depends_on = None


def upgrade() -> None:
    has_postgis = (
        op.get_bind()
        .execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"))
        .first()
    )
    if has_postgis:
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    location_type = "geography(Point,4326)" if has_postgis else "text"
    op.execute("CREATE SCHEMA IF NOT EXISTS ingester")
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = ingester, appview, "
        "public', current_database()); END $$"
    )
    op.execute(
        f"""
        CREATE TABLE ingester.occurrences (
            uri                           text PRIMARY KEY,
            cid                           text NOT NULL,
            did                           text NOT NULL,
            scientific_name               text,
            event_date_start              timestamptz,
            location                      {location_type},
            coordinate_uncertainty_meters integer,
            associated_media              jsonb,
            recorded_by                   text,
            taxon_id                      text,
            taxon_rank                    text,
            kingdom                       text,
            phylum                        text,
            class                         text,
            "order"                       text,
            family                        text,
            genus                         text,
            created_at                    timestamptz NOT NULL,
            indexed_at                    timestamptz DEFAULT now(),
            organism_quantity             text,
            organism_quantity_type        text,
            event_date_raw                text,
            event_date_end                timestamptz,
            -- NULL for an undated occurrence, not the unbounded range (20260615010000)
            event_date_range              tstzrange GENERATED ALWAYS AS (
                CASE
                    WHEN event_date_start IS NOT NULL
                    THEN tstzrange(event_date_start, event_date_end, '[)')
                END
            ) STORED
        )
        """
    )
    occurrence_indexes = [
        "occurrences_scientific_name_idx ON ingester.occurrences (scientific_name)",
        "occurrences_did_idx ON ingester.occurrences (did)",
        "occurrences_event_date_start_idx ON ingester.occurrences (event_date_start)",
        "idx_occurrences_did_created_at ON ingester.occurrences (did, created_at DESC)",
        "occurrences_created_at_uri_idx ON ingester.occurrences (created_at DESC, uri DESC)",
        "occurrences_event_date_range_idx ON ingester.occurrences USING gist (event_date_range)",
    ]
    if has_postgis:
        occurrence_indexes.append(
            "occurrences_location_idx ON ingester.occurrences USING gist (location)"
        )
    for index in occurrence_indexes:
        op.execute(f"CREATE INDEX {index}")
    op.execute(
        """
        CREATE TABLE ingester.identifications (
            uri                                text PRIMARY KEY,
            cid                                text NOT NULL,
            did                                text NOT NULL,
            subject_uri                        text NOT NULL,
            subject_cid                        text NOT NULL,
            scientific_name                    text NOT NULL,
            taxon_rank                         text,
            identification_qualifier           text,
            taxon_id                           text,
            identification_verification_status text,
            type_status                        text,
            date_identified                    timestamptz NOT NULL,
            indexed_at                         timestamptz DEFAULT now(),
            kingdom                            text,
            phylum                             text,
            class                              text,
            "order"                            text,
            family                             text,
            genus                              text,
            accepted_taxon_key                 bigint,
            model_name                         text,
            model_version                      text
        )
        """
    )
    for index in (
        "identifications_subject_uri_idx ON ingester.identifications (subject_uri)",
        "identifications_did_idx ON ingester.identifications (did)",
        "identifications_scientific_name_idx ON ingester.identifications (scientific_name)",
        "idx_identifications_did_date_identified "
        "ON ingester.identifications (did, date_identified DESC)",
        "identifications_model_name_idx ON ingester.identifications (model_name) "
        "WHERE model_name IS NOT NULL",
    ):
        op.execute(f"CREATE INDEX {index}")
    op.execute(
        """
        CREATE TABLE ingester.taxa (
            taxon_key          bigint PRIMARY KEY,
            scientific_name    text NOT NULL,
            authorship         text,
            rank               text NOT NULL,
            status             text NOT NULL,
            accepted_taxon_key bigint,
            parent_key         bigint,
            kingdom            text,
            kingdom_key        bigint,
            phylum             text,
            phylum_key         bigint,
            class              text,
            class_key          bigint,
            "order"            text,
            order_key          bigint,
            family             text,
            family_key         bigint,
            genus              text,
            genus_key          bigint,
            species            text,
            species_key        bigint,
            vernacular_name    text,
            extinct            boolean,
            fetched_at         timestamptz NOT NULL DEFAULT now(),
            source             text NOT NULL DEFAULT 'gbif'
        )
        """
    )
    op.execute("CREATE INDEX taxa_lower_name_idx ON ingester.taxa (lower(scientific_name))")
    op.execute(
        "CREATE INDEX taxa_lower_name_kingdom_idx "
        "ON ingester.taxa (lower(scientific_name), kingdom)"
    )
    op.execute("CREATE INDEX taxa_parent_key_idx ON ingester.taxa (parent_key)")
    op.execute("CREATE INDEX taxa_accepted_taxon_key_idx ON ingester.taxa (accepted_taxon_key)")
    for column in ("kingdom", "phylum", "class", "order", "family", "genus"):
        op.execute(f'CREATE INDEX taxa_{column}_idx ON ingester.taxa ("{column}")')
    op.execute(
        """
        CREATE MATERIALIZED VIEW ingester.community_ids AS
        WITH latest_ids AS (
            SELECT DISTINCT ON (did, subject_uri)
                subject_uri, scientific_name, kingdom, accepted_taxon_key
            FROM ingester.identifications
            ORDER BY did, subject_uri, date_identified DESC
        ),
        votes AS (
            SELECT
                subject_uri,
                scientific_name,
                kingdom,
                accepted_taxon_key,
                COUNT(*) AS id_count
            FROM latest_ids
            GROUP BY subject_uri, scientific_name, kingdom, accepted_taxon_key
        )
        SELECT DISTINCT ON (o.uri)
            o.uri AS occurrence_uri,
            v.scientific_name,
            v.kingdom,
            v.accepted_taxon_key,
            v.id_count
        FROM ingester.occurrences o
        JOIN votes v ON v.subject_uri = o.uri
        ORDER BY o.uri, v.id_count DESC, v.scientific_name
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX community_ids_occurrence_uri_idx "
        "ON ingester.community_ids (occurrence_uri)"
    )
    op.execute(
        "CREATE INDEX community_ids_accepted_taxon_key_idx ON ingester.community_ids "
        "(accepted_taxon_key) WHERE accepted_taxon_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA ingester CASCADE")
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET search_path', "
        "current_database()); END $$"
    )
