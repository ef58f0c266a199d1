"""Do not re-propose after a rejection (clinical-knowledge.md 11.4; the CPG ProposeDiagnosis pattern).

When a clinician overrides a card with "already addressed" or "not relevant" (or an EHR reason
code configured to mean one of them), that card topic stays quiet for that patient for a configured
period, unless the evidence behind it changes. This holds for both services: an order-sign card's
topic is narrowed to the kind of order and the rule (the same warfarin warning, the same repeat
PTH), so the next signing of such an order with the same evidence is quiet too. It works across replicas because the record lives in
the feedback database (the same URL: memory, SQLite or PostgreSQL).

What is stored identifies no patient in clear:
- `card_issue`: for each card issued, the card's uuid, a keyed hash (HMAC-SHA256) of the caller's
  issuer and the EHR's patient id, the topic, and a digest of the evidence behind the card. Feedback
  carries only the card's uuid, so this is how an override finds its patient and evidence. Rows
  older than the period are deleted as new ones arrive.
- `card_suppression`: (patient hash, topic) -> evidence digest, until when, and the reason code.

The hash key is `CALCINOSIS_SUPPRESSION_KEY`; without it, a random key is created once in the
database and shared by every replica (a warning says so: a key kept apart from the data is better).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import orjson

log = logging.getLogger("calcinosis_cds")
T = TypeVar("T")

#: Override reasons of this service that silence a topic (its own `overrideReasons` codes).
SILENCING_REASONS = frozenset({"already-addressed", "not-relevant"})

#: The extension parts that hold record evidence and conclusions (not wording, not dates of the call).
_EVIDENCE_KEYS = frozenset({"entry", "evidence", "inputs", "lastResult", "likelihood", "item", "code", "pattern"})


def subject_key(key: bytes, issuer: str, patient_id: str) -> str:
    """Keyed hash of the caller and the EHR's patient id: equal for the same patient at the same
    EHR, useless without the key."""
    return hmac.new(key, f"{issuer}\x1f{patient_id}".encode(), hashlib.sha256).hexdigest()


def evidence_digest(card: dict[str, Any]) -> str:
    """A digest of the evidence behind a card: the record entries it cites (codes, values as
    reported, dates), the likelihoods and the items it suggests, taken from its extension. Wording
    and the moment of the call are left out, so the same chart gives the same digest tomorrow and a
    new result changes it."""
    parts: list[Any] = []

    def walk(node: Any, keep: bool) -> None:
        if isinstance(node, dict):
            for key in sorted(node):
                if key == "asOf":
                    continue
                walk(node[key], keep or key in _EVIDENCE_KEYS)
                if (keep or key in _EVIDENCE_KEYS) and not isinstance(node[key], dict | list):
                    parts.append((key, node[key]))
        elif isinstance(node, list):
            for child in node:
                walk(child, keep)

    walk(card.get("extension") or {}, False)
    topic = ((card.get("source") or {}).get("topic") or {}).get("code")
    return hashlib.sha256(orjson.dumps([topic, parts], option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def card_topic(card: dict[str, Any]) -> str:
    """The card's topic code (`source.topic.code`), as metrics and logs name it."""
    return str(((card.get("source") or {}).get("topic") or {}).get("code", "unknown"))


def suppression_topic(card: dict[str, Any]) -> str:
    """What an override silences for the patient: the card's topic; for an order-sign card, the
    topic narrowed to the kind of order and why (`hooks.order_cards.override_scope`), because one
    order-check topic covers every drug the tables name."""
    from hooks.order_cards import override_scope

    scope = override_scope(card)
    topic = card_topic(card)
    return f"{topic}/{scope}" if scope else topic


class SuppressionUnavailableError(Exception):
    """The store of overrides cannot be reached (cards are then shown, overrides answered 503)."""


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """A card issued to a patient (pseudonymised): what an override of it refers to."""

    card: str
    subject: str
    topic: str
    digest: str


class SuppressionStore(Protocol):
    """Where issued cards and active suppressions are kept. Synchronous; called in a worker thread."""

    def key(self) -> bytes:
        """The hash key when none is configured (created once, shared by replicas)."""
        ...

    def record_issued(self, cards: list[IssuedCard], now: float, keep_seconds: float) -> None:
        """Remember issued cards (and forget those older than `keep_seconds`)."""
        ...

    def issued(self, card: str) -> IssuedCard | None:
        """The issued card with this uuid, if known."""
        ...

    def suppress(self, issued: IssuedCard, until: float, reason: str) -> None:
        """Silence the card's topic for its patient until `until`, for its evidence digest."""
        ...

    def active(self, subject: str, now: float) -> dict[str, str]:
        """Topic -> evidence digest of the suppressions of a patient still in force."""
        ...


