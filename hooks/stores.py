"""Persistence that survives restarts and scales across replicas, selected by URL.

- Feedback (card outcomes, accepted suggestions, override reasons): `memory://` (tests),
  `sqlite:///path/to/feedback.db` (default, one instance), `postgresql://...` (several replicas).

Feedback is stored one row per card outcome and accepted suggestion: the spec lets a client post
feedback for a card several times, and the CDS Hooks sandbox posts once per accepted suggestion, so
a clinician who orders 3 of 7 workup items is 3 rows. A database unique key on (service, card,
outcome, suggestion) makes a repeated post idempotent across replicas too. Only cards this service
issued are stored (their ids carry a MAC: `hooks.card_ids`), so nothing stored identifies a
patient: ids are random-looking UUIDs, and the only free text is the clinician's override comment
(capped in length).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from hooks.models import FeedbackItem

log = logging.getLogger("calcinosis_cds.stores")

NO_REASON = "(no reason given)"
COMMENT_ONLY = "(comment only)"


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored outcome: a card overridden, or one suggestion of a card accepted.

    `topic` is the card's topic, read from its verified id when the feedback arrived;
    `suggestion` is empty for an override. `override_system` is empty when the EHR sent a reason
    code without a system (read as one of this service's own override reasons).
    """

    service_id: str
    card: str
    topic: str
    outcome: str
    suggestion: str
    override_system: str | None
    override_code: str | None
    override_comment: str | None
    outcome_timestamp: str


def feedback_records(service_id: str, item: FeedbackItem, topic: str) -> list[FeedbackRecord]:
    """The rows one verified feedback entry makes: one per accepted suggestion, or one override."""
    reason = item.override_reason
    coded = reason.reason if reason else None
    common = {
        "service_id": service_id,
        "card": item.card.lower(),
        "topic": topic,
        "outcome": item.outcome,
        "override_system": (coded.system or "") if coded else None,
        "override_code": coded.code if coded else None,
        "override_comment": reason.user_comment if reason else None,
        "outcome_timestamp": item.outcome_timestamp,
    }
    if item.outcome == "accepted":
        suggestions = dict.fromkeys(s.id.lower() for s in item.accepted_suggestions or ())
        return [FeedbackRecord(suggestion=s, **common) for s in suggestions]  # type: ignore[arg-type]
    return [FeedbackRecord(suggestion="", **common)]  # type: ignore[arg-type]


class FeedbackStore(Protocol):
    """Where feedback goes. Methods are synchronous; the app calls them in a worker thread."""

    def add(self, records: list[FeedbackRecord]) -> int:
        """Store new rows (in one transaction); return how many were new."""
        ...

    def records(self) -> list[FeedbackRecord]:
        """Everything stored (for the report)."""
        ...

    def ping(self) -> bool:
        """True when the store is reachable (readiness)."""
        ...


def _key(record: FeedbackRecord) -> tuple[str, str, str, str]:
    return (record.service_id, record.card, record.outcome, record.suggestion)


class MemoryFeedbackStore:
    """In-process store for tests and throwaway runs."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, str, str], FeedbackRecord] = {}
        self._lock = threading.Lock()

    def add(self, records: list[FeedbackRecord]) -> int:
        new = 0
        with self._lock:
            for record in records:
                if _key(record) not in self._records:
                    self._records[_key(record)] = record
                    new += 1
        return new

    def records(self) -> list[FeedbackRecord]:
        with self._lock:
            return list(self._records.values())

    def ping(self) -> bool:
        return True


TABLE = "card_outcome"
LEGACY_TABLE = "card_feedback"
_COLUMNS = (
    "service_id, card, topic, outcome, suggestion, override_system, override_code, override_comment, outcome_timestamp"
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    service_id TEXT NOT NULL,
    card TEXT NOT NULL,
    topic TEXT NOT NULL,
    outcome TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    override_system TEXT,
    override_code TEXT,
    override_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service_id, card, outcome, suggestion)
)
"""


