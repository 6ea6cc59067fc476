"""Development and test mirror of the app's roles (never applied in production).

As observ-ing/core sets them up (`../shared/docs/app-database-contract.md` §3):
`ingester_runtime` has CRUD on `ingester` and owns `community_ids` (so it can refresh it);
`appview_runtime` reads `ingester`. Both are created without LOGIN here: tests take them on
with `SET ROLE` to prove what each may and may not do.

Revision ID: m0002
Revises: m0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "m0002"
down_revision = "m0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingester_runtime') THEN
                CREATE ROLE ingester_runtime NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'appview_runtime') THEN
                CREATE ROLE appview_runtime NOLOGIN;
            END IF;
        END $$
        """
    )
    op.execute("GRANT USAGE ON SCHEMA ingester TO ingester_runtime, appview_runtime")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ingester TO ingester_runtime"
    )
    op.execute("GRANT SELECT ON ALL TABLES IN SCHEMA ingester TO appview_runtime")
    op.execute("ALTER MATERIALIZED VIEW ingester.community_ids OWNER TO ingester_runtime")


def downgrade() -> None:
    op.execute("ALTER MATERIALIZED VIEW ingester.community_ids OWNER TO CURRENT_USER")
