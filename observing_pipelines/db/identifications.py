"""The app's identifications (and the occurrences they belong to): the work of resolve_taxa.

If observ-ing/core changes a column, this module changes and nothing else. Every statement is
set-based (arrays in, one statement per batch): no statement per identification. Names are
schema-qualified, because our connections do not rely on the app's `search_path`.

Stamping also records, in `pipelines.identification_stamps`, what each stamp was made from; it
happens in the same statement so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import connection as Connection
from psycopg2.extras import execute_values

from observing_pipelines.db.connection import AdvisoryLock, fetch_count


@dataclass(frozen=True)
class NamePair:
    scientific_name: str
    kingdom: str | None


def take_write_lock(conn: Connection) -> None:
    """Serialise our writers (overlapping runs, the CLI next to a scheduled run), so two passes
    never deadlock on the same taxa or identification rows; released at commit."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (int(AdvisoryLock.WRITES),))


def pending_name_pairs(conn: Connection, kingdom: str | None = None) -> list[NamePair]:
    """Distinct (name, kingdom) of identifications not yet stamped (today's name-pass query)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT DISTINCT scientific_name, kingdom FROM ingester.identifications
            WHERE accepted_taxon_key IS NULL AND scientific_name <> ''
              AND (%(kingdom)s::text IS NULL OR lower(kingdom) = lower(%(kingdom)s))
            ORDER BY scientific_name, kingdom
            """,
            {"kingdom": kingdom},
        )
        return [NamePair(name, kingdom) for name, kingdom in cur.fetchall()]


def pending_taxon_ids(conn: Connection, kingdom: str | None = None) -> list[str]:
    """Distinct taxonID URIs of identifications still unstamped after the name pass."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT DISTINCT taxon_id FROM ingester.identifications
            WHERE accepted_taxon_key IS NULL AND taxon_id IS NOT NULL AND taxon_id <> ''
              AND (%(kingdom)s::text IS NULL OR lower(kingdom) = lower(%(kingdom)s))
            ORDER BY taxon_id
            """,
            {"kingdom": kingdom},
        )
        return [uri for (uri,) in cur.fetchall()]


def view_source_writes(conn: Connection) -> int:
    """Rows ever inserted, updated or deleted in the tables `community_ids` reads
    (identifications and occurrences), from the server's cumulative statistics: a catalog
    read, whatever the tables' size.

    The counters can lag a busy writer by seconds and restart from zero after a crash or a
    stats reset; callers only compare them for equality, so either shows up as a change.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE relid IN ('ingester.identifications'::regclass, "
            "'ingester.occurrences'::regclass)"
        )
        return fetch_count(cur)


def identification_writes(conn: Connection) -> tuple[int, int]:
    """Rows ever inserted, and rows ever updated or deleted, in `identifications`: the new-work
    sensor's catalog read (see `view_source_writes` for what the counters promise). New
    identifications are inserts; our stamps are updates only."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n_tup_ins, n_tup_upd + n_tup_del FROM pg_stat_user_tables "
            "WHERE relid = 'ingester.identifications'::regclass"
        )
        row = cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)


def publish_own_writes(conn: Connection) -> None:
    """Have this session's write counts reach `pg_stat_user_tables` at its next commit instead
    of a second or more later (PostgreSQL 15+; older servers send them when the session next
    reports, at the latest when it closes). The next pass then finds our own stamps counted."""
    if conn.server_version >= 150000:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_force_next_flush()")