def _row(record: FeedbackRecord) -> tuple[Any, ...]:
    return (
        record.service_id,
        record.card,
        record.topic,
        record.outcome,
        record.suggestion,
        record.override_system,
        record.override_code,
        record.override_comment,
        record.outcome_timestamp,
        time.time(),
    )


def _from_row(row: tuple[Any, ...]) -> FeedbackRecord:
    return FeedbackRecord(*(row[:9]))


def _legacy_records(rows: list[tuple[Any, ...]]) -> list[FeedbackRecord]:
    """Rows of the first schema (one per card and outcome, suggestions space-separated), split
    one per suggestion. Their card ids carry no MAC, so their topic is `unverified`."""
    records: list[FeedbackRecord] = []
    for service_id, card, outcome, suggestions, code, comment, timestamp in rows:
        common = (service_id, card, "unverified", outcome)
        rest = (None if code is None else "", code, comment, timestamp)
        if outcome == "accepted":
            records += [FeedbackRecord(*common, s, *rest) for s in str(suggestions).split()]
        else:
            records.append(FeedbackRecord(*common, "", *rest))
    return records


_LEGACY_SELECT = (
    f"SELECT service_id, card, outcome, accepted_suggestions, override_code, override_comment, outcome_timestamp "
    f"FROM {LEGACY_TABLE}"
)


