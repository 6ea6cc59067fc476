"""resolve_taxa throughput against a GBIF stand-in that answers after a fixed latency.

Ours, in batches: the real `TaxaResolver` pass with the default settings (GBIF's batch matcher,
GBIF_MATCH_BATCH_SIZE=100 names a POST, GBIF_MAX_NAMES_PER_SECOND=500, GBIF_RATE_LIMIT_MS=100,
i.e. 10 requests/s, shared by GBIF_MAX_CONCURRENCY=4 workers), clients built as `resolve-taxa`
builds them. Ours, one name a request: the same with GBIF_MATCH_BATCH_SIZE=0. Legacy: today's
Rust binary re-enacted in a few lines (one request at a time, then a 100 ms pause, statement per
name). All run in this process on identical databases and the same stand-in (which takes
`--name-cost-ms` more per name of a batch), in turn, the order alternating per round so machine
noise hits all; medians are reported, with the time a 50,000-name backlog takes at that rate.

    .venv/bin/python -m benchmarks.throughput [--names 600] [--latency-ms 100] [--name-cost-ms 2]
        [--rounds 3]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from psycopg2.extensions import connection as Connection

from benchmarks.common import (
    gbif_standin,
    generated_names,
    insert_identifications,
    print_table,
    scratch_database,
    species_keys,
    standin_parser,
)
from observing_pipelines.clients.gbif import MATCH_PATH, parse_match
from observing_pipelines.db import identifications, taxa
from observing_pipelines.db.connection import connect
from observing_pipelines.resources import build_resources
from observing_pipelines.settings import Settings
from observing_pipelines.taxa.matching import judge_match
from observing_pipelines.taxa.resolve_taxa import ResolveOptions, TaxaResolver
from observing_pipelines_tests.fakes import FakeGbif

LEGACY_PAUSE_SECONDS = 0.1  # the binary's --rate-limit-ms default


@dataclass(frozen=True)
class Measurement:
    names: int
    seconds: float
    requests: int
    busiest_second: tuple[int, int]
    """The most requests, and the most names asked, that reached GBIF in any one second."""

    @property
    def names_per_second(self) -> float:
        return self.names / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


def run_ours(db_url: str, settings: Settings) -> int:
    """One pass as `observing-pipelines resolve-taxa` runs it; returns the names resolved."""
    resources = build_resources(settings)
    gbif = resources["gbif"].get_client()
    wikidata = resources["wikidata"].get_client()
    options = ResolveOptions(max_concurrency=settings.apis["gbif"].max_concurrency)
    try:
        with connect(db_url) as conn:
            return TaxaResolver(conn, gbif, wikidata, options).run().names.resolved
    finally:
        gbif.http.close()
        wikidata.http.close()


def run_legacy(db_url: str, settings: Settings) -> int:
    """Today's name pass (app-database-contract.md §5.2): for each distinct (name, kingdom),
    cache lookup, one GET, taxa upsert, UPDATE, then the pause; every statement on its own
    (autocommit); one session for all requests; then the refresh. Returns names resolved."""
    session = requests.Session()
    session.headers["User-Agent"] = settings.http.user_agent
    resolved = 0
    with connect(db_url) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT scientific_name, kingdom FROM ingester.identifications "
                "WHERE accepted_taxon_key IS NULL AND scientific_name <> '' "
                "ORDER BY scientific_name, kingdom"
            )
            pairs = cur.fetchall()
            for name, kingdom in pairs:
                cur.execute(
                    "SELECT taxon_key FROM ingester.taxa WHERE lower(scientific_name) = lower(%s)"
                    " AND (%s::text IS NULL OR kingdom = %s) LIMIT 1",
                    (name, kingdom, kingdom),
                )
                cached = cur.fetchone()
                key = cached[0] if cached else _legacy_ask(session, settings, conn, name, kingdom)
                if key is not None:
                    cur.execute(
                        "UPDATE ingester.identifications SET accepted_taxon_key = %s, "
                        "indexed_at = now() WHERE accepted_taxon_key IS NULL "
                        "AND scientific_name = %s AND (%s::text IS NULL OR kingdom = %s)",
                        (key, name, kingdom, kingdom),
                    )
                    resolved += 1
                time.sleep(LEGACY_PAUSE_SECONDS)
        identifications.refresh_community_ids(conn)
    session.close()
    return resolved


def _legacy_ask(
    session: requests.Session, settings: Settings, conn: Connection, name: str, kingdom: str | None
) -> int | None:
    params = {"scientificName": name} | ({"kingdom": kingdom} if kingdom else {})
    response = session.get(
        settings.apis["gbif"].base_url + MATCH_PATH,
        params=params,
        timeout=settings.http.timeout_seconds,
    )
    if response.status_code != 200:
        return None
    answer = judge_match(parse_match(response.json()))
    taxa.upsert_taxa(conn, answer.rows)
    return answer.accepted_taxon_key


def reset(db_url: str) -> None:
    """Back to the starting line: nothing stamped, cached or remembered."""
    with connect(db_url) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "TRUNCATE ingester.taxa, pipelines.resolution_attempts, pipelines.identification_stamps"
        )
        cur.execute("UPDATE ingester.identifications SET accepted_taxon_key = NULL")
    with connect(db_url) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE ingester.identifications, ingester.taxa")


def measure(
    run: Callable[[str, Settings], int], db_url: str, settings: Settings, fake: FakeGbif
) -> Measurement:
    reset(db_url)
    calls_before, served_before = fake.calls, len(fake.matched_at)
    started = time.monotonic()
    names = run(db_url, settings)
    seconds = time.monotonic() - started
    served = fake.matched_at[served_before:]
    return Measurement(names, seconds, fake.calls - calls_before, busiest_second(served))


def busiest_second(served: list[tuple[float, int]]) -> tuple[int, int]:
    """The most requests and the most names of any window of one second (sliding, from each
    arrival): what a rate limit of N a second promises never to exceed."""
    most_requests = most_names = 0
    for i, (start, _) in enumerate(served):
        window = [names for at, names in served[i:] if at < start + 1.0]
        most_requests, most_names = max(most_requests, len(window)), max(most_names, sum(window))
    return most_requests, most_names


BACKLOG = 50_000


def main() -> None:
    parser = standin_parser(__doc__, names=600, latency_ms=100.0)
    parser.add_argument("--name-cost-ms", type=float, default=2.0, help="stand-in cost a name")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each algorithm")
    args = parser.parse_args()

    names = generated_names(args.names)
    keys = species_keys(names)
    algorithms: dict[str, tuple[Callable[[str, Settings], int], dict[str, str]]] = {
        "ours, batches (defaults)": (run_ours, {}),
        "ours, one name a request": (run_ours, {"GBIF_MATCH_BATCH_SIZE": "0"}),
        "legacy (serial + 100 ms)": (run_legacy, {}),
    }
    results: dict[str, list[Measurement]] = {label: [] for label in algorithms}
    with (
        gbif_standin(args.latency_ms / 1000, keys, name_cost_seconds=args.name_cost_ms / 1000) as (
            base_url,
            fake,
        ),
        scratch_database(prefix="op_bench_batches") as batches_db,
        scratch_database(prefix="op_bench_single") as single_db,
        scratch_database(prefix="op_bench_legacy") as legacy_db,
    ):
        databases = dict(zip(algorithms, (batches_db, single_db, legacy_db), strict=True))
        for db_url in databases.values():
            insert_identifications(db_url, names, 1)
        for round_number in range(args.rounds):
            order = list(algorithms) if round_number % 2 == 0 else list(reversed(algorithms))
            for label in order:
                run, env = algorithms[label]
                settings = Settings.from_env({"GBIF_BASE_URL": base_url, **env})
                result = measure(run, databases[label], settings, fake)
                if result.names != args.names:
                    raise SystemExit(f"{label} resolved {result.names} of {args.names} names")
                results[label].append(result)
                print(
                    f"round {round_number + 1}: {label}: {result.seconds:.2f}s, "
                    f"{result.names_per_second:.1f} names/s, "
                    f"{result.requests_per_second:.2f} requests/s",
                    flush=True,
                )

    defaults = Settings.from_env({})
    gbif = defaults.apis["gbif"]
    limit = 1000 / gbif.min_interval_ms
    single_rate = statistics.median(m.names_per_second for m in results[list(algorithms)[1]])
    legacy_rate = statistics.median(m.names_per_second for m in results[list(algorithms)[2]])
    rows = []
    for label, measurements in results.items():
        names_per_second = statistics.median(m.names_per_second for m in measurements)
        requests_per_second = statistics.median(m.requests_per_second for m in measurements)
        busiest = [max(m.busiest_second[i] for m in measurements) for i in (0, 1)]
        rows.append(
            [
                label,
                args.names,
                statistics.median(m.seconds for m in measurements),
                names_per_second,
                requests_per_second,
                f"{requests_per_second / limit:.0%}",
                f"{names_per_second / single_rate:.1f}x",
                f"{names_per_second / legacy_rate:.1f}x",
                "{} / {}".format(*busiest),
                _duration(BACKLOG / names_per_second),
            ]
        )
    print_table(
        f"resolve_taxa throughput: {args.names} names, stand-in latency {args.latency_ms:g} ms "
        f"(+{args.name_cost_ms:g} ms a name of a batch), rate limit {limit:g} requests/s "
        f"(GBIF_RATE_LIMIT_MS={gbif.min_interval_ms}) and "
        f"{defaults.gbif_max_names_per_second} names/s, "
        f"GBIF_MAX_CONCURRENCY={gbif.max_concurrency}, median of {args.rounds} rounds",
        [
            "algorithm",
            "names",
            "seconds",
            "names/s",
            "requests/s",
            "share of request limit",
            "ratio vs one a request",
            "ratio vs legacy",
            "busiest second: requests / names",
            f"{BACKLOG:,} names in",
        ],
        rows,
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {rest:02d}s" if hours else f"{minutes}m {rest:02d}s"


if __name__ == "__main__":
    main()
