"""Alembic environment: our migrations run over the URL `db.migrate` hands in.

The version table lives in our own schema, so the ledger is ours and nothing lands in `public`.
`migrate`'s roles step makes that schema (owned by the jobs' role) before our branch runs as
that role, which may not create schemas: it is created here only where it is missing (the app
mirror, which runs first, as the admin).
"""

from alembic import context
from sqlalchemy import create_engine, text

from observing_pipelines.db.connection import PIPELINES_SCHEMA

config = context.config
url = config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("db.migrate hands Alembic its URL; none was given")
engine = create_engine(url)

with engine.connect() as connection:
    if connection.execute(text(f"SELECT to_regnamespace('{PIPELINES_SCHEMA}')")).scalar() is None:
        connection.execute(text(f"CREATE SCHEMA {PIPELINES_SCHEMA}"))
    connection.commit()  # end the implicit transaction: Alembic runs one per revision
    context.configure(
        connection=connection,
        version_table_schema=PIPELINES_SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
