"""What an enrichment pass did, in the numbers operators read on the asset page."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

MAX_REPORTED = 20
"""Rows of a run's samples (failures, changes) shown on the asset page."""

Value = str | int | float | bool | None


@dataclass
class Sample:
    """The first `MAX_REPORTED` rows of what a pass did (its failures, its changes), each a
    mapping of column to value, for a table on the asset page; `total` counts them all."""

    rows: list[dict[str, Value]] = field(default_factory=list)
    total: int = 0

    def add(self, **row: Value) -> None:
        self.total += 1
        if len(self.rows) < MAX_REPORTED:
            self.rows.append(row)


@dataclass
class SyncReport:
    seen: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    http_calls: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    failures: Sample = field(default_factory=Sample)
    """item, error"""
    changes: Sample = field(default_factory=Sample)
    """What the job's `Enrichment.describe_change` says of each changed row."""
    extra: dict[str, int] = field(default_factory=dict)

    def fail(self, item: str, error: str) -> None:
        self.failed += 1
        self.failures.add(item=item, error=error)

    def finish(self, http_calls: int) -> SyncReport:
        self.http_calls = http_calls
        self.seconds = time.monotonic() - self.started
        return self

    def metadata(self) -> dict[str, Any]:
        return {
            "taxa_seen": self.seen,
            "taxa_changed": self.changed,
            "taxa_unchanged": self.unchanged,
            "taxa_failed": self.failed,
            "http_calls": self.http_calls,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }
