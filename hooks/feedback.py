"""Feedback on cards: validated, idempotent per card and outcome, kept in memory for now.

The spec lets a client send the same feedback more than once, so an entry is stored once per
(service, card, outcome); repeats are acknowledged but not counted twice. Persistence across
restarts and replicas arrives with the deployment work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hooks.models import FeedbackItem


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """What is kept: outcome and reason codes, no free text beyond the clinician's comment."""

    service_id: str
    card: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    override_code: str | None
    override_comment: str | None
    outcome_timestamp: str


class FeedbackStore:
    """In-memory, thread-safe store keyed by (service, card, outcome)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, str], FeedbackRecord] = {}
        self._lock = threading.Lock()

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        """Store new entries; returns how many were new (repeats are ignored)."""
        new = 0
        with self._lock:
            for item in items:
                key = (service_id, item.card, item.outcome)
                if key in self._records:
                    continue
                reason = item.override_reason
                self._records[key] = FeedbackRecord(
                    service_id=service_id,
                    card=item.card,
                    outcome=item.outcome,
                    accepted_suggestions=tuple(s.id for s in item.accepted_suggestions or ()),
                    override_code=reason.reason.code if reason and reason.reason else None,
                    override_comment=reason.user_comment if reason else None,
                    outcome_timestamp=item.outcome_timestamp,
                )
                new += 1
        return new

    def records(self) -> list[FeedbackRecord]:
        """A snapshot of everything stored."""
        with self._lock:
            return list(self._records.values())
