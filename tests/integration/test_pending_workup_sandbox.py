"""Section 15.5 on patient-view against the local FHIR sandbox: a PTH ordered and not yet resulted
(an active ServiceRequest on the server) keeps PTH out of the workup suggestions whether the
service fetches the chart itself (no prefetch) or the EHR prefetches the discovery templates; a
completed order, or one placed before PTH's look-back, does not. And the draft the workup would
create is never flagged as a repeat by the order-sign service on the same server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hooks.models import HookResponse
from tests.fhir_chart import ICD10, LOINC, SNOMED, FhirChart, codeable, coding
from tests.integration.test_scenarios_both_ways import ehr_prefetch

DIALYSIS_PTH_DAYS = 180  # pth-lookback-days-dialysis in the packaged knowledge base


def chart_with_pth_ordered(patient_id: str, status: str, days_ago: float) -> FhirChart:
    """Calcinosis cutis on hemodialysis, no PTH result, and a PTH order placed `days_ago`."""
    now = datetime.now(UTC)

    def ago(days: float) -> str:
        return (now - timedelta(days=days)).isoformat()

    chart = FhirChart(patient_id)
    chart.add_patient("male", "1955-07-19")
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


def workup(response: httpx.Response) -> tuple[set[str], str]:
    """The LOINC codes the workup card suggests, and its detail."""
    assert response.status_code == 200, response.text[:500]
    cards = HookResponse.model_validate(response.json()).cards
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "workup")
    codes = {
        coding["code"]
        for suggestion in card.suggestions or []
        for action in suggestion.actions or []
        for coding in (action.resource or {}).get("code", {}).get("coding", [])
    }
    return codes, card.detail or ""


def drafts_of(response: httpx.Response) -> list[dict[str, Any]]:
    cards = HookResponse.model_validate(response.json()).cards
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "workup")
    return [action.resource for s in card.suggestions or [] for action in s.actions or [] if action.resource]


@pytest.mark.parametrize(
    ("status", "days_ago", "pending"),
    [
        ("active", 10, True),
        ("active", DIALYSIS_PTH_DAYS - 2, True),
        ("completed", 10, False),
        ("entered-in-error", 10, False),
        ("active", DIALYSIS_PTH_DAYS + 2, False),
    ],
)
def test_a_pending_order_on_the_server_is_not_suggested_both_ways(
    service_url: str, fhir_sandbox: str, status: str, days_ago: float, pending: bool
) -> None:
    base = fhir_sandbox.rstrip("/")
    patient_id = f"it-pv-pending-{status}-{days_ago:.0f}"
    loaded = httpx.post(base, json=chart_with_pth_ordered(patient_id, status, days_ago).transaction(), timeout=60)
    assert loaded.status_code == 200, loaded.text[:300]
    context = {"userId": "Practitioner/it-1", "patientId": patient_id}
    fetched = httpx.post(
        f"{service_url}/cds-services/calcinosis",
        json={"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": base, "context": context},
        timeout=60,
    )
    ordered_on = (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%b %Y")

    def check(response: httpx.Response) -> None:
        codes, detail = workup(response)
        assert ("2731-8" in codes) is not pending, detail
        assert ("Intact PTH ordered " in detail and ordered_on in detail) is pending, detail
        assert "Incomplete record" not in response.text

    check(fetched)
    prefetch = ehr_prefetch(service_url, base, patient_id)
    assert ("-pth" in str(prefetch["serviceRequests"])) is (status == "active")
    prefetched = httpx.post(
        f"{service_url}/cds-services/calcinosis",
        json={"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch},
        timeout=60,
    )
    check(prefetched)
    # What patient-view suggests, order-sign on the same server does not flag as a repeat.
    drafts = [{"resource": resource} for resource in drafts_of(fetched)]
    draft_bundle = {"resourceType": "Bundle", "type": "collection", "entry": drafts}
    signed = httpx.post(
        f"{service_url}/cds-services/calcinosis-order-sign",
        json={
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": base,
            "context": {**context, "draftOrders": draft_bundle},
        },
        timeout=60,
    )
    assert signed.status_code == 200, signed.text[:500]
    rules = [c["extension"]["org.calcinosis-cds.order-check"]["rule"] for c in signed.json()["cards"]]
    assert not [rule for rule in rules if rule.startswith("repeat-")], rules
