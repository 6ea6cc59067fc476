"""Development and test mirror of the app tables the jobs use (never applied in production).

Column for column as observ-ing/core has them after its 32 sqlx migrations
(`../shared/docs/app-database-contract.md` §4): `ingester.identifications`, `ingester.taxa`,
`ingester.occurrences` and the `ingester.community_ids` materialized view with the unique index
that `REFRESH ... CONCURRENTLY` needs. Production gets these from the app's own migrations; this
branch exists so tests and `observing-pipelines dev` run against the same shapes.

`occurrences.location` is `geography(POINT,4326)` where PostGIS is installed; elsewhere (the
embedded server, CI's Postgres) it is `text`, which the jobs never read.

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
    location_type = "geography(POINT,4326)" if has_postgis else "text"
    op.execute("CREATE SCHEMA IF NOT EXISTS ingester")
    op.execute(
        f"""
        CREATE TABLE ingester.occurrences (
            uri                           text PRIMARY KEY,
            cid                           text NOT NULL,
            did                           text NOT NULL,
            scientific_name               text,
            event_date_start              timestamptz,
            event_date_end                timestamptz,
            event_date_raw                text,
            event_date_range              tstzrange GENERATED ALWAYS AS
                                              (tstzrange(event_date_start, event_date_end, '[)'))
                                              STORED,
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
            organism_quantity             text,
            organism_quantity_type        text,
            created_at                    timestamptz NOT NULL,
            indexed_at                    timestamptz DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX occurrences_created_at_uri_idx "
        "ON ingester.occurrences (created_at DESC, uri DESC)"
    )
    op.execute("CREATE INDEX occurrences_did_idx ON ingester.occurrences (did)")
    op.execute(
        "CREATE INDEX occurrences_event_date_range_idx "
        "ON ingester.occurrences USING gist (event_date_range)"
    )
    op.execute(
        "CREATE INDEX occurrences_event_date_start_idx ON ingester.occurrences (event_date_start)"
    )
    op.execute(
        "CREATE INDEX occurrences_scientific_name_idx ON ingester.occurrences (scientific_name)"
    )
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
            accepted_taxon_key                 bigint
        )
        """
    )
    op.execute("CREATE INDEX identifications_did_idx ON ingester.identifications (did)")
    op.execute(
        "CREATE INDEX identifications_scientific_name_idx "
        "ON ingester.identifications (scientific_name)"
    )
    op.execute(
        "CREATE INDEX identifications_subject_uri_idx ON ingester.identifications (subject_uri)"
    )
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
        WITH latest AS (
            SELECT DISTINCT ON (did, subject_uri)
                   subject_uri, scientific_name, kingdom, accepted_taxon_key
            FROM ingester.identifications
            ORDER BY did, subject_uri, date_identified DESC
        ), votes AS (
            SELECT subject_uri, scientific_name, kingdom, accepted_taxon_key, count(*) AS id_count
            FROM latest
            GROUP BY subject_uri, scientific_name, kingdom, accepted_taxon_key
        ), winners AS (
            SELECT DISTINCT ON (subject_uri)
                   subject_uri, scientific_name, kingdom, accepted_taxon_key, id_count
            FROM votes
            ORDER BY subject_uri, id_count DESC, scientific_name
        )
        SELECT o.uri AS occurrence_uri, w.scientific_name, w.kingdom, w.accepted_taxon_key,
               w.id_count
        FROM winners w
        JOIN ingester.occurrences o ON o.uri = w.subject_uri
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
