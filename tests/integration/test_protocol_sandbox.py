"""Prefetch completeness over real HTTP against the local FHIR sandbox (issue 13, items 1-3): a
paged prefetch is completed from `fhirServer`, or refused with 412 when it cannot be; a requested
key holding something unreadable is fetched instead of being taken as silence; keys the service
did not request are ignored."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.charts import ICD10, Chart
from tests.hookclient import prefetch_of
from tests.integration.test_fhir_server import load


@pytest.fixture(scope="module")
def dystrophic(fhir_sandbox: str) -> Chart:
    chart = Chart(patient_id="it-proto-1")
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    load(fhir_sandbox, chart)
    return chart


def first_page(fhir_sandbox: str, chart: Chart) -> dict[str, Any]:
    """The EHR's prefetch as a real server pages it: two Observations and a next link."""
    response = httpx.get(
        f"{fhir_sandbox.rstrip('/')}/Observation", params={"patient": chart.patient_id, "_count": "2"}, timeout=30
    )
    bundle: dict[str, Any] = response.json()
    assert len(bundle["entry"]) == 2 and any(link["relation"] == "next" for link in bundle["link"])
    return bundle


def call(service_url: str, chart: Chart, prefetch: dict[str, Any], fhir_server: str | None) -> httpx.Response:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/it-1", "patientId": chart.patient_id},
        "prefetch": prefetch,
    }
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    return httpx.post(f"{service_url}/cds-services/calcinosis", json=body, timeout=60)


def dystrophic_likelihood(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    subtypes = response.json()["cards"][0]["extension"]["org.calcinosis-cds.assessment"]["subtypes"]
    return str(next(s["likelihood"] for s in subtypes if s["subtype"] == "dystrophic"))


def test_paged_prefetch_is_completed_from_the_sandbox(service_url: str, fhir_sandbox: str, dystrophic: Chart) -> None:
    prefetch = prefetch_of(dystrophic)
    prefetch["observations"] = first_page(fhir_sandbox, dystrophic)
    response = call(service_url, dystrophic, prefetch, fhir_sandbox.rstrip("/"))
    assert dystrophic_likelihood(response) == "likely"  # phosphate is not on the first page


def test_paged_prefetch_without_a_fhir_server_is_412(service_url: str, fhir_sandbox: str, dystrophic: Chart) -> None:
    prefetch = prefetch_of(dystrophic)
    prefetch["observations"] = first_page(fhir_sandbox, dystrophic)
    response = call(service_url, dystrophic, prefetch, None)
    assert response.status_code == 412 and "observations" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "value",
    [
        {"resourceType": "Patient", "id": "it-proto-1"},
        {"response": {"status": "200 OK"}, "resource": {"resourceType": "Bundle"}},
        "Condition?patient=it-proto-1",
    ],
)
def test_unreadable_key_is_fetched_from_the_sandbox(
    service_url: str, fhir_sandbox: str, dystrophic: Chart, value: Any
) -> None:
    prefetch = prefetch_of(dystrophic)
    prefetch["conditions"] = value
    prefetch["user"] = "123"  # a key the service did not request: ignored
    response = call(service_url, dystrophic, prefetch, fhir_sandbox.rstrip("/"))
    assert dystrophic_likelihood(response) == "likely"
