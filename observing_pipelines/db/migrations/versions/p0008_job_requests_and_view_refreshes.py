"""Requests from the app, and the record of each `community_ids` refresh.

`job_requests`: the app asks for a run by inserting a row (job name, run config as JSON, who
asked); the `job_requests` sensor turns each pending row into a run and writes the run id and,
when it ends, its final status back, or rejects the row with a reason. The app's roles may
insert the first three columns and read their own rows (`requested_role`, filled by the
database, so a role cannot pass for another); the grants are `roles.grant_app_access`.

`view_refreshes`: when a view was last refreshed, from which source write count, and how long
it took: what the refresh budget (`taxa.community_ids.RefreshBudget`) decides on.

Revision ID: p0008
Revises: p0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "p0008"
down_revision = "p0007"
branch_labels = None
depends_on = None

FINAL = "('REJECTED', 'SUCCESS', 'FAILURE', 'CANCELED')"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE pipelines.job_requests (
            id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_name        text        NOT NULL,
            run_config      jsonb       NOT NULL DEFAULT '{{}}',
            requested_by    text        NOT NULL DEFAULT current_user,
            requested_at    timestamptz NOT NULL DEFAULT now(),
            requested_role  name        NOT NULL DEFAULT current_user,
            status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN (
                'PENDING', 'REJECTED', 'QUEUED', 'NOT_STARTED', 'MANAGED', 'STARTING',
                'STARTED', 'CANCELING', 'SUCCESS', 'FAILURE', 'CANCELED')),
            run_id          text,
            reason          text,
            updated_at      timestamptz NOT NULL DEFAULT now(),
            finished_at     timestamptz,
            CHECK ((status IN {FINAL}) = (finished_at IS NOT NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX job_requests_open_idx ON pipelines.job_requests (id) "
        f"WHERE status NOT IN {FINAL}"
    )
    # The owner (jobs_runtime) is exempt; every other role sees and adds only its own rows.
    op.execute("ALTER TABLE pipelines.job_requests ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY own_requests_read ON pipelines.job_requests FOR SELECT "
        "USING (requested_role = current_user)"
    )
    op.execute(
        "CREATE POLICY own_requests_insert ON pipelines.job_requests FOR INSERT "
        "WITH CHECK (requested_role = current_user AND status = 'PENDING')"
    )
    op.execute(
        """
        CREATE TABLE pipelines.view_refreshes (
            view_name       text             PRIMARY KEY,
            source_writes   bigint           NOT NULL,
            refreshed_at    timestamptz      NOT NULL,
            seconds         double precision NOT NULL CHECK (seconds >= 0)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE pipelines.view_refreshes")
    op.execute("DROP TABLE pipelines.job_requests")