def reset_edited_identifications(conn: Connection, *, dry_run: bool) -> int:
    """Unstamp identifications whose name, kingdom or taxonID changed since we stamped them.

    The ingest upsert keeps an existing `accepted_taxon_key` when a user edits the name (it
    COALESCEs the key), so without this the old key would stay forever. Returns how many rows
    were (or, in a dry run, would be) unstamped.
    """
    edited = """
        SELECT s.uri FROM pipelines.identification_stamps s
        JOIN ingester.identifications i ON i.uri = s.uri
        WHERE i.accepted_taxon_key IS NOT NULL
          AND (i.scientific_name, i.kingdom, i.taxon_id)
              IS DISTINCT FROM (s.scientific_name, s.kingdom, s.taxon_id)
    """
    with conn.cursor() as cur:
        if dry_run:
            cur.execute(f"SELECT count(*) FROM ({edited}) e")
            return fetch_count(cur)
        cur.execute(
            f"""
            WITH edited AS ({edited}),
            reset AS (
                UPDATE ingester.identifications i SET accepted_taxon_key = NULL
                FROM edited e WHERE i.uri = e.uri
                RETURNING i.uri
            )
            DELETE FROM pipelines.identification_stamps s USING reset r WHERE s.uri = r.uri
            """
        )
        return cur.rowcount


def stamp_by_name(conn: Connection, assignments: Sequence[tuple[NamePair, int]]) -> int:
    """Stamp unstamped identifications with exactly this (name, kingdom) with the key."""
    if not assignments:
        return 0
    names = [pair.scientific_name for pair, _ in assignments]
    kingdoms = [pair.kingdom for pair, _ in assignments]
    keys = [key for _, key in assignments]
    return _stamp(
        conn,
        "unnest(%s::text[], %s::text[], %s::bigint[]) AS w(name, kingdom, key)",
        "i.scientific_name = w.name AND i.kingdom IS NOT DISTINCT FROM w.kingdom",
        "name",
        (names, kingdoms, keys),
    )


def stamp_by_taxon_id(conn: Connection, assignments: Sequence[tuple[str, int]]) -> int:
    """Stamp unstamped identifications carrying this taxonID URI with the key."""
    if not assignments:
        return 0
    uris = [uri for uri, _ in assignments]
    keys = [key for _, key in assignments]
    return _stamp(
        conn,
        "unnest(%s::text[], %s::bigint[]) AS w(uri, key)",
        "i.taxon_id = w.uri",
        "taxon_id",
        (uris, keys),
    )


def _stamp(
    conn: Connection, wanted: str, match: str, via: str, params: tuple[list[Any], ...]
) -> int:
    with conn.cursor() as cur:
        cur.execute(
            f"""
            WITH stamped AS (
                UPDATE ingester.identifications i
                SET accepted_taxon_key = w.key, indexed_at = now()
                FROM {wanted}
                WHERE i.accepted_taxon_key IS NULL AND {match}
                RETURNING i.uri, i.scientific_name, i.kingdom, i.taxon_id, i.accepted_taxon_key
            )
            INSERT INTO pipelines.identification_stamps AS s
                (uri, scientific_name, kingdom, taxon_id, accepted_taxon_key, stamped_via,
                 stamped_at)
            SELECT uri, scientific_name, kingdom, taxon_id, accepted_taxon_key, '{via}', now()
            FROM stamped
            ON CONFLICT (uri) DO UPDATE SET
                scientific_name = EXCLUDED.scientific_name, kingdom = EXCLUDED.kingdom,
                taxon_id = EXCLUDED.taxon_id, accepted_taxon_key = EXCLUDED.accepted_taxon_key,
                stamped_via = EXCLUDED.stamped_via, stamped_at = EXCLUDED.stamped_at
            """,
            params,
        )
        return cur.rowcount


