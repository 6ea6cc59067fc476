"""Vernacular names: every common name GBIF holds for a taxon, and the one the app shows.

`names` is GBIF's list as it came (name, language, source, country, preferred), in its order;
`preferred_name` is the one written to `ingester.taxa.vernacular_name`.

Revision ID: p0007
Revises: p0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "p0007"
down_revision = "p0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pipelines.taxon_vernacular_names (
            taxon_key       bigint      PRIMARY KEY,
            preferred_name  text,
            names           jsonb       NOT NULL CHECK (jsonb_typeof(names) = 'array'),
            fetched_at      timestamptz NOT NULL DEFAULT now(),
            next_check_at   timestamptz NOT NULL
        )
        """
    )
    op.execute(
        "CREATE INDEX taxon_vernacular_names_next_check_idx "
        "ON pipelines.taxon_vernacular_names (next_check_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE pipelines.taxon_vernacular_names")
