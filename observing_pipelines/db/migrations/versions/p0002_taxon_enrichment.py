"""State of the enrichment jobs: taxon images, conservation status, backbone changes, failures.

All in our schema; the app's tables are not altered. `job_item_failures` is the one failure
ledger for the per-taxon jobs (thumbnails, conservation status, backbone freshness): a row per
failing item with its attempts, last error and next try, removed when the item succeeds.

Revision ID: p0002
Revises: p0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pipelines.taxon_images (
            taxon_key            bigint      PRIMARY KEY,
            status               text        NOT NULL
                CHECK (status IN ('found', 'no_item', 'no_image', 'file_missing')),
            wikidata_item        text,
            file_name            text,
            thumb_small_url      text,
            thumb_small_width    integer,
            thumb_large_url      text,
            thumb_large_width    integer,
            original_url         text,
            file_page_url        text,
            license_short_name   text,
            license_url          text,
            artist               text,
            attribution_required boolean,
            fetched_at           timestamptz NOT NULL DEFAULT now(),
            next_check_at        timestamptz NOT NULL,
            CHECK ((status = 'found') = (thumb_large_url IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX taxon_images_next_check_idx ON pipelines.taxon_images (next_check_at)")
    op.execute(
        """
        CREATE TABLE pipelines.taxon_conservation (
            taxon_key        bigint      PRIMARY KEY,
            scientific_name  text        NOT NULL,
            status           text        NOT NULL
                CHECK (status IN ('assessed', 'not_assessed', 'regional_only', 'not_found')),
            category         text
                CHECK (category IN ('EX','EW','RE','CR','EN','VU','NT','LC','DD','NA','NE',
                                    'LR/cd','LR/nt','LR/lc')),
            source           text        NOT NULL CHECK (source IN ('iucn', 'gbif')),
            assessment_id    bigint,
            assessment_year  integer,
            iucn_taxon_id    bigint,
            common_name_en   text,
            fetched_at       timestamptz NOT NULL DEFAULT now(),
            next_check_at    timestamptz NOT NULL,
            CHECK ((status = 'assessed') = (category IS NOT NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX taxon_conservation_next_check_idx "
        "ON pipelines.taxon_conservation (next_check_at)"
    )
    op.execute(
        """
        CREATE TABLE pipelines.taxon_changes (
            id                       bigserial   PRIMARY KEY,
            taxon_key                bigint      NOT NULL,
            reasons                  text[]      NOT NULL,
            old_values               jsonb       NOT NULL,
            new_values               jsonb,
            identifications_restamped integer    NOT NULL DEFAULT 0,
            changed_at               timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX taxon_changes_taxon_key_idx ON pipelines.taxon_changes (taxon_key)")
    op.execute(
        """
        CREATE TABLE pipelines.job_item_failures (
            job              text        NOT NULL,
            item_key         bigint      NOT NULL,
            attempts         integer     NOT NULL DEFAULT 1,
            last_error       text        NOT NULL,
            first_failed_at  timestamptz NOT NULL DEFAULT now(),
            last_failed_at   timestamptz NOT NULL DEFAULT now(),
            next_attempt_at  timestamptz NOT NULL,
            PRIMARY KEY (job, item_key)
        )
        """
    )


def downgrade() -> None:
    for table in ("job_item_failures", "taxon_changes", "taxon_conservation", "taxon_images"):
        op.execute(f"DROP TABLE pipelines.{table}")
