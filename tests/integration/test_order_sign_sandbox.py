"""The order-sign service over HTTP against the local FHIR sandbox: every draft-order scenario of
deploy/fhir-sandbox/draft-orders, once with no prefetch (the service fetches the chart through
`fhirServer`) and once with the prefetch an EHR would send (the test resolves the order-sign
service's discovery templates against the same server). Both answers must be the cards
expected.json records, or silence; and `check --draft-orders` gives the same from the command line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from calcinosis_tools.cli import load_sandbox
from calcinosis_tools.scenarios import OrderScenario, draft_orders_dir, load_order_scenarios
from hooks.cli import main
from hooks.models import HookResponse
from tests.fhir_chart import ICD10, LOINC, SNOMED, FhirChart, codeable, coding
from tests.integration.test_scenarios_both_ways import read_all
from tests.test_order_sign_api import ISO_DATE, clinician_text

ORDER_SCENARIOS = load_order_scenarios()
SERVICE = "calcinosis-order-sign"


@pytest.fixture(scope="module")
def loaded(fhir_sandbox: str) -> str:
    load_sandbox(fhir_sandbox, None, None, shift=True)
    return fhir_sandbox.rstrip("/")


def order_sign_prefetch(service_url: str, base: str, patient_id: str) -> dict[str, Any]:
    services = httpx.get(f"{service_url}/cds-services", timeout=10).json()["services"]
    templates = next(s for s in services if s["id"] == SERVICE)["prefetch"]
    return {
        key: read_all(f"{base}/{template.replace('{{context.patientId}}', patient_id)}")
        for key, template in templates.items()
        if "{{context.encounterId}}" not in template  # no encounter in these calls: the EHR omits the key
    }


def cards(response: httpx.Response) -> list[tuple[str, str, str]]:
    """(indicator, topic, rule) of each card; and no card writes an ISO date where a clinician
    reads it (dates as on the patient-view cards, clinical-knowledge.md 11.4)."""
    assert response.status_code == 200, response.text[:500]
    for card in response.json()["cards"]:
        assert not ISO_DATE.search(clinician_text(card)), clinician_text(card)
    found = []
    for card in HookResponse.model_validate(response.json()).cards:
        rule = (card.extension or {})["org.calcinosis-cds.order-check"]["rule"]
        found.append((card.indicator, card.source.topic.code if card.source.topic else "", rule))
    return found


@pytest.mark.parametrize("scenario", ORDER_SCENARIOS, ids=[s.name for s in ORDER_SCENARIOS])
def test_order_sign_with_and_without_prefetch(service_url: str, loaded: str, scenario: OrderScenario) -> None:
    context = {"userId": "Practitioner/it-1", "patientId": scenario.patient_id, "draftOrders": scenario.draft_orders}
    fetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "fhirServer": loaded, "context": context},
        timeout=60,
    )
    prefetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid4()),
            "context": context,
            "prefetch": order_sign_prefetch(service_url, loaded, scenario.patient_id),
        },
        timeout=60,
    )
    assert cards(fetched) == list(scenario.expected_cards)
    assert cards(prefetched) == list(scenario.expected_cards)


def pending_pth_chart(patient_id: str, status: str, days_ago: float) -> FhirChart:
    """Calcinosis cutis on dialysis, no PTH result, and a PTH order placed `days_ago` (15.5)."""
    now = datetime.now(UTC)

    def ago(days: float) -> str:
        return (now - timedelta(days=days)).isoformat()

    chart = FhirChart(patient_id)
    chart.add_patient("female", "1958-03-02")
    chart.add_condition(
        f"{patient_id}-cc", codeable("Calcinosis cutis", coding(ICD10, "L94.2", "Calcinosis cutis")), onset=ago(60)
    )
    chart.add_condition(
        f"{patient_id}-hd",
        codeable("Dependence on renal dialysis", coding(ICD10, "Z99.2", "Dependence on renal dialysis")),
        onset=ago(400),
    )
    chart.add_procedure(f"{patient_id}-hd-1", codeable("Hemodialysis", coding(SNOMED, "302497006")), ago(2))
    chart.add_service_request(
        f"{patient_id}-pth",
        codeable("PTH intact", coding(LOINC, "2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma")),
        status=status,
        authored=ago(days_ago),
    )
    return chart


@pytest.mark.parametrize(
    ("status", "days_ago", "expected"),
    [
        ("active", 10, [("info", "repeat-lab", "repeat-pth-pending")]),
        ("completed", 10, []),
        ("active", 120, []),
    ],
)
def test_a_pending_test_order_on_the_server_is_on_file_both_ways(
    service_url: str, loaded: str, status: str, days_ago: float, expected: list[tuple[str, str, str]]
) -> None:
    """15.5 against the FHIR server: an active, not-yet-resulted PTH order inside the interval
    makes a PTH draft a repeat, whether the service fetches the active orders itself or the
    EHR prefetches them; a completed order, or one placed outside the interval, does not."""
    patient_id = f"it-pending-pth-{status}-{days_ago:.0f}"
    chart = pending_pth_chart(patient_id, status, days_ago)
    loaded_chart = httpx.post(loaded, json=chart.transaction(), timeout=60)
    assert loaded_chart.status_code == 200, loaded_chart.text[:300]
    drafts = FhirChart(patient_id)
    drafts.add_draft_test("draft-pth", "PTH", loinc="2731-8")
    context = {"userId": "Practitioner/it-1", "patientId": patient_id, "draftOrders": drafts.bundle()}
    fetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "fhirServer": loaded, "context": context},
        timeout=60,
    )
    prefetch = order_sign_prefetch(service_url, loaded, patient_id)
    assert ("-pth" in str(prefetch["serviceRequests"])) is (status == "active")
    prefetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch},
        timeout=60,
    )
    assert cards(fetched) == expected
    assert cards(prefetched) == expected


def test_check_command_with_draft_orders(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    warfarin = Path(draft_orders_dir()) / "warfarin-calciphylaxis-coded.json"
    assert (
        main(["check", "--fhir-server", loaded, "--patient", "cc-calciphylaxis-coded", "--draft-orders", str(warfarin)])
        == 0
    )
    assert "[warning] Calciphylaxis on file: warfarin sodium is a listed major risk factor" in capsys.readouterr().out
    ssc = Path(draft_orders_dir()) / "warfarin-ssc.json"
    assert main(["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", str(ssc)]) == 0
    assert "no cards (none of these draft orders needs one" in capsys.readouterr().out
    pth = Path(draft_orders_dir()) / "repeat-pth-ssc.json"
    assert main(["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", str(pth)]) == 0
    out = capsys.readouterr().out
    assert "[info] PTH result on file from" in out and "suggestion: Remove this draft order" in out
    assert (
        main(
            ["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", "/nonexistent.json"]
        )
        == 1
    )
