"""Alembic environment: our migrations run over the URL `db.migrate` hands in.

The version table lives in our own schema, so the ledger is ours and nothing lands in `public`.
"""

from alembic import context
from sqlalchemy import create_engine, text

from observing_pipelines.db.connection import PIPELINES_SCHEMA

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PIPELINES_SCHEMA}"))
    connection.commit()
    context.configure(
        connection=connection,
        version_table_schema=PIPELINES_SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
