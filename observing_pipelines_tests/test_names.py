"""Name normalisation, authorship stripping and taxonID URI parsing."""

from __future__ import annotations

import pytest

from observing_pipelines.taxa.names import (
    TaxonRef,
    cache_names,
    canonical_name,
    name_problem,
    normalise_name,
    parse_taxon_uri,
    subject_digest,
)


@pytest.mark.parametrize(
    ("name", "normal", "canonical"),
    [
        ("Quercus robur L.", "quercus robur l.", "quercus robur"),
        ("Panthera leo (Linnaeus, 1758)", "panthera leo (linnaeus, 1758)", "panthera leo"),
        (
            "Rosa canina var. dumalis Baker",
            "rosa canina var. dumalis baker",
            "rosa canina var. dumalis",
        ),
        ("  Quercus\t\nrobur  ", "quercus robur", "quercus robur"),
        ("Abies\x00 alba", "abies alba", "abies alba"),
        ("Mentha \u00d7 piperita L.", "mentha \u00d7 piperita l.", "mentha \u00d7 piperita"),
    ],
)
def test_normal_and_canonical_forms(name, normal, canonical):
    assert normalise_name(name) == normal
    assert canonical_name(name) == canonical


def test_a_genus_with_authorship_does_not_reach_the_cache_by_its_bare_name():
    assert cache_names("Quercus L.") == ("quercus l.",)
    assert cache_names("Quercus robur L.") == ("quercus robur l.", "quercus robur")
    assert cache_names("") == ()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty name"),
        (" \t ", "empty name"),
        ("x" * 501, "name is 501 characters long (limit 500)"),
        ("1234", "name has no letters"),
        ("銀杏", None),
        ("Quercus robur", None),
    ],
)
def test_name_problems(name, problem):
    assert name_problem(name) == problem


def test_digest_separates_none_from_empty_and_bounds_size():
    assert subject_digest("a", None) != subject_digest("a", "")
    assert len(subject_digest("x" * 100_000, "Plantae")) == 64


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("gbif:2435099", TaxonRef("gbif", "2435099")),
        ("GBIF: 2435099", TaxonRef("gbif", "2435099")),
        ("https://www.gbif.org/species/2435099", TaxonRef("gbif", "2435099")),
        ("gbif.org/species/2435099/", TaxonRef("gbif", "2435099")),
        ("https://api.gbif.org/v1/species/2435099?x=1#y", TaxonRef("gbif", "2435099")),
        ("https://www.inaturalist.org/taxa/41944", TaxonRef("inaturalist", "41944")),
        ("https://inaturalist.org/taxa/41944-Panthera-leo/", TaxonRef("inaturalist", "41944")),
        ("https://www.wikidata.org/wiki/Q140", TaxonRef("wikidata", "Q140")),
        ("http://WWW.WIKIDATA.ORG/entity/q140", TaxonRef("wikidata", "Q140")),
        ("https://www.gbif.org/species/0", None),
        ("https://www.gbif.org/species/99999999999999999999", None),
        ("https://www.gbif.org/occurrence/123", None),
        ("ftp://gbif.org/species/1", None),
        ("https://evil.example/gbif.org/species/1", None),
        ("javascript:alert(1)", None),
        ("", None),
        ("\x00", None),
    ],
)
def test_taxon_uri_forms(uri, ref):
    assert parse_taxon_uri(uri) == ref