class SqliteFeedbackStore:
    """A SQLite file: the embedded default for a single instance."""

    def __init__(self, path: str, read_only: bool = False) -> None:
        if read_only:
            if path == ":memory:" or not Path(path).is_file():
                raise StoreConfigError(f"no feedback database at {Path(path).resolve()}")
            self._connection = sqlite3.connect(
                Path(path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
            )
        else:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        if read_only:
            return
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.execute(_SCHEMA)
                legacy = self._connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEGACY_TABLE,)
                ).fetchone()
                if legacy:
                    rows = self._connection.execute(_LEGACY_SELECT).fetchall()
                    self._insert([_row(r) for r in _legacy_records(rows)])
                    self._connection.execute(f"ALTER TABLE {LEGACY_TABLE} RENAME TO {LEGACY_TABLE}_migrated")
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        self._connection.executemany(
            f"INSERT OR IGNORE INTO {TABLE} ({_COLUMNS}, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )

    def add(self, records: list[FeedbackRecord]) -> int:
        rows = [_row(record) for record in records]
        with self._lock:
            before = self._connection.total_changes
            self._connection.execute("BEGIN IMMEDIATE")  # one transaction: one lock, one fsync
            try:
                self._insert(rows)
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            return self._connection.total_changes - before

    def records(self) -> list[FeedbackRecord]:
        with self._lock:
            try:
                rows = self._connection.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY received_at").fetchall()
            except sqlite3.OperationalError as error:  # read-only on a database of another schema
                raise StoreConfigError(f"the feedback database has no {TABLE} table") from error
        return [_from_row(tuple(row)) for row in rows]

    def ping(self) -> bool:
        try:
            with self._lock:
                self._connection.execute("SELECT 1")
            return True
        except sqlite3.Error:
            return False


class StoreUnavailableError(Exception):
    """The feedback store cannot take or give data now (answered 503 with Retry-After, so the client
    sends it again: nothing answered 200 is lost). The message names the cause, never a row."""


class PostgresFeedbackStore:
    """PostgreSQL, shared by several replicas, through a connection pool (psycopg-pool).

    Start-up never waits for the database: the pool connects in the background and the schema is
    created (and migrated) on first use, under a transaction-scoped advisory lock so that
    replicas starting together cannot race; an outage at start-up does not crash the process (the
    hook call does not need this store). Every wait is bounded: `wait_timeout` for a pooled
    connection, `connect_timeout` for a new one, `statement_timeout` on the server. (A server that
    stops answering altogether is bounded by the caller, `GuardedFeedbackStore`.) `read_only` (the
    report) creates nothing.
    """

    def __init__(
        self,
        dsn: str,
        read_only: bool = False,
        *,
        pool_size: int = 4,
        wait_timeout: float = 2.0,
        statement_timeout_ms: int = 5000,
    ) -> None:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=wait_timeout,
            open=False,
            name="feedback",
            kwargs={
                "autocommit": True,
                "connect_timeout": 3,
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
        )
        self._pool.open(wait=False)
        self._schema_ready = read_only
        self._schema_lock = threading.Lock()

    def _unavailable(self, error: Exception) -> StoreUnavailableError:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return StoreUnavailableError(f"feedback database unavailable ({type(error).__name__}: {first_line})")

    def ensure_schema(self) -> None:
        """Create (and migrate) the table if needed: idempotent, safe with replicas doing the same."""
        if self._schema_ready:
            return
        import psycopg

        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                with self._pool.connection() as connection, connection.transaction():
                    # Replicas starting together create (and migrate) the schema one at a time.
                    connection.execute("SELECT pg_advisory_xact_lock(hashtext('calcinosis-cds feedback schema'))")
                    connection.execute(_SCHEMA)
                    legacy = connection.execute("SELECT to_regclass(%s)", (LEGACY_TABLE,)).fetchone()
                    if legacy and legacy[0] is not None:
                        rows = connection.execute(_LEGACY_SELECT).fetchall()
                        self._insert(connection, [_row(r) for r in _legacy_records(rows)])
                        connection.execute(f"ALTER TABLE {LEGACY_TABLE} RENAME TO {LEGACY_TABLE}_migrated")
            except psycopg.Error as error:
                raise self._unavailable(error) from error
            self._schema_ready = True

    @staticmethod
    def _insert(connection: Any, rows: list[tuple[Any, ...]]) -> int:
        new = 0
        with connection.cursor() as cursor:
            for row in rows:
                cursor.execute(
                    f"INSERT INTO {TABLE} ({_COLUMNS}, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (service_id, card, outcome, suggestion) DO NOTHING",
                    row,
                )
                new += cursor.rowcount
        return new

    def add(self, records: list[FeedbackRecord]) -> int:
        """Store the rows in one transaction: all or none, committed before this returns."""
        import psycopg

        self.ensure_schema()
        try:
            with self._pool.connection() as connection, connection.transaction():
                return self._insert(connection, [_row(record) for record in records])
        except psycopg.Error as error:
            raise self._unavailable(error) from error

    def records(self) -> list[FeedbackRecord]:
        import psycopg

        self.ensure_schema()
        try:
            with self._pool.connection() as connection:
                rows = connection.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY received_at").fetchall()
        except psycopg.errors.UndefinedTable as error:
            raise StoreConfigError(f"the feedback database has no {TABLE} table") from error
        except psycopg.Error as error:
            raise self._unavailable(error) from error
        return [_from_row(tuple(row)) for row in rows]

    def ping(self) -> bool:
        try:
            self.ensure_schema()
            with self._pool.connection() as connection:
                connection.execute("SELECT 1")
            return True
        except Exception:  # any failure means "not reachable"
            return False

    def close(self) -> None:
        self._pool.close()


class GuardedFeedbackStore:
    """The app's way to the feedback store: each call runs in one of `slots` threads of its own and
    is waited for at most `timeout` seconds, so a database that hangs (or a stopped process that
    still accepts connections) costs a bounded wait and a 503, never a worker thread pool drained
    by stuck calls nor a 500. When every slot is taken by a call still stuck, the next call is
    refused at once rather than queued. A call answered 503 after its timeout may still complete
    later: that is harmless, since feedback is stored idempotently and the client sends it again.
    `healthy` is the outcome of the last call (for the readiness report; no I/O)."""

    def __init__(self, store: FeedbackStore, *, slots: int = 4, timeout: float = 5.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self.timeout = timeout
        self.slots = slots
        self.healthy: bool | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="feedback-store")

    async def add(self, records: list[FeedbackRecord]) -> int:
        """`store.add`, bounded; StoreUnavailableError when the store cannot take it now."""
        import asyncio

        with self._lock:
            if self._busy >= self.slots:
                self.healthy = False
                raise StoreUnavailableError("feedback database busy (every connection is waiting on it)")
            self._busy += 1
        future = self._executor.submit(self.store.add, records)
        future.add_done_callback(self._release)
        try:
            new = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            self.healthy = False
            raise StoreUnavailableError(f"feedback database did not answer within {self.timeout:g} s") from None
        except StoreUnavailableError:
            self.healthy = False
            raise
        except (sqlite3.Error, OSError) as error:
            self.healthy = False
            raise StoreUnavailableError(f"feedback database unavailable ({type(error).__name__})") from error
        self.healthy = True
        return new

    async def prepare(self, first_delay: float = 1.0, longest_delay: float = 30.0) -> None:
        """Create the schema at start, retrying with exponential back-off until it works, and
        log the true cause of each failure (a store without a schema step returns at once)."""
        import asyncio

        ensure = getattr(self.store, "ensure_schema", None)
        if ensure is None:
            return
        delay = first_delay
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(loop.run_in_executor(self._executor, ensure), self.timeout)
                self.healthy = True
                log.info("feedback database ready")
                return
            except (StoreUnavailableError, TimeoutError) as error:
                self.healthy = False
                cause = str(error) or f"no answer within {self.timeout:g} s"
                log.warning("feedback database not ready (%s); retrying in %.0f s", cause, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest_delay)

    def _release(self, _: object) -> None:
        with self._lock:
            self._busy -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


class StoreConfigError(ValueError):
    """A store URL that cannot be used (stops start-up with this message)."""


def open_feedback_store(url: str, read_only: bool = False, *, pool_size: int = 4) -> FeedbackStore:
    """The feedback store a URL names. `read_only` (the report) creates nothing: a database that
    is not there is an error, not a new empty one. `pool_size`: PostgreSQL connections of this
    process."""
    scheme = urlsplit(url).scheme
    if url == "memory://":
        return MemoryFeedbackStore()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or len(path) < 2:
            raise StoreConfigError("feedback database URL: use sqlite:////absolute/path.db or sqlite:///relative.db")
        return SqliteFeedbackStore(path[1:], read_only)
    if scheme in ("postgresql", "postgres"):
        try:
            return PostgresFeedbackStore(url, read_only, pool_size=pool_size)
        except Exception as error:  # a malformed URL; connecting happens later, in the background
            raise StoreConfigError(f"feedback database URL is not usable ({type(error).__name__})") from error
    raise StoreConfigError(f"feedback database URL scheme '{scheme}' is not supported (memory, sqlite, postgresql)")


def _reason_label(record: FeedbackRecord) -> str:
    """How an override reason is counted: by code within its system (a code means different
    things in different systems); a comment alone, or nothing, named as such."""
    if record.override_code is not None:
        system = record.override_system or "(no system)"
        return f"{system}|{record.override_code}"
    return COMMENT_ONLY if record.override_comment else NO_REASON


def feedback_report(records: list[FeedbackRecord]) -> dict[str, Any]:
    """Per card topic: cards accepted (at least one suggestion), suggestions accepted, cards
    overridden and the acceptance rate over cards; and the most common override reasons."""
    accepted: dict[str, set[str]] = {}
    suggestions: Counter[str] = Counter()
    overridden: dict[str, set[str]] = {}
    reasons: Counter[str] = Counter()
    for record in records:
        if record.outcome == "accepted":
            accepted.setdefault(record.topic, set()).add(record.card)
            suggestions[record.topic] += 1
        else:
            overridden.setdefault(record.topic, set()).add(record.card)
            reasons[_reason_label(record)] += 1
    topics = {}
    for topic in sorted(set(accepted) | set(overridden)):
        cards_accepted, cards_overridden = len(accepted.get(topic, ())), len(overridden.get(topic, ()))
        topics[topic] = {
            "accepted": cards_accepted,
            "acceptedSuggestions": suggestions[topic],
            "overridden": cards_overridden,
            "acceptanceRate": round(cards_accepted / (cards_accepted + cards_overridden), 3),
        }
    return {"topics": topics, "topOverrideReasons": [{"reason": r, "count": n} for r, n in reasons.most_common(5)]}
