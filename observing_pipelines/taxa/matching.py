"""From a GBIF match to what we store: the verdict on the match and the `ingester.taxa` rows.

This is where today's resolver quirks are fixed on purpose
(`../shared/docs/app-database-contract.md` §6):
1. NONE is no match, and a HIGHERRANK match whose name differs from the query is rejected
   (the appview's `is_mismatched_higher_rank` rule), so a misspelt species is never stamped
   with its genus or kingdom;
2. a synonym is cached with a pointer to its accepted usage, and identifications are stamped
   with the accepted key;
3. no row is its own parent (GBIF repeats the target at the tail of `classification`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from observing_pipelines.clients.gbif import ClassificationEntry, GbifMatch, NameUsage
from observing_pipelines.db.resolution_attempts import Outcome
from observing_pipelines.db.taxa import TaxonRow
from observing_pipelines.taxa.names import normalise_name

RANK_COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
ACCEPTED_MATCH_TYPES = frozenset({"EXACT", "VARIANT", "HIGHERRANK"})
SYNONYM_STATUSES = frozenset(
    {
        "SYNONYM",
        "AMBIGUOUS_SYNONYM",
        "HETEROTYPIC_SYNONYM",
        "HOMOTYPIC_SYNONYM",
        "PROPARTE_SYNONYM",
        "MISAPPLIED",
    }
)
DOUBTFUL_STATUSES = frozenset({"DOUBTFUL", "PROVISIONALLY_ACCEPTED"})


@dataclass(frozen=True)
class Resolution:
    """The verdict on one lookup: stamp with `accepted_taxon_key`, or record why not."""

    outcome: Outcome
    accepted_taxon_key: int | None = None
    taxon_key: int | None = None
    match_type: str | None = None
    confidence: int | None = None
    rows: tuple[TaxonRow, ...] = ()
    detail: str | None = None

    @classmethod
    def failed(cls, outcome: Outcome, detail: str) -> Resolution:
        return cls(outcome=outcome, detail=detail)


def judge_match(match: GbifMatch, queried_names: tuple[str, ...] = ()) -> Resolution:
    """Accept or reject a match. `queried_names` (lower-case) guard HIGHERRANK answers; a
    lookup by key passes none."""
    usage = match.usage
    common: dict[str, Any] = {"match_type": match.match_type, "confidence": match.confidence}
    if usage is None or match.match_type not in ACCEPTED_MATCH_TYPES:
        return Resolution(
            outcome="not_found", detail=f"GBIF matchType {match.match_type}", **common
        )
    if (
        match.match_type == "HIGHERRANK"
        and queried_names
        and normalise_name(usage.name) not in queried_names
    ):
        return Resolution(
            outcome="rejected",
            taxon_key=usage.key,
            detail=f"HIGHERRANK match {usage.name!r} ({usage.rank}) differs from the name asked",
            **common,
        )
    rows, accepted_key = taxon_rows(match)
    return Resolution(
        outcome="resolved",
        accepted_taxon_key=accepted_key,
        taxon_key=usage.key,
        rows=tuple(rows),
        **common,
    )


def taxon_rows(match: GbifMatch) -> tuple[list[TaxonRow], int]:
    """Ancestors (root first), the accepted taxon, and the synonym row if the match is one.

    Returns the rows and the key identifications should be stamped with.
    """
    usage = match.usage
    assert usage is not None
    accepted = _accepted_usage(match, usage)
    target = accepted or usage
    ranks: dict[str, tuple[str, int]] = {}
    rows: list[TaxonRow] = []
    parent: int | None = None
    for entry in match.classification:
        if entry.key == target.key:
            continue
        if entry.rank in RANK_COLUMNS:
            ranks[entry.rank] = (entry.name, entry.key)
        rows.append(
            _row(entry.key, entry.name, None, entry.rank, "ACCEPTED", entry.key, parent, ranks)
        )
        parent = entry.key
    if target.rank in RANK_COLUMNS:
        ranks[target.rank] = (target.name, target.key)
    status = "DOUBTFUL" if (target.status or "").upper() in DOUBTFUL_STATUSES else "ACCEPTED"
    rows.append(
        _row(
            target.key,
            target.name,
            target.authorship,
            target.rank,
            status,
            target.key,
            parent,
            ranks,
        )
    )
    if accepted is not None:
        rows.append(
            _row(
                usage.key,
                usage.name,
                usage.authorship,
                usage.rank,
                "SYNONYM",
                accepted.key,
                accepted.key,
                ranks,
            )
        )
    return rows, target.key


def _accepted_usage(match: GbifMatch, usage: NameUsage) -> NameUsage | None:
    """The accepted usage of a synonym match; None when the match is itself accepted.

    v2 sends `acceptedUsage`; when it does not, the classification (which is the accepted
    usage's, root first) ends at the accepted taxon.
    """
    is_synonym = match.synonym or (usage.status or "").upper() in SYNONYM_STATUSES
    if not is_synonym:
        return None
    if match.accepted_usage is not None and match.accepted_usage.key != usage.key:
        return match.accepted_usage
    tail = match.classification[-1] if match.classification else None
    if tail is not None and tail.key != usage.key:
        return _usage_from_entry(tail)
    return None


def _usage_from_entry(entry: ClassificationEntry) -> NameUsage:
    return NameUsage(
        key=entry.key, name=entry.name, authorship=None, rank=entry.rank, status="ACCEPTED"
    )


def _row(
    key: int,
    name: str,
    authorship: str | None,
    rank: str,
    status: str,
    accepted_key: int | None,
    parent_key: int | None,
    ranks: dict[str, tuple[str, int]],
) -> TaxonRow:
    def rank_name(rank_column: str) -> str | None:
        return ranks[rank_column][0] if rank_column in ranks else None

    def rank_key(rank_column: str) -> int | None:
        return ranks[rank_column][1] if rank_column in ranks else None

    return TaxonRow(
        taxon_key=key,
        scientific_name=name,
        authorship=authorship,
        rank=rank,
        status=status,
        accepted_taxon_key=accepted_key,
        parent_key=parent_key,
        kingdom=rank_name("kingdom"),
        kingdom_key=rank_key("kingdom"),
        phylum=rank_name("phylum"),
        phylum_key=rank_key("phylum"),
        class_=rank_name("class"),
        class_key=rank_key("class"),
        order=rank_name("order"),
        order_key=rank_key("order"),
        family=rank_name("family"),
        family_key=rank_key("family"),
        genus=rank_name("genus"),
        genus_key=rank_key("genus"),
        species=rank_name("species"),
        species_key=rank_key("species"),
    )


def pick_cached(candidates: list[TaxonRow], kingdom: str | None) -> TaxonRow | None:
    """The cached taxon a name stands for, or None to ask GBIF.

    Within the kingdom asked for (case-insensitively). Without a kingdom, a name cached in two
    kingdoms (a homonym such as *Ficus* or *Satyrium*) is not guessed at. Accepted rows win,
    then the lowest key (today's order). A synonym row from the old resolver has no accepted
    key and is not trusted.
    """
    wanted = kingdom.casefold() if kingdom else None
    rows = [r for r in candidates if wanted is None or (r.kingdom or "").casefold() == wanted]
    if not rows:
        return None
    if wanted is None and len({(r.kingdom or "").casefold() for r in rows}) > 1:
        return None
    best = min(rows, key=lambda r: (r.status != "ACCEPTED", r.taxon_key))
    return best if best.accepted_taxon_key is not None else None