def refresh_community_ids(conn: Connection) -> None:
    """Make new stamps visible to the app's consensus filters: `REFRESH MATERIALIZED VIEW
    CONCURRENTLY`, through the function `migrate` defines with the view owner's rights
    (`db/roles.py`)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pipelines.refresh_community_ids()")


@dataclass(frozen=True)
class NewIdentification:
    """An identification as the ingester would write it (demo data and tests)."""

    uri: str
    did: str
    subject_uri: str
    scientific_name: str
    kingdom: str | None = None
    taxon_id: str | None = None
    taxon_rank: str | None = None


def insert_identifications(conn: Connection, rows: Sequence[NewIdentification]) -> None:
    """Write identifications and their occurrences the way tap-ingester does (mirror only)."""
    with conn.cursor() as cur:
        execute_values(
            cur,
            """
            INSERT INTO ingester.occurrences (uri, cid, did, created_at)
            VALUES %s ON CONFLICT (uri) DO NOTHING
            """,
            sorted({(r.subject_uri, "demo-cid", r.did) for r in rows}),
            template="(%s, %s, %s, now())",
        )
        execute_values(
            cur,
            """
            INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid,
                scientific_name, kingdom, taxon_id, taxon_rank, date_identified)
            VALUES %s
            ON CONFLICT (uri) DO UPDATE SET scientific_name = EXCLUDED.scientific_name,
                cid = EXCLUDED.cid, indexed_at = now(),
                taxon_rank = COALESCE(EXCLUDED.taxon_rank, identifications.taxon_rank),
                taxon_id = COALESCE(EXCLUDED.taxon_id, identifications.taxon_id),
                kingdom = COALESCE(EXCLUDED.kingdom, identifications.kingdom)
            """,
            [
                (
                    r.uri,
                    "demo-cid",
                    r.did,
                    r.subject_uri,
                    "demo-cid",
                    r.scientific_name,
                    r.kingdom,
                    r.taxon_id,
                    r.taxon_rank,
                )
                for r in rows
            ],
            template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
        )
    publish_own_writes(conn)


def count_identifications(conn: Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ingester.identifications")
        return fetch_count(cur)


def restamp_identifications(conn: Connection, old_key: int, new_key: int | None) -> int:
    """Move stamps from `old_key` to `new_key`; with None, unstamp so names resolve again."""
    with conn.cursor() as cur:
        cur.execute(
            """
            WITH moved AS (
                UPDATE ingester.identifications SET accepted_taxon_key = %(new)s, indexed_at = now()
                WHERE accepted_taxon_key = %(old)s
                RETURNING uri
            ), stamps AS (
                UPDATE pipelines.identification_stamps s
                SET accepted_taxon_key = %(new)s, stamped_at = now()
                FROM moved m WHERE s.uri = m.uri AND %(new)s::bigint IS NOT NULL
            ), forgotten AS (
                DELETE FROM pipelines.identification_stamps s
                USING moved m WHERE s.uri = m.uri AND %(new)s::bigint IS NULL
            )
            SELECT count(*) FROM moved
            """,
            {"old": old_key, "new": new_key},
        )
        return fetch_count(cur)


_NORMALISED_NAME = "lower(regexp_replace(btrim(i.scientific_name), '\\s+', ' ', 'g'))"


def names_stamped_with(conn: Connection, keys: Sequence[int]) -> list[str]:
    """Distinct names of identifications stamped with these keys."""
    if not keys:
        return []
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT scientific_name FROM ingester.identifications "
            "WHERE accepted_taxon_key = ANY(%s)",
            (list(keys),),
        )
        return [name for (name,) in cur.fetchall()]


def unstamp(conn: Connection, normalised_names: Sequence[str], keys: Sequence[int]) -> int:
    """Clear the stamps of identifications with these names (spacing and case aside) or keys,
    so the next pass resolves them again. Returns the rows unstamped."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            WITH cleared AS (
                UPDATE ingester.identifications i SET accepted_taxon_key = NULL
                WHERE i.accepted_taxon_key IS NOT NULL
                  AND ({_NORMALISED_NAME} = ANY(%(names)s) OR i.accepted_taxon_key = ANY(%(keys)s))
                RETURNING i.uri
            )
            DELETE FROM pipelines.identification_stamps s USING cleared c WHERE s.uri = c.uri
            """,
            {"names": list(normalised_names), "keys": list(keys)},
        )
        return cur.rowcount
