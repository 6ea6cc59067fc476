"""Dead letters: runs that failed for good (their retries exhausted), one row per run.

Written by the run-failure sensor; operators list them, fix the cause and re-execute from
failure (README "Operating").

Revision ID: p0003
Revises: p0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "p0003"
down_revision = "p0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pipelines.dead_letters (
            run_id        text        PRIMARY KEY,
            job_name      text        NOT NULL,
            root_run_id   text,
            retry_number  integer     NOT NULL DEFAULT 0,
            error         text        NOT NULL,
            failed_at     timestamptz NOT NULL DEFAULT now(),
            resolved_at   timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX dead_letters_open_idx ON pipelines.dead_letters (failed_at DESC) "
        "WHERE resolved_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE pipelines.dead_letters")
