"""A failing item may hold a verdict that waits for the next check to confirm it.

Backbone freshness used to find "GBIF no longer knows this key" by the text of the last error;
the verdict is now state of its own. Rows an older version recorded that way are carried over.

Revision ID: p0006
Revises: p0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "p0006"
down_revision = "p0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE pipelines.job_item_failures ADD COLUMN awaiting_confirmation text")
    op.execute(
        "UPDATE pipelines.job_item_failures SET awaiting_confirmation = 'gone' "
        "WHERE job = 'backbone_freshness' AND last_error LIKE 'GBIF no longer knows this key%'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE pipelines.job_item_failures DROP COLUMN awaiting_confirmation")
