"""An override silences the card across service instances, through the real PostgreSQL.

Two instances of the service share one feedback database (a PostgreSQL database of this test's own).
A card issued by the first is overridden through the second with "already addressed"; the next
call, to either instance, leaves that card out (counted in the metrics and the audit line), keeps
the others, and brings it back when the evidence behind it changes. Nothing stored names the
patient in clear.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hooks.suppression import MemorySuppressionStore, evidence_digest, subject_key
from tests.charts import Chart
from tests.hookclient import hook_request, make_app, post
from tests.test_metrics import scrape

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own with a unique name (parallel runs never collide)."""
    import psycopg

    name = f"calcinosis_suppress_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def chart(patient_id: str = "pat-suppress-1", phosphate: float = 6.2) -> Chart:
    record = Chart(patient_id)
    record.calcinosis(body_sites=["left forearm"])
    record.condition("N18.5", display="Chronic kidney disease, stage 5")
    record.mineral_panel(9.9, 3.9, phosphate, 5, egfr=12)
    record.lab("98979-8", 13, "mL/min/{1.73_m2}", 200)
    return record


def call(app: Any, record: Chart) -> list[dict[str, Any]]:
    response = post(app, "/cds-services/calcinosis", hook_request(record))
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def override(app: Any, card: dict[str, Any], code: str, service: str = "/cds-services/calcinosis") -> None:
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": "urn:calcinosis-cds:override-reason", "code": code}},
                "outcomeTimestamp": "2026-11-01T12:00:00Z",
            }
        ]
    }
    response = post(app, f"{service}/feedback", feedback)
    assert response.status_code == 200, response.text


def topics(cards: list[dict[str, Any]]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in cards]


