"""The sandbox's draft-order scenarios (deploy/fhir-sandbox/draft-orders) against their patients at
the anchor day, in process: the cards expected.json records, in order, or silence."""

from __future__ import annotations

import importlib.util
import json
import uuid
from datetime import UTC, datetime, time
from typing import Any

import pytest

from calcinosis_tools.scenarios import ANCHOR, OrderScenario, draft_orders_dir, load_order_scenarios, load_scenarios
from fhir_mapping import bundle_resources
from hooks.models import OrderSignContext
from hooks.order_sign import OrderSignService
from hooks.service import CalcinosisService
from hooks.settings import Settings
from tests.test_order_sign_api import CLINICIAN_DATE, ISO_DATE, clinician_text

PATIENTS = {s.patient_id: s for s in load_scenarios()}
ORDER_SCENARIOS = load_order_scenarios(patients=list(PATIENTS.values()))
SERVICE = OrderSignService(CalcinosisService(Settings(feedback_database_url="memory://", auth_disabled=True)))


def card_outcome(cards: list[Any]) -> list[tuple[str, str, str]]:
    """(indicator, topic, rule) of each card, as expected.json records them."""
    return [
        (
            card["indicator"],
            card["source"]["topic"]["code"],
            card["extension"]["org.calcinosis-cds.order-check"]["rule"],
        )
        for card in cards
    ]


def test_the_issue_scenarios_are_all_there() -> None:
    names = {s.name for s in ORDER_SCENARIOS}
    assert names == {
        "warfarin-calciphylaxis-coded",
        "calcium-acetate-risk-pattern",
        "calcitriol-iv-phosphate-metastatic",
        "warfarin-ssc",
        "repeat-pth-ssc",
        "lactated-ringers-calciphylaxis",
        "parenteral-nutrition-infant-iatrogenic",
    }
    assert any(not s.expected_cards for s in ORDER_SCENARIOS)


def draft_order_generator() -> Any:
    """deploy/fhir-sandbox/draft-orders/generate.py, imported as a module."""
    path = draft_orders_dir() / "generate.py"
    spec = importlib.util.spec_from_file_location("draft_order_generator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_draft_order_files_are_what_the_chart_builder_writes() -> None:
    """The sandbox's draft orders come from tests.fhir_chart (the builder of the in-process
    scenarios), through generate.py; a hand edit of a file, or of the builder, shows here."""
    generator = draft_order_generator()
    for name, bundle in generator.bundles().items():
        assert json.loads((draft_orders_dir() / name).read_text(encoding="utf-8")) == bundle, name
    assert json.loads((draft_orders_dir() / "expected.json").read_text(encoding="utf-8")) == generator.expected()


def order_sign_context(scenario: OrderScenario) -> OrderSignContext:
    return OrderSignContext.model_validate(
        {"userId": "Practitioner/p", "patientId": scenario.patient_id, "draftOrders": scenario.draft_orders}
    )


@pytest.mark.parametrize("scenario", ORDER_SCENARIOS, ids=[s.name for s in ORDER_SCENARIOS])
def test_draft_order_scenario_at_the_anchor(scenario: OrderScenario) -> None:
    patient = PATIENTS[scenario.patient_id]
    response = SERVICE.respond(
        list(bundle_resources(patient.bundle)),
        SERVICE.draft_orders(order_sign_context(scenario)),
        scenario.patient_id,
        uuid.uuid4(),
        datetime.combine(ANCHOR, time(12), tzinfo=UTC),
    )
    cards = response.wire()["cards"]
    assert card_outcome(cards) == list(scenario.expected_cards)
    for card in cards:  # dates as on the patient-view cards (11.4), never ISO
        assert not ISO_DATE.search(clinician_text(card)), clinician_text(card)
    if scenario.name == "repeat-pth-ssc":
        assert CLINICIAN_DATE.search(cards[0]["summary"]), cards[0]["summary"]
