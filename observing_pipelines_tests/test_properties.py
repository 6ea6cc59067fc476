"""Properties of `taxa/names.py` over arbitrary text: what users type reaches these functions
verbatim (AT Protocol records), and their outputs become cache keys, memo digests and GBIF
questions, so they must hold for any input, not only the examples in `test_names.py`.

Text strategies include NUL and other control characters, every kind of Unicode whitespace,
combining marks, and strings of up to a few hundred thousand characters (Hypothesis's text
never holds surrogates, and neither can Postgres text). Examples stay few so the file runs in
seconds.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from observing_pipelines.taxa.names import (
    MAX_NAME_LENGTH,
    TaxonRef,
    cache_names,
    name_problem,
    normalise_name,
    parse_taxon_uri,
    subject_digest,
    tidy_name,
)

quick = settings(max_examples=60, deadline=None)

ODD_CHARACTERS = [
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    " ",
    "\t",
    "\n",
    "\r",
    "\u00a0",
    "\u2003",
    "\u3000",
    "\u200b",
    "\u00ad",
    "\ufeff",
    "\u0301",
    "\u0308",
    "a",
    "Q",
    "é",
    "ß",
    "İ",
    "Σ",
    "\u00d7",
    ".",
    "(",
    "1",
]
odd_text = st.text(alphabet=st.sampled_from(ODD_CHARACTERS), max_size=40)
"""Mostly the characters the functions treat specially, packed close together."""
huge_text = st.builds(
    lambda chunk, times: chunk * times,
    st.text(min_size=1, max_size=6),
    st.integers(min_value=1_000, max_value=20_000),
)
any_text = st.one_of(st.text(), odd_text, huge_text)
latin_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x024F), max_size=60),
    odd_text.map(lambda text: text.replace("\u0301", "").replace("\u0308", "")),
)
"""Latin-script text as scientific names are written (Basic Latin to Latin Extended-B: NUL,
controls and whitespace included, combining marks not)."""


# -- tidy_name and normalise_name ------------------------------------------------------------


@quick
@given(any_text)
def test_tidy_name_is_printable_single_spaced_text(text: str) -> None:
    """What goes to GBIF and into Postgres: no NUL (Postgres text cannot hold it), no control or
    format character, single ASCII spaces between words and none at the ends."""
    tidy = tidy_name(text)
    assert all(ch.isprintable() for ch in tidy)
    assert "\x00" not in tidy
    assert all(ch == " " or not ch.isspace() for ch in tidy)
    assert tidy == tidy.strip() and "  " not in tidy
    assert tidy.split(" ") == tidy.split() or tidy == ""


@quick
@given(any_text)
def test_the_normal_form_ignores_spacing_and_is_as_clean_as_the_tidy_one(text: str) -> None:
    """One normal form per question: extra, leading, trailing or odd whitespace never makes a
    second question, and the normal form is as printable and single-spaced as `tidy_name`."""
    normal = normalise_name(text)
    assert normal == normalise_name(f"\t\u00a0{text.replace(' ', '  ')} \n")
    assert all(ch.isprintable() for ch in normal) and "\x00" not in normal
    assert normal == normal.strip() and "  " not in normal
    assert len(normal.split()) == len(tidy_name(text).split())


@quick
@given(latin_text)
@example("  Quercus\t\x00robur  L. ")
@example("QUERCUS ROBUR ß İ")
def test_normalise_name_is_idempotent_on_latin_script_names(text: str) -> None:
    """A normal form is its own normal form: a name read back from the memo or the cache and
    normalised again must land on the same key."""
    assert normalise_name(normalise_name(text)) == normalise_name(text)
    assert tidy_name(tidy_name(text)) == tidy_name(text)


@quick
@given(any_text)
@example("Cafe\x00\u0301")
@example("Helianthus annuus\u200b\u0301")
def test_tidy_name_is_nfc_and_idempotent_on_any_text(text: str) -> None:
    """The docstring promises Unicode NFC; a name with a stray zero-width space or soft hyphen
    before an accent must give the same question as the clean spelling."""
    tidy = tidy_name(text)
    assert unicodedata.is_normalized("NFC", tidy) and tidy_name(tidy) == tidy


@quick
@given(any_text)
@example("\u03a5\u0344")
@example("Cafe\x00\u0301")
def test_normalise_name_is_idempotent_on_any_text(text: str) -> None:
    """Same property as the Latin-script one, over all of Unicode."""
    assert normalise_name(normalise_name(text)) == normalise_name(text)


# -- name_problem and cache_names ------------------------------------------------------------

PROBLEMS = re.compile(
    r"empty name|name is [0-9]+ characters long \(limit [0-9]+\)|name has no letters"
)


@quick
@given(any_text)
@example("x" * (MAX_NAME_LENGTH + 1))
@example("\x00" * 10 + "x" * MAX_NAME_LENGTH)
def test_name_problem_is_none_exactly_for_askable_names(text: str) -> None:
    """GBIF is asked about a name exactly when its tidy form is non-empty, at most 500
    characters long and has a letter; anything else gets one of three reasons, never an
    exception."""
    problem = name_problem(text)
    tidy = tidy_name(text)
    askable = 0 < len(tidy) <= MAX_NAME_LENGTH and any(ch.isalpha() for ch in tidy)
    assert (problem is None) == askable
    if problem is not None:
        assert PROBLEMS.fullmatch(problem), problem
        if len(tidy) > MAX_NAME_LENGTH:
            assert problem == f"name is {len(tidy)} characters long (limit {MAX_NAME_LENGTH})"


@quick
@given(any_text)
@example("Quercus robur L.")
@example("Rosa canina var. dumalis Baker")
@example("Quercus L.")
@example("Mentha \u00d7 piperita L.")
def test_cache_names_are_the_normal_form_then_a_shorter_binomial(text: str) -> None:
    """The taxa cache is searched by lower-case names: the normal form first, then at most one
    authorship-free form, which is a leading run of the same words and still has an epithet."""
    names = cache_names(text)
    normal = normalise_name(text)
    assert isinstance(names, tuple) and len(names) <= 2
    assert names == (() if not normal else names)
    if not normal:
        return
    assert names[0] == normal
    for name in names:
        assert name.casefold() == name and name == tidy_name(name)
    if len(names) == 2:
        shorter, words = names[1].split(" "), normal.split(" ")
        assert names[1] != normal and len(shorter) >= 2
        assert shorter == words[: len(shorter)] and len(shorter) < len(words)


# -- subject_digest --------------------------------------------------------------------------

kingdoms = st.one_of(st.none(), st.sampled_from(["plantae", "animalia", "fungi", ""]), st.text())


@quick
@given(any_text, kingdoms)
def test_digest_is_a_stable_fixed_size_key(name: str, kingdom: str | None) -> None:
    """The digest is the memo's primary key: 64 hex characters whatever the size of the name,
    and the same for the same question every time."""
    digest = subject_digest(normalise_name(name), kingdom)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == subject_digest(normalise_name(name), kingdom)


def test_digest_format_is_pinned() -> None:
    """Every remembered answer in production is stored under this digest: changing its framing
    would silently orphan them all, so the exact bytes hashed are part of the contract."""
    framed = b"\x01quercus robur\x1f\x01plantae\x1f"
    assert subject_digest("quercus robur", "plantae") == hashlib.sha256(framed).hexdigest()
    assert subject_digest("quercus robur", None) == (
        hashlib.sha256(b"\x01quercus robur\x1f\x00\x1f").hexdigest()
    )


@quick
@given(any_text, kingdoms, any_text, kingdoms)
@example("Satyrium", "plantae", "Satyrium", "animalia")
@example("Satyrium", None, "Satyrium", "")
@example("a b", None, "a", "b")
def test_distinct_normalised_questions_have_distinct_digests(
    name: str, kingdom: str | None, other_name: str, other_kingdom: str | None
) -> None:
    """Two different questions (normalised name, folded kingdom or none) never share a memo
    row: a homonym in another kingdom, or a missing kingdom, is a different question."""
    first = (normalise_name(name), tidy_name(kingdom).casefold() if kingdom is not None else None)
    second = (
        normalise_name(other_name),
        tidy_name(other_kingdom).casefold() if other_kingdom is not None else None,
    )
    if first != second:
        assert subject_digest(*first) != subject_digest(*second)


no_framing_bytes = st.text(alphabet=st.characters(exclude_characters="\x01\x1f"), max_size=12)


@quick
@given(
    st.lists(st.one_of(st.none(), no_framing_bytes), min_size=1, max_size=3),
    st.lists(st.one_of(st.none(), no_framing_bytes), min_size=1, max_size=3),
)
def test_digest_tells_apart_parts_and_their_number(
    parts: list[str | None], other: list[str | None]
) -> None:
    """None, "" and a missing part all differ, and parts never run into each other, for any
    parts free of the two framing characters (normalised names and kingdoms are)."""
    if parts != other:
        assert subject_digest(*parts) != subject_digest(*other)


# -- parse_taxon_uri -------------------------------------------------------------------------

GBIF_FORMS = [
    "gbif:{}",
    "GBIF: {}",
    "https://www.gbif.org/species/{}",
    "http://gbif.org/species/{}/",
    "https://api.gbif.org/v1/species/{}?fields=all#top",
    "gbif.org/species/{}",
    "HTTPS://WWW.GBIF.ORG/species/{}",
    "  https://www.gbif.org/species/{}\n",
]
INATURALIST_FORMS = [
    "https://www.inaturalist.org/taxa/{}",
    "http://inaturalist.org/taxa/{}/",
    "https://www.iNaturalist.org/taxa/{}?locale=en",
    "inaturalist.org/taxa/{}",
]
WIKIDATA_FORMS = [
    "https://www.wikidata.org/wiki/Q{}",
    "http://www.wikidata.org/entity/Q{}",
    "https://wikidata.org/wiki/q{}/",
    "WWW.WIKIDATA.ORG/entity/Q{}#sitelinks",
]
slugs = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", max_size=30)


@quick
@given(st.integers(min_value=1, max_value=10**18 - 1), st.sampled_from(GBIF_FORMS))
def test_gbif_uris_give_back_their_key(key: int, form: str) -> None:
    ref = parse_taxon_uri(form.format(key))
    assert ref == TaxonRef("gbif", str(key))
    assert ref.gbif_key() == key


@quick
@given(
    st.integers(min_value=1, max_value=10**12 - 1),
    st.sampled_from(INATURALIST_FORMS),
    st.one_of(st.just(""), slugs.map(lambda slug: f"-{slug}")),
)
def test_inaturalist_uris_give_back_their_taxon_id(taxon: int, form: str, slug: str) -> None:
    ref = parse_taxon_uri(form.format(f"{taxon}{slug}"))
    assert ref == TaxonRef("inaturalist", str(taxon))
    assert ref.gbif_key() is None


@quick
@given(st.integers(min_value=1, max_value=10**12 - 1), st.sampled_from(WIKIDATA_FORMS))
def test_wikidata_uris_give_back_their_item(item: int, form: str) -> None:
    ref = parse_taxon_uri(form.format(item))
    assert ref == TaxonRef("wikidata", f"Q{item}")
    assert ref.gbif_key() is None


def assert_well_formed(ref: TaxonRef | None) -> None:
    """None, or a reference the pass can use as is: canonical decimal ids, GBIF keys that fit a
    bigint, Wikidata items as Q-ids."""
    if ref is None:
        return
    if ref.scheme == "gbif":
        assert re.fullmatch(r"[1-9][0-9]*", ref.value) and int(ref.value) < 2**63
        assert ref.gbif_key() == int(ref.value)
    elif ref.scheme == "inaturalist":
        assert re.fullmatch(r"0|[1-9][0-9]*", ref.value)
    else:
        assert ref.scheme == "wikidata" and re.fullmatch(r"Q(0|[1-9][0-9]*)", ref.value)


url_safe = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="[]")
url_like = st.builds(
    "{}{}{}/{}".format,
    st.sampled_from(["", "http://", "https://", "HTTPS://", "ftp://", "gbif:", " "]),
    st.sampled_from(["", "www.", "WWW."]),
    st.one_of(
        st.sampled_from(
            ["gbif.org", "api.gbif.org", "inaturalist.org", "wikidata.org", "example.org"]
        ),
        st.text(alphabet=url_safe, max_size=20),
    ),
    st.lists(
        st.one_of(
            st.sampled_from(["species", "taxa", "wiki", "entity", "v1", ""]),
            st.integers(min_value=0, max_value=10**20).map(str),
            st.integers(min_value=0, max_value=10**6).map("Q{}".format),
            st.text(alphabet=url_safe, max_size=12),
        ),
        max_size=4,
    ).map("/".join),
)


@quick
@given(st.one_of(url_like, st.text(alphabet=url_safe)))
@example("https://www.gbif.org/species/0")
@example("gbif:99999999999999999999")
@example("https://www.inaturalist.org/taxa/007-x")
def test_taxon_uris_parse_to_none_or_a_usable_reference(uri: str) -> None:
    """For URL-like ASCII text (what the other tests cover; brackets aside, see below) the
    parser answers None or a reference the taxonID pass can use, and never raises."""
    assert_well_formed(parse_taxon_uri(uri))


@quick
@given(any_text)
@example("http://[")
@example("https://ex\u2100ample.org/taxa/1")
def test_parse_taxon_uri_never_raises_on_any_text(uri: str) -> None:
    """taxonIDs are free text from user records: any of them must parse to None or a
    reference, never raise."""
    assert_well_formed(parse_taxon_uri(uri))
