"""Dagster resources: small configurable factories for the API clients and the database.

Each resource builds a plain client from `clients/` or a connection from `db/`; the passes in
`taxa/` never see Dagster. Values come from `Settings` (the environment) in `definitions.py`,
and can be overridden per run in the launchpad's resources section. The database password is
never part of resource config: `AppDatabaseResource` reads it from the environment at run time,
so it does not show in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypedDict

import dagster as dg
from psycopg2.extensions import connection as Connection

from observing_pipelines.clients.commons import CommonsClient
from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import HttpPolicy, PoliteHttpClient
from observing_pipelines.clients.iucn import IucnClient
from observing_pipelines.clients.wikidata import WikidataClient
from observing_pipelines.db.connection import connect, database_url, kept_connection
from observing_pipelines.settings import API_DEFAULTS, DEFAULT_USER_AGENT, Settings


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

    def kept_connection(self) -> AbstractContextManager[Connection]:
        """The sensors' connection, kept across ticks (`connection.kept_connection`)."""
        return kept_connection(self.resolved_url())


class HttpApiResource(dg.ConfigurableResource):
    """The politeness knobs every API resource shares; each API's defaults are its entry in
    `settings.API_DEFAULTS`."""

    base_url: str
    user_agent: str = DEFAULT_USER_AGENT
    timeout_seconds: float = 15.0
    max_attempts: int = 5
    max_retry_after_seconds: float = 120.0
    min_interval_ms: int
    max_concurrency: int

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


_GBIF, _WIKIDATA = API_DEFAULTS["gbif"], API_DEFAULTS["wikidata"]
_COMMONS, _IUCN = API_DEFAULTS["commons"], API_DEFAULTS["iucn"]


class GbifResource(HttpApiResource):
    base_url: str = _GBIF.base_url
    min_interval_ms: int = _GBIF.min_interval_ms
    max_concurrency: int = _GBIF.max_concurrency
    match_batch_size: int = Settings.gbif_match_batch_size
    max_names_per_second: int = Settings.gbif_max_names_per_second

    def get_client(self) -> GbifClient:
        return GbifClient(
            self.http_client("gbif"),
            match_batch_size=self.match_batch_size,
            max_names_per_second=self.max_names_per_second,
        )


class WikidataResource(HttpApiResource):
    base_url: str = _WIKIDATA.base_url
    timeout_seconds: float = _WIKIDATA.min_timeout_seconds
    min_interval_ms: int = _WIKIDATA.min_interval_ms
    max_concurrency: int = _WIKIDATA.max_concurrency

    def get_client(self) -> WikidataClient:
        return WikidataClient(self.http_client("wikidata"))


class CommonsResource(HttpApiResource):
    base_url: str = _COMMONS.base_url
    min_interval_ms: int = _COMMONS.min_interval_ms
    max_concurrency: int = _COMMONS.max_concurrency

    def get_client(self) -> CommonsClient:
        return CommonsClient(self.http_client("commons"))


class IucnResource(HttpApiResource):
    """IUCN Red List API v4. Without a token the conservation job reads GBIF instead.

    The token is an `EnvVar`, so Dagster shows its name, never its value.
    """

    base_url: str = _IUCN.base_url
    min_interval_ms: int = _IUCN.min_interval_ms
    max_concurrency: int = _IUCN.max_concurrency
    token: str | None = None

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
    def api(name: str) -> dict[str, Any]:
        http, own = settings.http, settings.apis[name]
        return {
            "base_url": own.base_url,
            "min_interval_ms": own.min_interval_ms,
            "max_concurrency": own.max_concurrency,
            "timeout_seconds": max(http.timeout_seconds, own.min_timeout_seconds),
            "user_agent": http.user_agent,
            "max_attempts": http.max_attempts,
            "max_retry_after_seconds": http.max_retry_after_seconds,
        }

    return {
        "app_db": AppDatabaseResource(),
        "gbif": GbifResource(
            match_batch_size=settings.gbif_match_batch_size,
            max_names_per_second=settings.gbif_max_names_per_second,
            **api("gbif"),
        ),
        "wikidata": WikidataResource(**api("wikidata")),
        "commons": CommonsResource(**api("commons")),
        "iucn": IucnResource(
            token=dg.EnvVar("IUCN_API_TOKEN") if settings.iucn_token_configured else None,
            **api("iucn"),
        ),
    }
