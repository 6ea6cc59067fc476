"""When to try an item again after it failed: the code location's one backoff policy.

resolve_taxa's ledger and every enrichment job's failures back off the same way; each job
declares its own first delay and cap (its `JobSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_DOUBLINGS = 20


@dataclass(frozen=True)
class Backoff:
    """The first delay, doubling with each failure before, up to `cap`."""

    first: timedelta
    cap: timedelta

    def next_attempt(self, prior_attempts: int, now: datetime) -> datetime:
        delay: timedelta = self.first * 2 ** min(prior_attempts, MAX_DOUBLINGS)
        return now + min(delay, self.cap)
