"""Our schema for job state, and the empty `dagster` schema Dagster's own migration fills.

`resolution_attempts` remembers every name or taxonID we tried: the answer (a memo, so a
misspelling resolved once is not asked again), or the failure with attempts and a next-try time
that backs off. `identification_stamps` records what each stamp was made from, so an
identification whose name is edited after stamping can be found and resolved again.

Revision ID: p0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "p0001"
down_revision = None
branch_labels = ("pipelines",)
depends_on = None


def upgrade() -> None:
    # `migrate`'s roles step has made it (owned by the jobs' role, which runs this and may not
    # create schemas); a bare `IF NOT EXISTS` would still ask for that privilege.
    op.execute(
        "DO $$ BEGIN IF to_regnamespace('dagster') IS NULL THEN CREATE SCHEMA dagster; "
        "END IF; END $$"
    )
    op.execute(
        """
        CREATE TABLE pipelines.resolution_attempts (
            subject_kind       text        NOT NULL CHECK (subject_kind IN ('name', 'taxon_id')),
            subject_digest     text        NOT NULL,
            subject            text        NOT NULL,
            kingdom            text,
            outcome            text        NOT NULL
                CHECK (outcome IN ('resolved', 'not_found', 'rejected', 'invalid', 'error')),
            taxon_key          bigint,
            accepted_taxon_key bigint,
            match_type         text,
            confidence         smallint,
            attempts           integer     NOT NULL DEFAULT 1,
            last_error         text,
            first_attempt_at   timestamptz NOT NULL DEFAULT now(),
            last_attempt_at    timestamptz NOT NULL DEFAULT now(),
            next_attempt_at    timestamptz,
            PRIMARY KEY (subject_kind, subject_digest),
            CHECK ((outcome = 'resolved') = (accepted_taxon_key IS NOT NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX resolution_attempts_failures_idx ON pipelines.resolution_attempts "
        "(outcome, last_attempt_at DESC) WHERE outcome <> 'resolved'"
    )
    op.execute(
        "CREATE INDEX resolution_attempts_accepted_key_idx "
        "ON pipelines.resolution_attempts (accepted_taxon_key)"
    )
    op.execute(
        """
        CREATE TABLE pipelines.identification_stamps (
            uri                text        PRIMARY KEY,
            scientific_name    text        NOT NULL,
            kingdom            text,
            taxon_id           text,
            accepted_taxon_key bigint      NOT NULL,
            stamped_via        text        NOT NULL CHECK (stamped_via IN ('name', 'taxon_id')),
            stamped_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX identification_stamps_key_idx "
        "ON pipelines.identification_stamps (accepted_taxon_key)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE pipelines.identification_stamps")
    op.execute("DROP TABLE pipelines.resolution_attempts")
