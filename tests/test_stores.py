"""Feedback persistence and the replay cache against the real servers: SQLite (embedded default),
PostgreSQL and Redis (several replicas). The servers run on the development and CI machines
(.ci/run starts them when they are not running)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooks.card_ids import CardIds
from hooks.models import FeedbackItem
from hooks.stores import (
    COMMENT_ONLY,
    NO_REASON,
    FeedbackRecord,
    FeedbackStore,
    StoreConfigError,
    StoreUnavailableError,
    feedback_records,
    feedback_report,
    open_feedback_store,
)

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
POSTGRES_ADMIN = f"{POSTGRES_SERVER}/postgres"
OURS = "urn:calcinosis-cds:override-reason"
TOPICS = {"01": "subtype", "02": "workup", "03": "differentials"}


def records(
    card: str,
    outcome: str = "accepted",
    reason: str | None = None,
    suggestions: tuple[str, ...] = ("s-1",),
    system: str | None = OURS,
    comment: str | None = None,
) -> list[FeedbackRecord]:
    body: dict[str, object] = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-01T12:00:00Z"}
    if outcome == "accepted":
        body["acceptedSuggestions"] = [{"id": s} for s in suggestions]
    elif reason is not None or comment is not None:
        override: dict[str, object] = {}
        if reason is not None:
            override["reason"] = {"code": reason, **({"system": system} if system else {})}
        if comment is not None:
            override["userComment"] = comment
        body["overrideReason"] = override
    return feedback_records("calcinosis", FeedbackItem.model_validate(body), TOPICS.get(card[-2:], "unknown"))


def card(topic_code: str) -> str:
    return str(uuid.UUID(uuid.uuid4().hex[:-2] + topic_code))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own per test, with a unique name: runs in parallel (other clones, CI)
    never see each other's rows, and none depends on a database someone else created."""
    import psycopg

    name = f"calcinosis_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def exercise(store: FeedbackStore) -> None:
    subtype, workup = card("01"), card("02")
    assert store.add(records(subtype)) == 1
    assert store.add(records(subtype)) == 0  # idempotent per card, outcome and suggestion
    # A clinician orders 3 of 7 workup items; the sandbox posts once per accepted suggestion.
    assert store.add(records(workup, suggestions=("a", "b"))) == 2
    assert store.add(records(workup, suggestions=("b", "c"))) == 1
    assert store.add(records(card("02"), "overridden", "already-addressed")) == 1
    assert store.add(records(card("02"), "overridden", "already-addressed")) == 1
    report = feedback_report(store.records())
    assert report["topics"]["subtype"] == {
        "accepted": 1,
        "acceptedSuggestions": 1,
        "overridden": 0,
        "acceptanceRate": 1.0,
    }
    assert report["topics"]["workup"] == {
        "accepted": 1,
        "acceptedSuggestions": 3,
        "overridden": 2,
        "acceptanceRate": 0.333,
    }
    assert report["topOverrideReasons"][0] == {"reason": f"{OURS}|already-addressed", "count": 2}
    assert store.ping()


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/feedback.db"
    exercise(open_feedback_store(url))
    reopened = open_feedback_store(url)
    assert len(reopened.records()) == 6
    assert len(open_feedback_store(url, read_only=True).records()) == 6


def test_postgres_store_is_shared_and_idempotent_across_replicas(postgres_url: str) -> None:
    stores = [open_feedback_store(postgres_url) for _ in range(3)]
    try:
        exercise(stores[0])
        other_replica = stores[1]
        assert len(other_replica.records()) == 6
        first = stores[2].records()[0]
        assert other_replica.add([first]) == 0
    finally:
        for store in stores:
            store.close()  # type: ignore[attr-defined]


def test_sqlite_batch_is_one_transaction(tmp_path: Path) -> None:
    """A batch is written under one lock and one commit (50,000 single-row commits took 44 s)."""
    store = open_feedback_store(f"sqlite:///{tmp_path}/feedback.db")
    workup = card("02")
    batch = records(workup, suggestions=tuple(f"s-{i}" for i in range(100)))
    assert store.add(batch) == 100 and store.add(batch) == 0


def test_first_schema_rows_are_migrated_one_per_suggestion(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE card_feedback (service_id TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL, "
            "accepted_suggestions TEXT NOT NULL, override_code TEXT, override_comment TEXT, "
            "outcome_timestamp TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (service_id, card, outcome))"
        )
        connection.execute(
            "INSERT INTO card_feedback VALUES ('calcinosis', 'c1', 'accepted', 'a b', NULL, NULL, 't', 1.0)"
        )
        connection.execute(
            "INSERT INTO card_feedback VALUES ('calcinosis', 'c2', 'overridden', '', 'x', NULL, 't', 2.0)"
        )
    store = open_feedback_store(f"sqlite:///{path}")
    rows = store.records()
    assert [(r.card, r.suggestion, r.topic) for r in rows] == [
        ("c1", "a", "unverified"),
        ("c1", "b", "unverified"),
        ("c2", "", "unverified"),
    ]
    assert len(open_feedback_store(f"sqlite:///{path}").records()) == 3  # migrated once


def test_report_names_reasons_by_system_and_says_when_none_was_given() -> None:
    store = open_feedback_store("memory://")
    store.add(records(card("01"), "overridden"))  # a plain dismiss
    store.add(records(card("01"), "overridden", comment="seen by rheumatology"))
    store.add(records(card("01"), "overridden", "not-relevant"))
    store.add(records(card("01"), "overridden", "not-relevant", system="http://other.example/reasons"))
    store.add(records(card("01"), "overridden", "not-relevant", system=None))
    reasons = {r["reason"]: r["count"] for r in feedback_report(store.records())["topOverrideReasons"]}
    assert reasons == {
        NO_REASON: 1,
        COMMENT_ONLY: 1,
        f"{OURS}|not-relevant": 1,
        "http://other.example/reasons|not-relevant": 1,
        "(no system)|not-relevant": 1,
    }


def test_report_is_read_only_and_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="no feedback database"):
        open_feedback_store(f"sqlite:///{tmp_path}/elsewhere/feedback.db", read_only=True)
    assert not (tmp_path / "elsewhere").exists()


def test_bad_store_urls_fail_clearly() -> None:
    with pytest.raises(StoreConfigError, match="not supported"):
        open_feedback_store("mongodb://x")
    # An unreachable database is not a configuration error (the service starts and retries);
    # each call says why it failed.
    store = open_feedback_store("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreUnavailableError, match="feedback database unavailable"):
            store.add(records(card("01")))
    finally:
        store.close()  # type: ignore[attr-defined]


def test_card_ids_verify_only_what_this_key_signed() -> None:
    ids = CardIds("k" * 32)
    signed = ids.sign(card("03"))
    assert ids.topic(signed) == "differentials" and ids.topic(signed.upper()) == "differentials"
    assert uuid.UUID(signed).version == 4  # still a valid UUID
    assert CardIds("other-key" * 4).topic(signed) is None  # another deployment's key
    forged = signed[:-3] + ("0" if signed[-3] != "0" else "1") + signed[-2:]
    assert ids.topic(forged) is None
    assert ids.topic(signed[:-2] + "01") is None  # the topic is under the MAC too
    assert ids.topic("Zebulon Canarysmith MRN 12345") is None
    assert ids.topic(str(uuid.uuid4())[:-2] + "01") is None
