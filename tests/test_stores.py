"""Feedback persistence and the replay cache against the real servers: SQLite (embedded default),
PostgreSQL and Redis (several replicas). The servers run on the development and CI machines
(.ci/run starts them when they are not running)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooks.models import FeedbackItem
from hooks.stores import (
    FeedbackStore,
    StoreConfigError,
    feedback_report,
    open_feedback_store,
    topic_of,
)

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
POSTGRES_ADMIN = f"{POSTGRES_SERVER}/postgres"


def items(card: str, outcome: str = "accepted", reason: str | None = None) -> list[FeedbackItem]:
    body: dict[str, object] = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-01T12:00:00Z"}
    if outcome == "accepted":
        body["acceptedSuggestions"] = [{"id": "s-1"}]
    else:
        body["overrideReason"] = {
            "reason": {"system": "urn:calcinosis-cds:override-reason", "code": reason or "not-relevant"}
        }
    return [FeedbackItem.model_validate(body)]


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
    assert store.add("calcinosis", items(subtype)) == 1
    assert store.add("calcinosis", items(subtype)) == 0  # idempotent per card and outcome
    assert store.add("calcinosis", items(workup, "overridden", "already-addressed")) == 1
    assert store.add("calcinosis", items(card("02"), "overridden", "already-addressed")) == 1
    report = feedback_report(store.records())
    assert report["topics"]["subtype"] == {"accepted": 1, "overridden": 0, "acceptanceRate": 1.0}
    assert report["topics"]["workup"]["acceptanceRate"] == 0.0
    assert report["topOverrideReasons"][0] == {"reason": "already-addressed", "count": 2}
    assert store.ping()


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/feedback.db"
    exercise(open_feedback_store(url))
    reopened = open_feedback_store(url)
    assert len(reopened.records()) == 3


def test_postgres_store_is_shared_and_idempotent_across_replicas(postgres_url: str) -> None:
    exercise(open_feedback_store(postgres_url))
    other_replica = open_feedback_store(postgres_url)
    assert len(other_replica.records()) == 3
    first = open_feedback_store(postgres_url).records()[0]
    assert other_replica.add("calcinosis", items(first.card)) == 0


def test_bad_store_urls_fail_clearly() -> None:
    with pytest.raises(StoreConfigError, match="not supported"):
        open_feedback_store("mongodb://x")
    with pytest.raises(StoreConfigError, match="unreachable"):
        open_feedback_store("postgresql://nobody@127.0.0.1:1/none")


def test_topic_is_read_from_the_card_uuid() -> None:
    assert topic_of(card("03")) == "differentials" and topic_of(str(uuid.uuid4())[:-2] + "ff") == "unknown"
