"""The partial index on unstamped identifications that the app lacks (recommended upstream).

Both work queries of a pass (`identifications.pending_name_pairs` and `pending_taxon_ids`) ask for
`accepted_taxon_key IS NULL`. Without an index they read the whole table on every pass; with
this one they read only the rows still waiting, which in steady state are the few names GBIF
cannot match. The README ("Recommended index") gives the same statement for production, with
CONCURRENTLY; `benchmarks/scale.py` measures both.

Revision ID: m0003
Revises: m0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "m0003"
down_revision = "m0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX identifications_unstamped_idx ON ingester.identifications "
        "(scientific_name, kingdom) INCLUDE (taxon_id) WHERE accepted_taxon_key IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ingester.identifications_unstamped_idx")
