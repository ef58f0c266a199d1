"""Persistence that survives restarts and scales across replicas, selected by URL.

- Feedback (card outcomes, accepted suggestions, override reasons): `memory://` (tests),
  `sqlite:///path/to/feedback.db` (default, one instance), `postgresql://...` (several replicas).

Feedback entries are stored once per (service, card, outcome): the spec allows a client to send
the same feedback again, and a database unique key makes that idempotent across replicas too.
Nothing stored identifies a patient: card and suggestion ids are random-looking UUIDs, and the
only free text is the clinician's override comment.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from hooks.models import FeedbackItem

TOPIC_CODES = {"01": "subtype", "02": "workup", "03": "differentials"}


def topic_of(card_uuid: str) -> str:
    """The card topic encoded in the last two hex digits of our card uuids (see hooks.cards)."""
    return TOPIC_CODES.get(card_uuid[-2:].lower(), "unknown")


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored outcome."""

    service_id: str
    card: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    override_code: str | None
    override_comment: str | None
    outcome_timestamp: str


def _record(service_id: str, item: FeedbackItem) -> FeedbackRecord:
    reason = item.override_reason
    return FeedbackRecord(
        service_id=service_id,
        card=item.card,
        outcome=item.outcome,
        accepted_suggestions=tuple(s.id for s in item.accepted_suggestions or ()),
        override_code=reason.reason.code if reason and reason.reason else None,
        override_comment=reason.user_comment if reason else None,
        outcome_timestamp=item.outcome_timestamp,
    )


class FeedbackStore(Protocol):
    """Where feedback goes. Methods are synchronous; the app calls them in a worker thread."""

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        """Store new entries; return how many were new."""
        ...

    def records(self) -> list[FeedbackRecord]:
        """Everything stored (for the report)."""
        ...

    def ping(self) -> bool:
        """True when the store is reachable (readiness)."""
        ...


class MemoryFeedbackStore:
    """In-process store for tests and throwaway runs."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, str], FeedbackRecord] = {}
        self._lock = threading.Lock()

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        new = 0
        with self._lock:
            for item in items:
                key = (service_id, item.card, item.outcome)
                if key not in self._records:
                    self._records[key] = _record(service_id, item)
                    new += 1
        return new

    def records(self) -> list[FeedbackRecord]:
        with self._lock:
            return list(self._records.values())

    def ping(self) -> bool:
        return True


_COLUMNS = "service_id, card, outcome, accepted_suggestions, override_code, override_comment, outcome_timestamp"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS card_feedback (
    service_id TEXT NOT NULL,
    card TEXT NOT NULL,
    outcome TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,
    override_code TEXT,
    override_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service_id, card, outcome)
)
"""


def _row(record: FeedbackRecord) -> tuple[Any, ...]:
    return (
        record.service_id,
        record.card,
        record.outcome,
        " ".join(record.accepted_suggestions),
        record.override_code,
        record.override_comment,
        record.outcome_timestamp,
        time.time(),
    )


def _from_row(row: tuple[Any, ...]) -> FeedbackRecord:
    return FeedbackRecord(row[0], row[1], row[2], tuple(str(row[3]).split()), row[4], row[5], row[6])


class SqliteFeedbackStore:
    """A SQLite file: the embedded default for a single instance."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(_SCHEMA)

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        rows = [_row(_record(service_id, item)) for item in items]
        with self._lock:
            before = self._connection.total_changes
            self._connection.executemany(
                f"INSERT OR IGNORE INTO card_feedback ({_COLUMNS}, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            return self._connection.total_changes - before

    def records(self) -> list[FeedbackRecord]:
        with self._lock:
            rows = self._connection.execute(f"SELECT {_COLUMNS} FROM card_feedback ORDER BY received_at").fetchall()
        return [_from_row(tuple(row)) for row in rows]

    def ping(self) -> bool:
        try:
            with self._lock:
                self._connection.execute("SELECT 1")
            return True
        except sqlite3.Error:
            return False


class PostgresFeedbackStore:
    """PostgreSQL, shared by several replicas (psycopg 3, one connection per call)."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._dsn = dsn
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as connection:
            connection.execute(_SCHEMA)

    def _connect(self) -> Any:
        return self._psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        new = 0
        with self._connect() as connection:
            for item in items:
                cursor = connection.execute(
                    f"INSERT INTO card_feedback ({_COLUMNS}, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (service_id, card, outcome) DO NOTHING",
                    _row(_record(service_id, item)),
                )
                new += cursor.rowcount
        return new

    def records(self) -> list[FeedbackRecord]:
        with self._connect() as connection:
            rows = connection.execute(f"SELECT {_COLUMNS} FROM card_feedback ORDER BY received_at").fetchall()
        return [_from_row(tuple(row)) for row in rows]

    def ping(self) -> bool:
        try:
            with self._connect() as connection:
                connection.execute("SELECT 1")
            return True
        except self._psycopg.Error:
            return False


class StoreConfigError(ValueError):
    """A store URL that cannot be used (stops start-up with this message)."""


def open_feedback_store(url: str) -> FeedbackStore:
    """The feedback store a URL names."""
    scheme = urlsplit(url).scheme
    if url == "memory://":
        return MemoryFeedbackStore()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or len(path) < 2:
            raise StoreConfigError("feedback database URL: use sqlite:////absolute/path.db or sqlite:///relative.db")
        return SqliteFeedbackStore(path[1:])
    if scheme in ("postgresql", "postgres"):
        try:
            return PostgresFeedbackStore(url)
        except Exception as error:  # connection errors differ by driver version
            raise StoreConfigError(f"feedback database unreachable ({type(error).__name__})") from error
    raise StoreConfigError(f"feedback database URL scheme '{scheme}' is not supported (memory, sqlite, postgresql)")


def feedback_report(records: list[FeedbackRecord]) -> dict[str, Any]:
    """Acceptance rate per card topic and the most common override reasons (read-only)."""
    by_topic: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    for record in records:
        by_topic.setdefault(topic_of(record.card), Counter())[record.outcome] += 1
        if record.outcome == "overridden":
            reasons[record.override_code or "(comment only)"] += 1
    topics = {
        topic: {
            "accepted": counts["accepted"],
            "overridden": counts["overridden"],
            "acceptanceRate": round(counts["accepted"] / (counts["accepted"] + counts["overridden"]), 3),
        }
        for topic, counts in sorted(by_topic.items())
    }
    return {"topics": topics, "topOverrideReasons": [{"reason": r, "count": n} for r, n in reasons.most_common(5)]}
