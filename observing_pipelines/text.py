"""Text as PostgreSQL can store it, and no longer than a column should hold: the one rule every
string from upstream (names, labels, licences, artists, error bodies) passes before it is
written.

PostgreSQL's `text` cannot hold NUL, and its UTF-8 cannot hold a lone surrogate, which a Python
string can (JSON's `"\\ud800"`, or bytes decoded with `surrogateescape`): either makes the whole
statement fail, and with it every later pass that tries to write the same answer. A megabyte
error page, or a "name" of 120,000 characters, has no place in a column an operator reads.
`storable` drops what cannot be stored, turns other control characters into spaces, collapses
runs of whitespace (for one-line fields) and cuts the result at `limit` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_FIELD = 2000
"""A name, a label, a licence, an artist credit, a URL."""
MAX_ERROR = 1000
"""An error message (an upstream body is cut shorter where it is quoted)."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ELLIPSIS = "..."


def storable(value: str, limit: int = MAX_FIELD, *, one_line: bool = True) -> str:
    """`value` without NUL or lone surrogates, control characters as spaces (with
    `one_line`, newlines and tabs too, and whitespace collapsed), at most `limit` characters."""
    text = _UNSTORABLE.sub("", value)
    text = _CONTROL.sub(" ", text)
    if one_line:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - len(_ELLIPSIS)] + _ELLIPSIS
    return text


def storable_or_none(value: object, limit: int = MAX_FIELD) -> str | None:
    """A string field of an upstream answer: storable, or None when it is not a string or
    nothing is left of it."""
    if not isinstance(value, str):
        return None
    return storable(value, limit) or None


def storable_row(values: Iterable[Any]) -> tuple[Any, ...]:
    """A row of values to write, every string in it storable, the other values as they are."""
    return tuple(storable(value) if isinstance(value, str) else value for value in values)


def storable_json(value: Any) -> Any:
    """A JSON value with every string in it (keys included) storable: jsonb refuses NUL too."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value
