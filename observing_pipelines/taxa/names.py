"""Scientific names and Darwin Core taxonID URIs, as users type them.

Names arrive verbatim from AT Protocol records: odd spacing, any case, sometimes with authorship
("Quercus robur L.", "Panthera leo (Linnaeus, 1758)"). The cache stores GBIF canonical names, so
lookups compare a normalised form and, failing that, the name with its authorship cut off.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

MAX_NAME_LENGTH = 500
"""Longer "names" are not names; GBIF is not asked about them."""

_INFRASPECIFIC_MARKERS = frozenset(
    {"subsp.", "ssp.", "var.", "subvar.", "f.", "forma", "fo.", "cv.", "nothosubsp.", "nothovar."}
)
_HYBRID_MARKERS = frozenset({"\u00d7", "x"})  # the multiplication sign, or a plain x
_EPITHET = re.compile(r"[a-z\u00df-\u00ff][a-z\u00df-\u00ff\-]*")


def tidy_name(name: str) -> str:
    """The name to send upstream: the user's spelling, Unicode NFC, without control characters
    (NUL included) and with whitespace collapsed."""
    text = "".join(" " if ch.isspace() else ch for ch in name if ch.isspace() or ch.isprintable())
    # NFC last: a dropped character between a letter and its accent must not leave them apart.
    return unicodedata.normalize("NFC", " ".join(text.split()))


def normalise_name(name: str) -> str:
    """`tidy_name`, case folded: two names with the same normal form are one question to GBIF
    and one cache key. Folded in decomposed form and recomposed, because case folding a
    composed string can leave it un-normalised (and the normal form must be idempotent)."""
    folded = unicodedata.normalize("NFD", tidy_name(name)).casefold()
    return unicodedata.normalize("NFC", folded)


def canonical_name(name: str) -> str:
    """The normalised name without authorship: genus, epithets and rank markers only.

    "Quercus robur L." -> "quercus robur"; "Panthera leo (Linnaeus, 1758)" -> "panthera leo";
    "Rosa canina var. dumalis Baker" -> "rosa canina var. dumalis". Case is judged on the tidy
    (not case-folded) spelling, because authorship is what starts with a capital or a bracket.
    """
    tokens = tidy_name(name).split()
    if not tokens:
        return ""
    kept = [tokens[0]]
    for token in tokens[1:]:
        lowered = token.casefold()
        is_marker = lowered in _INFRASPECIFIC_MARKERS or lowered in _HYBRID_MARKERS
        if is_marker or _EPITHET.fullmatch(token):
            kept.append(token)
        else:
            break
    while kept and kept[-1].casefold() in _INFRASPECIFIC_MARKERS | _HYBRID_MARKERS:
        kept.pop()
    return " ".join(kept).casefold()


def cache_names(name: str) -> tuple[str, ...]:
    """The lower-case names under which the taxa cache may hold this name.

    The normal form first, then the form without authorship, but only while that still has an
    epithet: "Quercus L." must not find the genus through "quercus" when the user may have
    meant a species typed oddly, so such names go to GBIF (once; the answer is remembered).
    """
    normal = normalise_name(name)
    canonical = canonical_name(name)
    if canonical and canonical != normal and " " in canonical:
        return (normal, canonical)
    return (normal,) if normal else ()


def name_problem(name: str) -> str | None:
    """Why a name cannot be looked up, or None when it can."""
    tidy = tidy_name(name)
    if not tidy:
        return "empty name"
    if len(tidy) > MAX_NAME_LENGTH:
        return f"name is {len(tidy)} characters long (limit {MAX_NAME_LENGTH})"
    if not any(ch.isalpha() for ch in tidy):
        return "name has no letters"
    return None


def subject_digest(*parts: str | None) -> str:
    """A fixed-size key for a (possibly huge) subject; `None` and "" differ."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8", "replace"))
        hasher.update(b"\x1f")
    return hasher.hexdigest()


@dataclass(frozen=True)
class TaxonRef:
    """What a taxonID URI points at."""

    scheme: Literal["gbif", "inaturalist", "wikidata"]
    value: str

    def gbif_key(self) -> int | None:
        return int(self.value) if self.scheme == "gbif" else None


_GBIF_CURIE = re.compile(r"gbif:\s*([0-9]{1,18})", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]{1,18}")
_INATURALIST_TAXON = re.compile(r"([0-9]{1,12})(?:-[^/]*)?")
_QID = re.compile(r"[Qq]([0-9]{1,12})")


def parse_taxon_uri(uri: str) -> TaxonRef | None:
    """Classify a taxonID: GBIF key, iNaturalist taxon or Wikidata item; None if none of them.

    Hosts match case-insensitively, with or without `www.`; a trailing `/`, a query and a
    fragment are ignored (as in the app's `taxon_uri.rs`). iNaturalist's slugged form
    `/taxa/12345-Panthera-leo` is accepted too.
    """
    text = uri.strip()
    if curie := _GBIF_CURIE.fullmatch(text):
        return _gbif(curie.group(1))
    try:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        host = (parts.hostname or "").lower().removeprefix("www.")
    except ValueError:  # an unmatched "[", or a host NFKC turns into "/", "?", "#" or "@"
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    segments = [s for s in parts.path.split("/") if s]
    if host in ("gbif.org", "api.gbif.org") and len(segments) >= 2 and segments[-2] == "species":
        return _gbif(segments[-1]) if _DIGITS.fullmatch(segments[-1]) else None
    if host == "inaturalist.org" and len(segments) == 2 and segments[0] == "taxa":
        match = _INATURALIST_TAXON.fullmatch(segments[1])
        return TaxonRef("inaturalist", str(int(match.group(1)))) if match else None
    if host == "wikidata.org" and len(segments) == 2 and segments[0] in ("wiki", "entity"):
        match = _QID.fullmatch(segments[1])
        return TaxonRef("wikidata", f"Q{int(match.group(1))}") if match else None
    return None


def _gbif(digits: str) -> TaxonRef | None:
    key = int(digits)
    return TaxonRef("gbif", str(key)) if 0 < key < 2**63 else None


def binomial_parts(canonical: str) -> tuple[str, str, str | None] | None:
    """(genus, species epithet, infraspecific epithet) of a canonical name, as IUCN asks.

    "Gorilla gorilla diehli" and "Rosa canina var. dumalis" both give an infra name; a genus
    alone gives None.
    """
    markers = _INFRASPECIFIC_MARKERS | _HYBRID_MARKERS
    tokens = [t for t in tidy_name(canonical).split() if t.casefold() not in markers]
    if len(tokens) < 2:
        return None
    return tokens[0], tokens[1], tokens[2] if len(tokens) > 2 else None
