"""Shared pieces of the benchmark scripts: a Postgres server, scratch databases, bulk test data,
a GBIF stand-in with latency, the Dagster services as the container starts them, and tables.

Everything here is real (Postgres, loopback HTTP, subprocesses), so the numbers include what
production pays for; only GBIF is simulated, with a fixed answer delay.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from pytest_httpserver import HTTPServer

from observing_pipelines.db import migrate
from observing_pipelines_tests.cloud_sql import new_database
from observing_pipelines_tests.fakes import HELIANTHUS_LINEAGE, PacedGbif, match_body
from observing_pipelines_tests.services import Services
from observing_pipelines_tests.support import PROJECT_ROOT

FIRST_SPECIES_KEY = 100_000_000
GENUS_KEY_BASE = 9_000_000_000
"""Generated genera get keys from here up, clear of any species key a benchmark picks."""


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A markdown table, so results paste straight into an issue or PR."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- Postgres --------------------------------------------------------------------------------


@functools.cache
def server_url() -> str:
    """A server where databases may be created; the embedded one only when none is configured
    (started once per process, stopped when it exits)."""
    configured = os.environ.get("OBSERVING_BENCH_DATABASE_URL") or os.environ.get(
        "OBSERVING_TEST_DATABASE_URL"
    )
    if configured:
        return configured
    from observing_pipelines.db.embedded import start_embedded_postgres

    return start_embedded_postgres(PROJECT_ROOT / ".local" / "bench-pgdata", keep_running=False)


@contextmanager
def scratch_database(server: str | None = None, *, prefix: str = "op_bench") -> Iterator[str]:
    """A fresh database migrated like `observing-pipelines migrate --app-mirror`, dropped at exit
    even if connections are still open."""
    with new_database(server or server_url(), prefix=prefix) as url:
        migrate.upgrade_all(url, app_mirror=True)
        yield url


_INSERT_IDENTIFICATIONS = """
WITH wanted AS (
    SELECT w.i, w.name, g.n
    FROM bench_wanted w CROSS JOIN LATERAL generate_series(1, w.count) AS g(n)
), occurrences AS (
    INSERT INTO ingester.occurrences (uri, cid, did, created_at)
    SELECT %(prefix)s || 'occurrence/' || i || '-' || n, 'bench-cid',
           'did:plc:observer' || (i %% 1000), now()
    FROM wanted
)
INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid, scientific_name,
    kingdom, date_identified)
SELECT %(prefix)s || 'identification/' || i || '-' || n, 'bench-cid',
       'did:plc:identifier' || ((i + n) %% 1000), %(prefix)s || 'occurrence/' || i || '-' || n,
       'bench-cid', name, %(kingdom)s, now()
