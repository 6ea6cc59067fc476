"""Change marks: how many writes `ingester.identifications` had seen when a pass last looked.

A pass compares the table's cumulative write counters (`pg_stat_user_tables`) with the mark it
left: equal means nobody inserted, edited or deleted an identification since, so the pass can
skip the two steps that read the whole table (the edit sweep and the `community_ids` refresh).

Revision ID: p0004
Revises: p0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "p0004"
down_revision = "p0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pipelines.change_marks (
            name        text        PRIMARY KEY,
            writes      bigint      NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE pipelines.change_marks")
