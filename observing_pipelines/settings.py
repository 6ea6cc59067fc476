"""Configuration from the environment, read and validated in one place.

Every other module receives a `Settings` (or the part of it it needs) instead of reading
`os.environ` itself, so the table in the README is the whole truth about configuration.
The database variables are the app's own (`DATABASE_URL`, or `DB_HOST`/`DB_PORT`/`DB_NAME`/
`DB_USER`/`DB_PASSWORD`, as the app's `pg-url-env` crate reads them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_USER_AGENT = (
    "observing-pipelines/0.1 (https://observ.ing; https://github.com/observ-ing/core; "
    "taxonomy maintenance jobs)"
)


class SettingsError(ValueError):
    """A configuration value is present but unusable (bad number, bad URL)."""


@dataclass(frozen=True)
class DatabaseSettings:
    """The app's database variables, verbatim. `connection.database_url` turns them into a URL."""

    url: str | None = None
    host: str | None = None
    port: int = 5432
    name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.url or self.host)


@dataclass(frozen=True)
class HttpSettings:
    """The politeness policy shared by every API client."""

    user_agent: str = DEFAULT_USER_AGENT
    timeout_seconds: float = 15.0
    max_attempts: int = 5
    max_retry_after_seconds: float = 120.0


@dataclass(frozen=True)
class GraphqlSettings:
    """Where `observing-pipelines trigger` reaches the webserver's GraphQL API."""

    host: str = "127.0.0.1"
    port: int = 3000
    path_prefix: str = ""
    https: bool = False
    authorization: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    http: HttpSettings
    graphql: GraphqlSettings = field(default_factory=GraphqlSettings)
    gbif_base_url: str = "https://api.gbif.org"
    gbif_min_interval_ms: int = 100
    gbif_max_concurrency: int = 4
    wikidata_sparql_url: str = "https://query.wikidata.org/sparql"
    wikidata_min_interval_ms: int = 1000
    commons_api_url: str = "https://commons.wikimedia.org/w/api.php"
    iucn_base_url: str = "https://api.iucnredlist.org/api/v4"
    iucn_token_configured: bool = False
    # Every schedule's cadence, in one place (README "Configuration" lists the variables).
    resolve_taxa_cron: str = "*/5 * * * *"
    thumbnails_cron: str = "30 3 * * *"
    conservation_cron: str = "0 4 * * 1"
    freshness_cron: str = "0 2 * * *"
    schedule_timezone: str = "UTC"
    embedded_pgdata: Path = Path(".local/pgdata")
    webserver_port: int = 8080
    webserver_path_prefix: str = ""
    webserver_read_only: bool = False
    workspace: Path = Path("workspace.yaml")
    jobs_runtime_password: str | None = field(default=None, repr=False)
    """Set on the jobs_runtime role by `migrate` (its job reads it from Secret Manager)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        database = DatabaseSettings(
            url=_text(env, "DATABASE_URL"),
            host=_text(env, "DB_HOST"),
            port=_port(env, "DB_PORT", 5432),
            name=_text(env, "DB_NAME"),
            user=_text(env, "DB_USER"),
            password=env.get("DB_PASSWORD") or None,
        )
        http = HttpSettings(
            user_agent=_text(env, "HTTP_USER_AGENT") or DEFAULT_USER_AGENT,
            timeout_seconds=_number(env, "HTTP_TIMEOUT_SECONDS", 15.0),
            max_attempts=_integer(env, "HTTP_MAX_ATTEMPTS", 5, minimum=1),
            max_retry_after_seconds=_number(env, "HTTP_MAX_RETRY_AFTER_SECONDS", 120.0),
        )
        graphql = GraphqlSettings(
            host=_text(env, "DAGSTER_GRAPHQL_HOST") or GraphqlSettings.host,
            port=_port(env, "DAGSTER_GRAPHQL_PORT", GraphqlSettings.port),
            path_prefix=_text(env, "DAGSTER_GRAPHQL_PATH_PREFIX") or "",
            https=_boolean(env, "DAGSTER_GRAPHQL_HTTPS", False),
            authorization=_text(env, "DAGSTER_GRAPHQL_AUTHORIZATION"),
        )
        return cls(
            database=database,
            http=http,
            graphql=graphql,
            gbif_base_url=_text(env, "GBIF_BASE_URL") or cls.gbif_base_url,
            gbif_min_interval_ms=_integer(env, "GBIF_RATE_LIMIT_MS", cls.gbif_min_interval_ms),
            gbif_max_concurrency=_integer(
                env, "GBIF_MAX_CONCURRENCY", cls.gbif_max_concurrency, minimum=1
            ),
            wikidata_sparql_url=_text(env, "WIKIDATA_SPARQL_URL") or cls.wikidata_sparql_url,
            wikidata_min_interval_ms=_integer(
                env, "WIKIDATA_RATE_LIMIT_MS", cls.wikidata_min_interval_ms
            ),
            commons_api_url=_text(env, "COMMONS_API_URL") or cls.commons_api_url,
            iucn_base_url=_text(env, "IUCN_BASE_URL") or cls.iucn_base_url,
            iucn_token_configured=_text(env, "IUCN_API_TOKEN") is not None,
            resolve_taxa_cron=_text(env, "RESOLVE_TAXA_CRON") or cls.resolve_taxa_cron,
            thumbnails_cron=_text(env, "THUMBNAILS_CRON") or cls.thumbnails_cron,
            conservation_cron=_text(env, "CONSERVATION_CRON") or cls.conservation_cron,
            freshness_cron=_text(env, "FRESHNESS_CRON") or cls.freshness_cron,
            schedule_timezone=_text(env, "SCHEDULE_TIMEZONE") or cls.schedule_timezone,
            embedded_pgdata=Path(_text(env, "EMBEDDED_PGDATA") or cls.embedded_pgdata),
            webserver_port=_port(env, "PORT", cls.webserver_port),
            webserver_path_prefix=_text(env, "WEBSERVER_PATH_PREFIX") or "",
            webserver_read_only=_boolean(env, "WEBSERVER_READ_ONLY", False),
            workspace=Path(_text(env, "DAGSTER_WORKSPACE") or cls.workspace).resolve(),
            jobs_runtime_password=env.get("JOBS_RUNTIME_PASSWORD") or None,
        )


def _text(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    return value or None


def _integer(
    env: Mapping[str, str], key: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = _text(env, key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise SettingsError(f"{key} must be a whole number, got {raw[:40]!r}") from error
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
        raise SettingsError(f"{key} must be {bounds}, got {value}")
    return value


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    return _integer(env, key, default, minimum=1, maximum=65535)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(env: Mapping[str, str], key: str, default: bool) -> bool:
    """The usual spellings, in any case; anything else is refused rather than read as false
    (`WEBSERVER_READ_ONLY=1` must never give a writable webserver)."""
    raw = _text(env, key)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{key} must be true or false (1/0, yes/no, on/off), got {raw[:40]!r}")


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = _text(env, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise SettingsError(f"{key} must be a number, got {raw[:40]!r}") from error
    if value <= 0:
        raise SettingsError(f"{key} must be positive, got {value}")
    return value
