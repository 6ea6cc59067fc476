"""Dead letters say why: the failed step and how many times it was tried.

`error` now holds the root cause of the last attempt (its exception type and message) rather
than Dagster's "Execution of run ... failed" summary.

Revision ID: p0005
Revises: p0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "p0005"
down_revision = "p0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE pipelines.dead_letters ADD COLUMN step_key text, "
        "ADD COLUMN step_attempts integer"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE pipelines.dead_letters DROP COLUMN step_key, DROP COLUMN step_attempts")