FROM wanted
"""


def insert_identifications(
    db_url: str,
    names: Sequence[str],
    per_name: int | Sequence[int],
    kingdom: str | None = "Plantae",
) -> int:
    """Add `per_name` identifications (each on its own occurrence) for every name; return how
    many were added.

    The rows are what `identifications.insert_identifications` writes, but made inside Postgres by
    one `INSERT ... SELECT` over the names COPYed in: a million rows cost the index upkeep and
    little else. Repeated calls never collide (each uses its own URI prefix).
    """
    counts = [per_name] * len(names) if isinstance(per_name, int) else list(per_name)
    if len(counts) != len(names):
        raise ValueError(f"{len(names)} names but {len(counts)} counts")
    rows = io.StringIO()
    csv.writer(rows).writerows(zip(range(len(names)), names, counts, strict=True))
    rows.seek(0)
    prefix = f"at://did:plc:bench/{uuid.uuid4().hex[:8]}/"
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TEMPORARY TABLE bench_wanted (i bigint, name text, count int) "
                "ON COMMIT DROP"
            )
            cur.copy_expert("COPY bench_wanted FROM STDIN WITH (FORMAT csv)", rows)
            cur.execute(_INSERT_IDENTIFICATIONS, {"prefix": prefix, "kingdom": kingdom})
            added = cur.rowcount
            cur.execute("ANALYZE ingester.identifications, ingester.occurrences")
        return added
    finally:
        conn.close()


# -- names and the GBIF stand-in -------------------------------------------------------------

_ONSETS = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "ph", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "io")
_GENUS_ENDINGS = ("us", "a", "um", "is", "ella", "odon", "anthus", "opsis", "ites")
_EPITHET_ENDINGS = ("us", "a", "um", "is", "ensis", "oides", "ata", "ii", "ica", "ifolia")


def _word(rng: random.Random, endings: Sequence[str]) -> str:
    syllables = rng.randint(2, 3)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + (
        rng.choice(endings)
    )


def generated_names(n: int, seed: int = 0) -> list[str]:
    """`n` distinct binomials ("Genus epithet"), about ten species per genus, the same for
    the same seed: plausible names without any list of real ones."""
    rng = random.Random(seed)
    genera: set[str] = set()
    while len(genera) < max(1, n // 10):
        genera.add(_word(rng, _GENUS_ENDINGS).capitalize())
    pool = sorted(genera)
    names: dict[str, None] = {}  # insertion-ordered set
    while len(names) < n:
        names.setdefault(f"{rng.choice(pool)} {_word(rng, _EPITHET_ENDINGS)}", None)
    return list(names)


def standin_parser(doc: str, *, names: int, latency_ms: float) -> argparse.ArgumentParser:
    """Options every benchmark against the GBIF stand-in takes: how many names, how slow."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--names", type=int, default=names, help="distinct unstamped names")
    parser.add_argument("--latency-ms", type=float, default=latency_ms, help="stand-in delay")
    return parser


def species_keys(names: Sequence[str]) -> dict[str, int]:
    """A backbone key for each generated name, for the GBIF stand-in to answer with."""
    return {name: FIRST_SPECIES_KEY + i for i, name in enumerate(names)}


@contextmanager
def gbif_standin(
    latency_seconds: float,
    names: Mapping[str, int] | None = None,
    *,
    name_cost_seconds: float = 0.0,
) -> Iterator[tuple[str, PacedGbif]]:
    """A threaded loopback server answering `/v2/species/match` like GBIF after
    `latency_seconds` (a batch POST `name_cost_seconds` a name more); it knows each name as an
    accepted species with the given key (its genus gets a generated key under a fixed plant
    lineage) and answers NONE otherwise."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with HTTPServer(host="127.0.0.1", threaded=True) as server:
        fake = PacedGbif(server, delay=latency_seconds, name_cost=name_cost_seconds)
        genus_keys: dict[str, int] = {}
        family_lineage = HELIANTHUS_LINEAGE[:-1]  # kingdom to family; the genus is generated
        for name, key in (names or {}).items():
            genus = name.split()[0]
            genus_key = genus_keys.setdefault(genus, GENUS_KEY_BASE + len(genus_keys))
            lineage = [*family_lineage, (genus_key, genus, "GENUS")]
            fake.add_name(name, match_body("EXACT", (key, name, "SPECIES"), lineage))
        yield server.url_for("").rstrip("/"), fake


# -- Dagster services ------------------------------------------------------------------------


@contextmanager
def dagster_services(
    db_url: str,
    workdir: Path,
    *,
    instance: dict[str, Any],
    env: Mapping[str, str] | None = None,
) -> Iterator[Services]:
    """Webserver and daemon as the container starts them (the tests' `Services`), with
    `instance` as dagster.yaml, once every required daemon has a fresh heartbeat; stopped (and
    anything they left behind) at exit. Logs: workdir/<service>.log."""
    started = time.time()
    services = Services(workdir, db_url, dict(env or {}), instance=instance)
    try:
        services.wait_until_ready(started)
        yield services
    finally:
        services.stop()
