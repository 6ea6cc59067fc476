"""Dagster resources: small configurable factories for the API clients and the database.

Each resource builds a plain client from `clients/` or a connection from `db/`; the passes in
`taxa/` never see Dagster. Values come from `Settings` (the environment) in `definitions.py`,
and can be overridden per run in the launchpad's resources section. The database password is
never part of resource config: `AppDatabaseResource` reads it from the environment at run time,
so it does not show in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import dagster as dg
from psycopg2.extensions import connection as Connection

from observing_pipelines.clients.commons import CommonsClient
from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import HttpPolicy, PoliteHttpClient
from observing_pipelines.clients.iucn import IucnClient
from observing_pipelines.clients.wikidata import WikidataClient
from observing_pipelines.db.connection import connect, database_url
from observing_pipelines.settings import DEFAULT_USER_AGENT, Settings


class AppDatabaseResource(dg.ConfigurableResource):
    """The app's Postgres. With no `url`, DATABASE_URL or DB_* are read when a run starts."""

    url: str | None = None
    statement_timeout_ms: int = 300_000

    def resolved_url(self) -> str:
        return self.url or database_url(Settings.from_env().database)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with connect(self.resolved_url(), statement_timeout_ms=self.statement_timeout_ms) as conn:
            yield conn


class HttpApiResource(dg.ConfigurableResource):
    """The politeness knobs every API resource shares."""

    base_url: str
    user_agent: str = DEFAULT_USER_AGENT
    timeout_seconds: float = 15.0
    max_attempts: int = 5
    max_retry_after_seconds: float = 120.0
    min_interval_ms: int = 100
    max_concurrency: int = 4

    def http_client(self, service: str) -> PoliteHttpClient:
        policy = HttpPolicy(
            user_agent=self.user_agent,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            max_retry_after_seconds=self.max_retry_after_seconds,
            min_interval_ms=self.min_interval_ms,
            max_concurrency=self.max_concurrency,
        )
        return PoliteHttpClient(service, self.base_url, policy)


class GbifResource(HttpApiResource):
    base_url: str = "https://api.gbif.org"

    def get_client(self) -> GbifClient:
        return GbifClient(self.http_client("gbif"))


class WikidataResource(HttpApiResource):
    """WDQS: serial, one query a second by default (its budget is query time per client)."""

    base_url: str = "https://query.wikidata.org/sparql"
    timeout_seconds: float = 60.0
    min_interval_ms: int = 1000
    max_concurrency: int = 1

    def get_client(self) -> WikidataClient:
        return WikidataClient(self.http_client("wikidata"))


class CommonsResource(HttpApiResource):
    """Commons Action API: serial requests, as Wikimedia asks of batch clients."""

    base_url: str = "https://commons.wikimedia.org/w/api.php"
    min_interval_ms: int = 500
    max_concurrency: int = 1

    def get_client(self) -> CommonsClient:
        return CommonsClient(self.http_client("commons"))


class IucnResource(HttpApiResource):
    """IUCN Red List API v4. Without a token the conservation job reads GBIF instead.

    The token is an `EnvVar`, so Dagster shows its name, never its value.
    """

    base_url: str = "https://api.iucnredlist.org/api/v4"
    token: str | None = None
    min_interval_ms: int = 500
    max_concurrency: int = 2

    def get_client(self) -> IucnClient | None:
        return IucnClient(self.http_client("iucn"), self.token) if self.token else None


class Resources(TypedDict):
    """Every resource the jobs use, by the name their assets ask for."""

    app_db: AppDatabaseResource
    gbif: GbifResource
    wikidata: WikidataResource
    commons: CommonsResource
    iucn: IucnResource


def build_resources(settings: Settings) -> Resources:
    http = settings.http
    shared: dict[str, Any] = {
        "timeout_seconds": http.timeout_seconds,
        "user_agent": http.user_agent,
        "max_attempts": http.max_attempts,
        "max_retry_after_seconds": http.max_retry_after_seconds,
    }
    return {
        "app_db": AppDatabaseResource(),
        "gbif": GbifResource(
            base_url=settings.gbif_base_url,
            min_interval_ms=settings.gbif_min_interval_ms,
            max_concurrency=settings.gbif_max_concurrency,
            **shared,
        ),
        "wikidata": WikidataResource(
            base_url=settings.wikidata_sparql_url,
            min_interval_ms=settings.wikidata_min_interval_ms,
            **(shared | {"timeout_seconds": max(http.timeout_seconds, 60.0)}),  # WDQS: up to 60 s
        ),
        "commons": CommonsResource(base_url=settings.commons_api_url, **shared),
        "iucn": IucnResource(
            base_url=settings.iucn_base_url,
            token=dg.EnvVar("IUCN_API_TOKEN") if settings.iucn_token_configured else None,
            **shared,
        ),
    }
