"""The GBIF parser against every recorded v2 match answer in ../shared/fixtures/gbif/."""

from __future__ import annotations

import json

import pytest

from observing_pipelines.clients.gbif import parse_match
from observing_pipelines.clients.http import MalformedResponseError
from observing_pipelines.taxa.matching import judge_match, taxon_rows
from observing_pipelines.taxa.names import cache_names


def v2_match_files(shared_fixtures):
    return sorted((shared_fixtures / "gbif").glob("v2-match-*.json"))


def test_every_recorded_v2_match_parses_and_judges(shared_fixtures):
    files = [f for f in v2_match_files(shared_fixtures) if not f.name.endswith(".meta.json")]
    assert files, "no v2 match recordings found"
    for path in files:
        meta = json.loads(path.with_name(path.name.replace(".json", ".meta.json")).read_text())
        match = parse_match(json.loads(path.read_text()))
        asked = dict(
            pair.split("=", 1) for pair in meta["request"]["url"].split("?", 1)[1].split("&")
        )
        name = asked.get("scientificName", "").replace("%20", " ").replace("+", " ")
        verdict = judge_match(match, cache_names(name) if name else ())
        if verdict.outcome == "resolved":
            keys = [row.taxon_key for row in verdict.rows]
            assert len(keys) == len(set(keys)), path.name
            assert all(row.parent_key != row.taxon_key for row in verdict.rows), path.name
        else:
            assert verdict.accepted_taxon_key is None, path.name


def test_recorded_outcomes(shared_fixtures):
    def verdict(name: str, asked: str = ""):
        body = json.loads((shared_fixtures / "gbif" / name).read_text())
        return judge_match(parse_match(body), cache_names(asked) if asked else ())

    exact = verdict("v2-match-exact-helianthus-annuus.json", "Helianthus annuus")
    assert (exact.outcome, exact.accepted_taxon_key) == ("resolved", 9206251)
    target = next(r for r in exact.rows if r.taxon_key == 9206251)
    assert target.parent_key != 9206251 and target.species_key == 9206251
    synonym = verdict("v2-match-synonym-anastrophyllum-minutum.json", "Anastrophyllum minutum")
    assert (synonym.outcome, synonym.accepted_taxon_key, synonym.taxon_key) == (
        "resolved",
        2689422,
        4277323,
    )
    synonym_row = next(r for r in synonym.rows if r.taxon_key == 4277323)
    assert (synonym_row.status, synonym_row.accepted_taxon_key, synonym_row.parent_key) == (
        "SYNONYM",
        2689422,
        2689422,
    )
    assert (
        verdict("v2-match-none-calopteryx-fakeus.json", "Calopteryx fakeus").outcome == "not_found"
    )
    assert (
        verdict("v2-match-none-homonym-calopteryx-genus.json", "Calopteryx").outcome == "not_found"
    )
    wrong_kingdom = verdict(
        "v2-match-higherrank-wrong-kingdom-calopteryx-splendens-plantae.json",
        "Calopteryx splendens",
    )
    assert wrong_kingdom.outcome == "rejected"
    col_xr = verdict("v2-match-col-xr-checklist-aves.json", "Aves")
    assert col_xr.outcome == "not_found"  # COL XR keys such as "V2" are not backbone keys


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        42,
        {},
        {"diagnostics": "x"},
        {"diagnostics": {}},
        {"diagnostics": {"matchType": 7}},
    ],
)
def test_malformed_answers_are_errors_not_crashes(body):
    with pytest.raises(MalformedResponseError):
        parse_match(body)


def test_partial_answers_are_no_match():
    match = parse_match(
        {"diagnostics": {"matchType": "EXACT"}, "usage": {"key": "abc", "name": "X"}}
    )
    assert match.usage is None and judge_match(match).outcome == "not_found"
    match = parse_match(
        {
            "diagnostics": {"matchType": "EXACT", "confidence": "high"},
            "usage": {"key": "12", "canonicalName": "Abies alba"},
            "classification": [{"key": "6"}, "junk", {"key": "1", "name": "X", "rank": "KINGDOM"}],
        }
    )
    assert match.confidence is None and [c.key for c in match.classification] == [1]
    rows, key = taxon_rows(match)
    assert key == 12 and rows[-1].rank == "unknown" and rows[-1].parent_key == 1
