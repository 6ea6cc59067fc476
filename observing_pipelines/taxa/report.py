"""What an enrichment pass did, in the numbers operators read on the asset page."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

MAX_REPORTED_FAILURES = 20


@dataclass
class SyncReport:
    seen: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    http_calls: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    def fail(self, item: str, error: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(f"{item}: {error}")

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
