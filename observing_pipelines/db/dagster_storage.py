"""Dagster's run, event and schedule storage in the app's database, schema `dagster`.

dagster-postgres has no schema option (dagster-io/dagster#4861, #15508), so the supported
workaround is a `search_path` in the connection options. Rather than ask operators for a second,
hand-derived URL, this storage resolves the database exactly as the jobs do (`DATABASE_URL` or
`DB_*`) and adds the search path itself. `dagster.yaml` names it under `storage: custom:`.
"""

from __future__ import annotations

from typing import Any

from dagster import Field
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from observing_pipelines.db.connection import (
    DAGSTER_SCHEMA,
    database_url,
    sqlalchemy_url,
    with_search_path,
)
from observing_pipelines.settings import Settings


def dagster_storage_url(url: str) -> str:
    """The app database URL as Dagster must see it: psycopg2 driver, `dagster` schema first."""
    return sqlalchemy_url(with_search_path(url, DAGSTER_SCHEMA))


class AppDatabaseDagsterStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose URL comes from the app's database settings."""

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"should_autocreate_tables": Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> AppDatabaseDagsterStorage:
        return cls(
            postgres_url=dagster_storage_url(database_url(Settings.from_env().database)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )
