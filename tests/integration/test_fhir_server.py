"""The service over real HTTP against a real FHIR server (the local sandbox): fetching through
`fhirServer` with paging forced small, and a FHIR server that answers 401, 500, slowly, or with
a malformed Bundle."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from hooks.models import HookResponse
from tests.charts import ICD10, Chart


def transaction(chart: Chart) -> dict[str, Any]:
    """The chart as a transaction of PUTs (stable ids, idempotent)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in chart.resources
        ],
    }


def load(base: str, chart: Chart) -> None:
    response = httpx.post(base, json=transaction(chart), headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert response.status_code == 200, response.text[:500]


def call(service_url: str, patient_id: str, fhir_server: str) -> httpx.Response:
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "context": {"userId": "Practitioner/it-1", "patientId": patient_id},
    }
    return httpx.post(f"{service_url}/cds-services/calcinosis", json=body, timeout=30)


@pytest.fixture(scope="module")
def ssc_chart(fhir_sandbox: str) -> Chart:
    chart = Chart(patient_id="it-ssc-1")
    chart.calcinosis(body_sites=["Right thumb"])
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    for days_ago in (5, 40, 200, 400):
        chart.mineral_panel(9.4, 4.1, 3.6, days_ago=days_ago)
    chart.medication("Omeprazole 20 MG Oral Capsule")
    load(fhir_sandbox, chart)
    return chart


def test_no_prefetch_fetches_everything_through_the_fhir_server(
    service_url: str, fhir_sandbox: str, ssc_chart: Chart
) -> None:
    response = call(service_url, ssc_chart.patient_id, fhir_sandbox.rstrip("/"))
    assert response.status_code == 200, response.text
    cards = HookResponse.model_validate(response.json()).cards
    assessment = (cards[0].extension or {})["org.calcinosis-cds.assessment"]
    likelihoods = {s["subtype"]: s["likelihood"] for s in assessment["subtypes"]}
    assert likelihoods["dystrophic"] == "likely"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("401", "refused access (401)"),
        ("500", "answered 500"),
        ("malformed", "did not answer with a Bundle"),
        ("slow:5000", "timed out"),
    ],
)
def test_misbehaving_fhir_server_is_412(
    service_url: str, fhir_sandbox: str, ssc_chart: Chart, fault: str, reason: str
) -> None:
    response = call(service_url, ssc_chart.patient_id, f"{fhir_sandbox.rstrip('/')}/fault/{fault}")
    assert response.status_code == 412
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and reason in body["issue"][0]["diagnostics"]


def test_unknown_patient_on_the_fhir_server_is_silent(service_url: str, fhir_sandbox: str) -> None:
    response = call(service_url, "no-such-patient", fhir_sandbox.rstrip("/"))
    assert response.status_code == 200 and response.json() == {"cards": []}
