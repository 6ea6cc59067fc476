"""Configuration from the environment, read and validated in one place.

Every other module receives a `Settings` (or the part of it it needs) instead of reading
`os.environ` itself, so the table in the README is the whole truth about configuration.
The database variables are the app's own (`DATABASE_URL`, or `DB_HOST`/`DB_PORT`/`DB_NAME`/
`DB_USER`/`DB_PASSWORD`, as the app's `pg-url-env` crate reads them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
class ApiSettings:
    """One external API: where it is, and how politely we call it (`clients/http.py`)."""

    base_url: str
    min_interval_ms: int
    """The least time between two requests (the API's rate limit, as an interval)."""
    max_concurrency: int
    """Requests in flight at once, and the look-ups a job runs at once against it."""
    min_timeout_seconds: float = 0.0
    """A floor under `HTTP_TIMEOUT_SECONDS` for an API that is slow by design."""


API_URL_VARIABLES = {
    "gbif": "GBIF_BASE_URL",
    "wikidata": "WIKIDATA_SPARQL_URL",
    "commons": "COMMONS_API_URL",
    "iucn": "IUCN_BASE_URL",
}
API_DEFAULTS = {
    "gbif": ApiSettings("https://api.gbif.org", min_interval_ms=100, max_concurrency=4),
    # WDQS: its budget is query time per client; one query at a time, a second apart.
    "wikidata": ApiSettings(
        "https://query.wikidata.org/sparql", 1000, max_concurrency=1, min_timeout_seconds=60.0
    ),
    # Commons Action API: serial requests, as Wikimedia asks of batch clients.
    "commons": ApiSettings("https://commons.wikimedia.org/w/api.php", 500, max_concurrency=1),
    "iucn": ApiSettings("https://api.iucnredlist.org/api/v4", 500, max_concurrency=2),
}
"""Every external API, its defaults declared once: `<API>_RATE_LIMIT_MS` and
`<API>_MAX_CONCURRENCY` (and the URL variable above) override them."""


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    http: HttpSettings
    graphql: GraphqlSettings = field(default_factory=GraphqlSettings)
    apis: Mapping[str, ApiSettings] = field(default_factory=lambda: dict(API_DEFAULTS))
    gbif_match_batch_size: int = 100
    """Names (or keys) per GBIF batch match, a POST; 0 asks one a GET."""
    gbif_max_names_per_second: int = 500
    """Names (or keys) asked of GBIF's matcher a second, batched or not."""
    iucn_token_configured: bool = False
    crons: Mapping[str, str] = field(default_factory=dict)
    """`<JOB>_CRON` variables as set; each job's own `JobSpec.cron` is the default."""
    schedule_timezone: str = "UTC"
    sensor_interval_seconds: int = 10
    """How often the sensors of new work (new identifications, the app's requests, the view's
    refresh) look; each look is a catalog read or an indexed query on a kept connection."""
    new_work_sensors: bool = True
    """Whether new identifications start a resolve_taxa run at once and the view's sensor
    refreshes community_ids on its budget; off, only the schedule, as before."""
    community_ids_min_interval_seconds: int = 30
    community_ids_duration_factor: float = 10.0
    community_ids_max_lag_seconds: int = 300
    """The refresh budget of `community_ids` (`taxa.community_ids.RefreshBudget`)."""
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
            apis={name: _api(env, name, defaults) for name, defaults in API_DEFAULTS.items()},
            gbif_match_batch_size=_integer(
                env, "GBIF_MATCH_BATCH_SIZE", cls.gbif_match_batch_size, maximum=1000
            ),
            gbif_max_names_per_second=_integer(
                env, "GBIF_MAX_NAMES_PER_SECOND", cls.gbif_max_names_per_second, minimum=1
            ),
            iucn_token_configured=_text(env, "IUCN_API_TOKEN") is not None,
            crons={
                key: value
                for key in env
                if key.endswith(CRON_SUFFIX) and (value := _text(env, key)) is not None
            },
            schedule_timezone=_text(env, "SCHEDULE_TIMEZONE") or cls.schedule_timezone,
            sensor_interval_seconds=_integer(
                env, "SENSOR_INTERVAL_SECONDS", cls.sensor_interval_seconds, minimum=1
            ),
            new_work_sensors=_boolean(env, "NEW_WORK_SENSORS", cls.new_work_sensors),
            community_ids_min_interval_seconds=_integer(
                env, "COMMUNITY_IDS_MIN_INTERVAL", cls.community_ids_min_interval_seconds
            ),
            community_ids_duration_factor=_number(
                env, "COMMUNITY_IDS_DURATION_FACTOR", cls.community_ids_duration_factor
            ),
            community_ids_max_lag_seconds=_integer(
                env, "COMMUNITY_IDS_MAX_LAG", cls.community_ids_max_lag_seconds, minimum=1
            ),
            embedded_pgdata=Path(_text(env, "EMBEDDED_PGDATA") or cls.embedded_pgdata),
            webserver_port=_port(env, "PORT", cls.webserver_port),
            webserver_path_prefix=_text(env, "WEBSERVER_PATH_PREFIX") or "",
            webserver_read_only=_boolean(env, "WEBSERVER_READ_ONLY", False),
            workspace=Path(_text(env, "DAGSTER_WORKSPACE") or cls.workspace).resolve(),
            jobs_runtime_password=env.get("JOBS_RUNTIME_PASSWORD") or None,
        )

    def cron(self, job: str, default: str) -> str:
        """The schedule of `job`: `<JOB>_CRON` if set, else the job's own default."""
        return self.crons.get(cron_variable(job), default)


CRON_SUFFIX = "_CRON"


def cron_variable(job: str) -> str:
    return f"{job.upper()}{CRON_SUFFIX}"


def _api(env: Mapping[str, str], name: str, defaults: ApiSettings) -> ApiSettings:
    prefix = name.upper()
    return replace(
        defaults,
        base_url=_text(env, API_URL_VARIABLES[name]) or defaults.base_url,
        min_interval_ms=_integer(env, f"{prefix}_RATE_LIMIT_MS", defaults.min_interval_ms),
        max_concurrency=_integer(
            env, f"{prefix}_MAX_CONCURRENCY", defaults.max_concurrency, minimum=1
        ),
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
