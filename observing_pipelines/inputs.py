"""What the jobs accept from people, with one set of rules for every door.

The launchpad, GraphQL, `observing-pipelines trigger` and the `resolve-taxa` command all take
limits, kingdoms, names and keys from a person. Each rule is written once, here, as a pydantic
type the jobs' config classes use (`jobs/common.JobConfig`) and as a plain check the command
line's argument parser uses, so every door refuses the same input with the same one-line
reason, before a run starts:

- a limit is a whole number from 1 to `MAX_LIMIT` (no "all but five" from -5, no "nothing" from
  0 reported as a success);
- a kingdom is one of GBIF's backbone kingdoms, in any case (what the partitions offer; any
  other value would match no identification);
- a name is one GBIF could be asked about (`names.name_problem`: letters, not too long) and
  holds no control character (a NUL cannot even reach the database);
- a GBIF key is a positive 64-bit integer;
- a thumbnail width is one Commons serves.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from observing_pipelines.clients.commons import STANDARD_WIDTHS
from observing_pipelines.taxa.names import name_problem

MAX_LIMIT = 1_000_000
MAX_ITEMS = 1000
"""Names or keys one re-resolve may list."""
KINGDOMS = (
    "Animalia",
    "Archaea",
    "Bacteria",
    "Chromista",
    "Fungi",
    "Plantae",
    "Protozoa",
    "Viruses",
)
"""GBIF backbone kingdoms: the partitions of "backfill kingdom Y"."""
_KINGDOMS_BY_FOLD = {kingdom.casefold(): kingdom for kingdom in KINGDOMS}


def limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT:,}, got {value}")
    return value


def kingdom(value: str) -> str:
    """The kingdom's own spelling, whatever the case it was given in."""
    known = _KINGDOMS_BY_FOLD.get(value.strip().casefold())
    if known is None:
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        raise ValueError(f"must be one of GBIF's kingdoms ({', '.join(KINGDOMS)}), got {shown}")
    return known


def scientific_name(value: str) -> str:
    if any(not (ch.isprintable() or ch == " ") for ch in value):
        raise ValueError("must not contain control characters")
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def commons_width(value: int) -> int:
    """Commons serves thumbnails at its standard widths only (it refuses the others)."""
    if value not in STANDARD_WIDTHS:
        raise ValueError(f"{value}px is not a Commons standard width {STANDARD_WIDTHS}")
    return value


Limit = Annotated[int, AfterValidator(limit)]
Kingdom = Annotated[str, AfterValidator(kingdom)]
ScientificName = Annotated[str, AfterValidator(scientific_name)]
TaxonKey = Annotated[int, Field(gt=0, lt=2**63)]
Days = Annotated[int, Field(ge=0, le=36_500)]
CommonsWidth = Annotated[int, AfterValidator(commons_width)]
Names = Annotated[list[ScientificName], Field(max_length=MAX_ITEMS)]
TaxonKeys = Annotated[list[TaxonKey], Field(max_length=MAX_ITEMS)]


class Options(BaseModel):
    """A pass's per-run options with their defaults, declared once, next to the pass: the job's
    Dagster config class inherits them (`class ThumbnailsConfig(JobConfig, ThumbnailsOptions)`),
    so the launchpad, GraphQL, `trigger`, the command line and direct calls share one default
    and one rule each. Field docstrings are the launchpad's descriptions."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)