class MemorySuppressionStore:
    """One process (tests, throwaway runs)."""

    def __init__(self) -> None:
        self._issued: dict[str, tuple[IssuedCard, float]] = {}
        self._suppressed: dict[tuple[str, str], tuple[str, float]] = {}
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def key(self) -> bytes:
        return self._key

    def record_issued(self, cards: list[IssuedCard], now: float, keep_seconds: float) -> None:
        with self._lock:
            for card in cards:
                self._issued[card.card] = (card, now)
            for uuid_, (_, at) in list(self._issued.items()):
                if at < now - keep_seconds:
                    del self._issued[uuid_]

    def issued(self, card: str) -> IssuedCard | None:
        with self._lock:
            found = self._issued.get(card)
        return found[0] if found else None

    def suppress(self, issued: IssuedCard, until: float, reason: str) -> None:
        with self._lock:
            self._suppressed[(issued.subject, issued.topic)] = (issued.digest, until)

    def active(self, subject: str, now: float) -> dict[str, str]:
        with self._lock:
            return {
                topic: digest
                for (who, topic), (digest, until) in self._suppressed.items()
                if who == subject and until > now
            }


_TABLES = (
    """CREATE TABLE IF NOT EXISTS card_issue (
    card TEXT PRIMARY KEY,
    subject_key TEXT NOT NULL,
    topic TEXT NOT NULL,
    digest TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS card_issue_issued_at ON card_issue (issued_at)",
    """CREATE TABLE IF NOT EXISTS card_suppression (
    subject_key TEXT NOT NULL,
    topic TEXT NOT NULL,
    digest TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (subject_key, topic)
)""",
    "CREATE TABLE IF NOT EXISTS suppression_key (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)",
)


class _SqlSuppressionStore:
    """The SQL shared by SQLite and PostgreSQL; subclasses give a connection and a placeholder."""

    placeholder = "?"

    def _execute(self, sql: str, rows: list[tuple[Any, ...]] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def key(self) -> bytes:
        candidate = secrets.token_hex(32)
        self._execute(
            self._sql("INSERT INTO suppression_key (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING"),
            (candidate,),
        )
        rows = self._execute("SELECT secret FROM suppression_key WHERE id = 1")
        return bytes.fromhex(str(rows[0][0]))

    def record_issued(self, cards: list[IssuedCard], now: float, keep_seconds: float) -> None:
        for card in cards:
            self._execute(
                self._sql(
                    "INSERT INTO card_issue (card, subject_key, topic, digest, issued_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (card) DO UPDATE SET digest = excluded.digest, issued_at = excluded.issued_at"
                ),
                (card.card, card.subject, card.topic, card.digest, now),
            )
        self._execute(self._sql("DELETE FROM card_issue WHERE issued_at < ?"), (now - keep_seconds,))

    def issued(self, card: str) -> IssuedCard | None:
        rows = self._execute(
            self._sql("SELECT card, subject_key, topic, digest FROM card_issue WHERE card = ?"), (card,)
        )
        return IssuedCard(*(str(v) for v in rows[0])) if rows else None

    def suppress(self, issued: IssuedCard, until: float, reason: str) -> None:
        self._execute(
            self._sql(
                "INSERT INTO card_suppression (subject_key, topic, digest, until, reason) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (subject_key, topic) DO UPDATE SET digest = excluded.digest, until = excluded.until, "
                "reason = excluded.reason"
            ),
            (issued.subject, issued.topic, issued.digest, until, reason),
        )

    def active(self, subject: str, now: float) -> dict[str, str]:
        rows = self._execute(
            self._sql("SELECT topic, digest FROM card_suppression WHERE subject_key = ? AND until > ?"), (subject, now)
        )
        return {str(topic): str(digest) for topic, digest in rows}


class SqliteSuppressionStore(_SqlSuppressionStore):
    """A SQLite file (the embedded default, one instance)."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            for statement in _TABLES:
                self._connection.execute(statement)

    def _execute(self, sql: str, rows: list[tuple[Any, ...]] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(row) for row in self._connection.execute(sql, rows).fetchall()]


class PostgresSuppressionStore(_SqlSuppressionStore):
    """PostgreSQL shared by every replica, through a small connection pool of its own.

    Like the feedback store, start-up never waits for the database: the tables are created on
    first use, under a transaction-scoped advisory lock (replicas starting together do not race),
    and every wait is bounded (pooled connection, new connection, statement). Failures surface as
    `SuppressionUnavailableError`; the caller shows the cards rather than hold any back.
    """

    placeholder = "%s"

    def __init__(self, dsn: str, *, wait_timeout: float = 2.0, statement_timeout_ms: int = 5000) -> None:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=2,
            timeout=wait_timeout,
            open=False,
            name="suppression",
            kwargs={
                "autocommit": True,
                "connect_timeout": 3,
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
        )
        self._pool.open(wait=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._pool.connection() as connection, connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(hashtext('calcinosis-cds suppression schema'))")
                for statement in _TABLES:
                    connection.execute(statement)
            self._schema_ready = True

    def _execute(self, sql: str, rows: list[tuple[Any, ...]] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            self._ensure_schema()
            with self._pool.connection() as connection:
                cursor = connection.execute(sql, rows)
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        except Exception as error:  # psycopg errors and pool time-outs alike: the store is unavailable
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            raise SuppressionUnavailableError(f"{type(error).__name__}: {first_line}") from error

    def close(self) -> None:
        """Close the pool (tests, shutdown)."""
        self._pool.close()


def open_suppression_store(url: str, *, wait_timeout: float = 2.0) -> SuppressionStore:
    """The suppression store beside the feedback database the URL names."""
    scheme = urlsplit(url).scheme
    if url == "memory://":
        return MemorySuppressionStore()
    if scheme == "sqlite":
        return SqliteSuppressionStore(url.removeprefix("sqlite://")[1:])
    if scheme in ("postgresql", "postgres"):
        return PostgresSuppressionStore(url, wait_timeout=wait_timeout)
    raise ValueError(f"feedback database URL scheme '{scheme}' is not supported")


class CardSuppression:
    """The policy: which overrides silence a topic, for how long, and for whom."""

    def __init__(
        self,
        store: SuppressionStore,
        period_days: float,
        key: str | None = None,
        extra_reasons: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.period_seconds = period_days * 86400
        self.reasons = SILENCING_REASONS | extra_reasons
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._key: bytes | None = key.encode() if key else None
        if key is None and period_days > 0:
            log.warning("CALCINOSIS_SUPPRESSION_KEY is not set: patient hashes use a key kept in the feedback database")

    async def bounded(self, function: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run a store call off the event loop, waiting at most `timeout` seconds: a database that
        stops answering costs a bounded wait, never a hung hook call. While two earlier calls are
        still stuck, the store is treated as unavailable at once (threads are not piled up)."""
        with self._in_flight_lock:
            if self._in_flight >= 2:
                raise SuppressionUnavailableError("earlier calls to the store have not returned")
            self._in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(None, self._release_after, function, args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as error:
            raise SuppressionUnavailableError(f"no answer within {timeout:g} s") from error

    def _release_after(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return function(*args)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    @property
    def enabled(self) -> bool:
        """Off when the period is zero."""
        return self.period_seconds > 0

    def subject(self, issuer: str, patient_id: str) -> str:
        """The pseudonymous key of a patient at an EHR (the stored key is read on first use, so
        start-up never waits for the database)."""
        if self._key is None:
            self._key = self.store.key()
        return subject_key(self._key, issuer, patient_id)

    def filter(
        self, subject: str, cards: list[dict[str, Any]], now: float | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The cards to show and the topics held back (same evidence as when overridden); the
        shown ones are recorded so that an override of them can find this patient."""
        if not self.enabled or not cards:
            return cards, []
        now = time.time() if now is None else now
        active = self.store.active(subject, now)
        shown: list[dict[str, Any]] = []
        held: list[str] = []
        issued: list[IssuedCard] = []
        for card in cards:
            topic = suppression_topic(card)
            digest = evidence_digest(card)
            if active.get(topic) == digest:
                held.append(card_topic(card))
                continue
            shown.append(card)
            if card.get("uuid"):
                issued.append(IssuedCard(str(card["uuid"]), subject, topic, digest))
        self.store.record_issued(issued, now, self.period_seconds)
        return shown, held

    def filter_for(
        self, issuer: str, patient_id: str, cards: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """`filter` for a patient named by the caller's issuer and the EHR's id (run off the event
        loop: it may read the stored key and always reads the database)."""
        return self.filter(self.subject(issuer, patient_id), cards)

    def overridden(self, card: str, reason: str | None, now: float | None = None) -> bool:
        """Record an override; True when it silences the card's topic for its patient."""
        if not self.enabled or reason not in self.reasons:
            return False
        issued = self.store.issued(card)
        if issued is None:
            return False
        now = time.time() if now is None else now
        self.store.suppress(issued, now + self.period_seconds, reason or "")
        return True
