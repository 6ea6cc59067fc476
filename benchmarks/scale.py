"""Database work of resolve_taxa at 10k, 100k and 1M identifications, with the taxa cache warm.

Each size gets its own database: 20 identifications per name (1M rows over 50,000 names), 99% of
the names already in `ingester.taxa` and 1% remembered as not found (backing off, so they stay
unstamped, as in production). Then, in order:

1. full pass: every identification stamped from the cache (selection, stamping, view refresh);
2. nothing to do: the same pass again, with the mirror's partial index on unstamped rows;
3. one new ingest: a single new identification arrives, so the whole-table steps run again;
4. nothing to do, without the partial index (production today).

`VACUUM ANALYZE` runs between passes 1 and 2, as autovacuum would after a million updates.
Time per step is the wall time of our SQL calls (patched in around the `db` modules);
"rest" is commits and Python. GBIF points at a closed port: a warm pass must not call it.

    .venv/bin/python -m benchmarks.scale [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

from benchmarks.common import generated_names, insert_identifications, print_table, scratch_database
from observing_pipelines.clients.gbif import GbifClient
from observing_pipelines.clients.http import HttpPolicy, PoliteHttpClient
from observing_pipelines.clients.wikidata import WikidataClient
from observing_pipelines.db import change_marks, identifications, resolution_attempts, taxa
from observing_pipelines.taxa.names import normalise_name, subject_digest
from observing_pipelines.taxa.resolve_taxa import PassReport, ResolveOptions, TaxaResolver
from observing_pipelines_tests.services import fetch

PER_NAME = 20
NOT_FOUND_SHARE = 0.01
SPECIES_KEY_BASE = 100_000_000
CLOSED_PORT_URL = "http://127.0.0.1:9"

STEPS: dict[str, tuple[tuple[Any, str], ...]] = {
    "selection": (
        (identifications, "view_source_writes"),
        (identifications, "pending_name_pairs"),
        (identifications, "pending_taxon_ids"),
        (taxa, "taxa_by_lower_name"),
        (taxa, "taxa_by_key"),
        (change_marks, "change_mark"),
        (resolution_attempts, "load_attempts"),
    ),
    "edit sweep": ((identifications, "reset_edited_identifications"),),
    "upsert + stamp": (
        (identifications, "take_write_lock"),
        (taxa, "upsert_taxa"),
        (identifications, "stamp_by_name"),
        (identifications, "stamp_by_taxon_id"),
        (resolution_attempts, "record_attempts"),
        (change_marks, "save_change_mark"),
    ),
    "view refresh": ((identifications, "refresh_community_ids"),),
}


@dataclass
class Measured:
    report: PassReport
    seconds: float
    steps: dict[str, float]
    seq_scans: int


@contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Accumulate the wall time of each step's SQL functions while the block runs."""
    spent: dict[str, float] = defaultdict(float)
    originals: list[tuple[Any, str, Callable[..., Any]]] = []

    def timed(step: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[step] += time.perf_counter() - started

        return wrapper

    for step, functions in STEPS.items():
        for module, name in functions:
            original = getattr(module, name)
            originals.append((module, name, original))
            setattr(module, name, timed(step, original))
    try:
        yield spent
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def seq_scans(url: str) -> int:
    return fetch(
        url,
        "SELECT seq_scan FROM pg_stat_user_tables "
        "WHERE relid = 'ingester.identifications'::regclass",
    )[0][0]


def load(url: str, rows: int) -> None:
    """Identifications, a warm taxa cache for 99% of their names, and the rest remembered as
    not found (next try in a month)."""
    names = generated_names(max(1, rows // PER_NAME), seed=rows)
    insert_identifications(url, names, PER_NAME, kingdom="Plantae")
    unknown = max(1, int(len(names) * NOT_FOUND_SHARE))
    known, missing = names[:-unknown], names[-unknown:]
    later = datetime.now(UTC) + timedelta(days=30)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            execute_values(
                cur,
                "INSERT INTO ingester.taxa (taxon_key, scientific_name, rank, status, "
                "accepted_taxon_key, kingdom, kingdom_key) VALUES %s",
                [
                    (
                        SPECIES_KEY_BASE + i,
                        name,
                        "SPECIES",
                        "ACCEPTED",
                        SPECIES_KEY_BASE + i,
                        "Plantae",
                        6,
                    )
                    for i, name in enumerate(known)
                ],
                page_size=5000,
            )
            execute_values(
                cur,
                "INSERT INTO pipelines.resolution_attempts (subject_kind, subject_digest, "
                "subject, kingdom, outcome, attempts, last_error, next_attempt_at) VALUES %s",
                [
                    (
                        "name",
                        subject_digest(normalise_name(name), "plantae"),
                        name,
                        "Plantae",
                        "not_found",
                        1,
                        "no match",
                        later,
                    )
                    for name in missing
                ],
                page_size=5000,
            )
    finally:
        conn.close()
    fetch(url, "VACUUM ANALYZE", autocommit=True)


def run_pass(url: str) -> Measured:
    policy = HttpPolicy(user_agent="observing-pipelines-bench/1.0", timeout_seconds=1.0)
    scans_before = seq_scans(url)
    gbif_http = PoliteHttpClient("gbif", CLOSED_PORT_URL, policy)
    wikidata_http = PoliteHttpClient("wikidata", CLOSED_PORT_URL, policy)
    conn = psycopg2.connect(url)
    try:
        resolver = TaxaResolver(
            conn, GbifClient(gbif_http), WikidataClient(wikidata_http), ResolveOptions()
        )
        with timed_steps() as steps:
            started = time.perf_counter()
            report = resolver.run()
            seconds = time.perf_counter() - started
    finally:
        conn.close()
        gbif_http.close()
        wikidata_http.close()
    if report.http_calls:
        raise AssertionError(f"a warm pass called upstream {report.http_calls} times")
    time.sleep(0.6)  # the statistics of the pass's own scans reach pg_stat_user_tables
    return Measured(report, seconds, dict(steps), seq_scans(url) - scans_before)


def one_new_ingest(url: str) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn:
            (name,) = fetch(url, "SELECT scientific_name FROM ingester.taxa LIMIT 1")[0]
            identifications.insert_identifications(
                conn,
                [
                    identifications.NewIdentification(
                        "at://did:plc:bench/identification/new",
                        "did:plc:new",
                        "at://did:plc:bench/occurrence/new",
                        name,
                        "Plantae",
                    )
                ],
            )
    finally:
        conn.close()


def measure_size(rows: int) -> list[tuple[str, Measured]]:
    with scratch_database(prefix="op_scale") as url:
        load(url, rows)
        results = [("full pass", run_pass(url))]
        fetch(url, "VACUUM ANALYZE ingester.identifications", autocommit=True)
        results.append(("nothing to do", run_pass(url)))
        one_new_ingest(url)
        results.append(("one new ingest", run_pass(url)))
        fetch(url, "DROP INDEX ingester.identifications_unstamped_idx")
        fetch(url, "ANALYZE ingester.identifications", autocommit=True)
        results.append(("nothing to do, no partial index", run_pass(url)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="identification counts")
    args = parser.parse_args()
    table = []
    for rows in (int(size) for size in args.sizes.split(",")):
        for label, measured in measure_size(rows):
            steps = measured.steps
            report = measured.report
            table.append(
                [
                    rows,
                    rows // PER_NAME,
                    label,
                    measured.seconds,
                    *(steps.get(step, 0.0) for step in STEPS),
                    measured.seconds - sum(steps.values()),
                    report.names.rows_stamped + report.taxon_ids.rows_stamped,
                    measured.seq_scans,
                ]
            )
            print(f"{rows:>9,} {label}: {measured.seconds:.2f} s", flush=True)
    print_table(
        "resolve_taxa database work by size (seconds; taxa cache warm, no upstream calls)",
        [
            "identifications",
            "names",
            "pass",
            "total s",
            *STEPS,
            "rest",
            "rows stamped",
            "seq scans of identifications",
        ],
        table,
    )


if __name__ == "__main__":
    main()