def test_an_override_silences_the_card_across_two_instances(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {
        "auth_disabled": True,
        "feedback_database_url": postgres_url,
        "suppression_key": "test-key",
        "card_id_key": "shared-card-id-key-for-both-replicas",
    }
    first = make_app(**settings)
    second = make_app(**settings)
    record = chart()
    issued = call(first, record)
    assert "subtype" in topics(issued)
    subtype = next(card for card in issued if card["source"]["topic"]["code"] == "subtype")
    override(second, subtype, "already-addressed")

    caplog.set_level(logging.INFO, logger="calcinosis_cds.audit")
    again = call(second, record)
    assert "subtype" not in topics(again)
    assert "workup" in topics(again), "only the overridden topic is silenced"
    assert "subtype" not in topics(call(first, record)), "the other instance reads the same database"
    assert any("1 suppressed" in r.getMessage() for r in caplog.records if r.name == "calcinosis_cds.audit")
    assert scrape()[("calcinosis_cards_suppressed_total", (("topic", "subtype"),))] >= 1

    # Another patient is not silenced; new evidence brings the card back.
    assert "subtype" in topics(call(first, chart("pat-suppress-2")))
    assert "subtype" in topics(call(second, chart(phosphate=7.4)))

    # Nothing stored names the patient in clear.
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT * FROM card_issue").fetchall()
        rows += connection.execute("SELECT * FROM card_suppression").fetchall()
    assert rows and not any("pat-suppress" in str(value) for row in rows for value in row)


def test_other_override_reasons_do_not_silence(postgres_url: str) -> None:
    client = make_app(feedback_database_url=postgres_url, suppression_key="k")
    record = chart("pat-suppress-3")
    subtype = call(client, record)[0]
    override(client, subtype, "disagree-with-evidence")
    assert "subtype" in topics(call(client, record))


def test_a_site_maps_its_own_reason_codes_and_sets_the_period() -> None:
    client = make_app(suppression_override_codes=["ehr-duplicate"], suppression_days=0)
    record = chart("pat-suppress-4")
    override(client, call(client, record)[0], "ehr-duplicate")
    assert "subtype" in topics(call(client, record)), "a period of 0 days turns suppression off"
    mapped = make_app(suppression_override_codes=["ehr-duplicate"])
    override(mapped, call(mapped, record)[0], "ehr-duplicate")
    assert "subtype" not in topics(call(mapped, record))


def test_the_digest_follows_evidence_not_wording_or_time() -> None:
    card = {
        "source": {"topic": {"code": "subtype"}},
        "summary": "one wording",
        "extension": {"x": {"asOf": "2026-11-01", "entry": [{"reported": "6.2 mg/dL", "date": "2026-10-27"}]}},
    }
    reworded = {**card, "summary": "another wording", "extension": {"x": {**card["extension"]["x"], "asOf": "2027"}}}
    changed = {**card, "extension": {"x": {"entry": [{"reported": "7.4 mg/dL", "date": "2026-10-30"}]}}}
    assert evidence_digest(card) == evidence_digest(reworded) != evidence_digest(changed)
    store = MemorySuppressionStore()
    assert subject_key(store.key(), "https://ehr", "123") != subject_key(store.key(), "https://ehr2", "123")


# ----- order-sign cards ------------------------------------------------------------------------

ORDER_SIGN = "/cds-services/calcinosis-order-sign"


def order_sign(app: Any, record: Chart, *orders: dict[str, Any]) -> list[dict[str, Any]]:
    from tests.test_order_sign_api import order_sign_request

    response = post(app, ORDER_SIGN, order_sign_request(record, *orders))
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def override_order_card(app: Any, card: dict[str, Any], code: str) -> None:
    override(app, card, code, ORDER_SIGN)


def drafts(cards: list[dict[str, Any]]) -> list[str]:
    """The draft order each card is about, by its name in the card's detail."""
    return [card["detail"].split("**Draft order: ", 1)[1].split("**", 1)[0] for card in cards]


def test_an_order_card_override_silences_that_order_across_two_instances(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same semantics as patient-view, for order-sign: warfarin for a patient with calciphylaxis
    is overridden as "already addressed" through one instance; the next signing of warfarin (a new
    draft, another id) is quiet on both instances, while the iron card of the same call, a calcium
    binder, another patient and changed evidence still get their cards."""
    from tests.test_order_scenarios import WARFARIN, calciphylaxis_chart, medication_order

    settings = {
        "auth_disabled": True,
        "feedback_database_url": postgres_url,
        "suppression_key": "test-key",
        "card_id_key": "shared-card-id-key-for-both-replicas",
    }
    first, second = make_app(**settings), make_app(**settings)
    iron = medication_order("iron sucrose 20 MG/ML injection", route="intravenous", order_id="draft-iron")
    record = calciphylaxis_chart()
    issued = order_sign(first, record, WARFARIN, iron)
    assert drafts(issued) == ["warfarin sodium 5 MG Oral Tablet", "iron sucrose 20 MG/ML injection"]
    override_order_card(second, issued[0], "already-addressed")

    caplog.set_level(logging.INFO, logger="calcinosis_cds.audit")
    warfarin_again = {**WARFARIN, "id": "draft-next-signing"}
    assert drafts(order_sign(second, record, warfarin_again, iron)) == ["iron sucrose 20 MG/ML injection"]
    assert drafts(order_sign(first, record, warfarin_again)) == [], "the other instance reads the same database"
    assert any("1 suppressed" in r.getMessage() for r in caplog.records if r.name == "calcinosis_cds.audit")
    assert scrape()[("calcinosis_cards_suppressed_total", (("topic", "order-check"),))] >= 1

    binder = medication_order("calcium acetate 667 MG Oral Capsule", dosage_text="with meals", order_id="draft-b")
    assert len(order_sign(first, record, binder)) == 1, "another kind of order keeps its card"
    other = calciphylaxis_chart()
    other.patient_id = "pat-order-2"
    for resource in other.resources:
        if resource["resourceType"] == "Patient":
            resource["id"] = "pat-order-2"
        elif "subject" in resource:
            resource["subject"] = {"reference": "Patient/pat-order-2"}
    assert len(order_sign(first, other, WARFARIN)) == 1, "another patient is not silenced"
    changed = calciphylaxis_chart()
    changed.condition(None, text="Calciphylaxis of the abdomen")  # new evidence behind the card
    assert len(order_sign(second, changed, WARFARIN)) == 1

    import psycopg

    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT * FROM card_suppression").fetchall()
    assert rows and not any("pat-" in str(value) or "draft-" in str(value) for row in rows for value in row)


def test_a_repeat_lab_override_holds_until_a_new_result(postgres_url: str) -> None:
    """A repeat PTH overridden as "already addressed" stays quiet for the same result on file, and
    comes back when a newer result is; "clinical change" does not silence it."""
    from datetime import UTC, datetime

    from tests.charts import AS_OF
    from tests.test_order_scenarios import PTH_ORDER, dialysis_calcinosis_chart

    client = make_app(feedback_database_url=postgres_url, suppression_key="k")
    days_before_now = (AS_OF - datetime.now(UTC)).total_seconds() / 86400  # the service assesses "now"
    record = dialysis_calcinosis_chart(days_before_now + 20)
    (card,) = order_sign(client, record, PTH_ORDER)
    override_order_card(client, card, "clinical-change")
    assert len(order_sign(client, record, PTH_ORDER)) == 1, "'clinical change' does not silence"
    override_order_card(client, card, "already-addressed")
    assert order_sign(client, record, PTH_ORDER) == []
    record.lab("2731-8", 380, "pg/mL", days_before_now + 5, low=150, high=600)
    (back,) = order_sign(client, record, PTH_ORDER)
    assert "380 pg/mL" in back["summary"]
