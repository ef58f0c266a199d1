"""Every scenario patient, loaded into a real FHIR server with `sandbox load`, assessed by the
running service twice: with no prefetch (the service fetches everything through `fhirServer`,
paging forced to 20 per page) and with the prefetch an EHR would send (the test plays the EHR,
resolving the discovery templates against the same server). Both answers must agree, and agree
with patients/expected.json."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from calcinosis_tools.cli import load_sandbox
from calcinosis_tools.scenarios import Scenario, load_scenarios
from hooks.cli import main
from hooks.models import HookResponse

SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def loaded(fhir_sandbox: str) -> str:
    lines = load_sandbox(fhir_sandbox, None, None, shift=True)
    assert len(lines) == len(SCENARIOS)
    return fhir_sandbox.rstrip("/")


def read_all(url: str) -> dict[str, Any]:
    """What an EHR's prefetch holds: the resource, or every page of a search in one Bundle."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text[:300]
    body: dict[str, Any] = response.json()
    if body.get("resourceType") != "Bundle":
        return body
    entries = list(body.get("entry", []))
    next_url = next((link["url"] for link in body.get("link", []) if link["relation"] == "next"), None)
    while next_url:
        page = httpx.get(next_url, timeout=30).json()
        entries += page.get("entry", [])
        next_url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def ehr_prefetch(service_url: str, base: str, patient_id: str) -> dict[str, Any]:
    templates = httpx.get(f"{service_url}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    return {
        key: read_all(f"{base}/{template.replace('{{context.patientId}}', patient_id)}")
        for key, template in templates.items()
    }


def outcome(response: httpx.Response) -> dict[str, Any] | None:
    assert response.status_code == 200, response.text[:500]
    cards = HookResponse.model_validate(response.json()).cards
    if not cards:
        return None
    by_topic = {card.source.topic.code: card for card in cards if card.source.topic}
    assessment = (by_topic["subtype"].extension or {})["org.calcinosis-cds.assessment"]
    differentials = (
        (by_topic["differentials"].extension or {})["org.calcinosis-cds.differentials"]
        if "differentials" in by_topic
        else []
    )
    workup = (by_topic["workup"].extension or {})["org.calcinosis-cds.workup"] if "workup" in by_topic else []
    return {
        "subtypes": {s["subtype"]: s["likelihood"] for s in assessment["subtypes"]},
        "raised": sorted(d["code"] for d in differentials if d["consideration"] == "raised"),
        "workup": sorted(item["item"] for item in workup),
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_same_assessment_with_and_without_prefetch(service_url: str, loaded: str, scenario: Scenario) -> None:
    context = {"userId": "Practitioner/it-1", "patientId": scenario.patient_id}
    fetched = httpx.post(
        f"{service_url}/cds-services/calcinosis",
        json={"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": loaded, "context": context},
        timeout=60,
    )
    prefetched = httpx.post(
        f"{service_url}/cds-services/calcinosis",
        json={
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": context,
            "prefetch": ehr_prefetch(service_url, loaded, scenario.patient_id),
        },
        timeout=60,
    )
    both = outcome(fetched)
    assert both == outcome(prefetched)
    if scenario.expected is None:
        assert both is None
    else:
        assert both is not None
        assert both["subtypes"] == scenario.expected.subtypes
        assert both["raised"] == sorted(scenario.expected.raised_differentials)


def test_check_command_against_the_sandbox(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    dystrophic = next(s for s in SCENARIOS if s.name == "dystrophic-ssc")
    assert main(["check", "--fhir-server", loaded, "--patient", dystrophic.patient_id]) == 0
    out = capsys.readouterr().out
    assert "[info] " in out and "pattern consistent with dystrophic calcinosis" in out.lower()
    sparse = next(s for s in SCENARIOS if s.name == "insufficient-data-synthea")
    assert main(["check", "--fhir-server", loaded, "--patient", sparse.patient_id]) == 0
    assert "suggestion: Order Serum phosphate" in capsys.readouterr().out
    silent = next(s for s in SCENARIOS if s.expected is None)
    assert main(["check", "--fhir-server", loaded, "--patient", silent.patient_id]) == 0
    assert "no cards" in capsys.readouterr().out
    assert main(["check", "--fhir-server", f"{loaded}/fault/500", "--patient", dystrophic.patient_id]) == 1
    assert "answered 500" in capsys.readouterr().err


def test_loading_twice_is_idempotent(loaded: str) -> None:
    again = load_sandbox(loaded, None, None, shift=True)
    assert len(again) == len(SCENARIOS)
    patients = httpx.get(f"{loaded}/Patient?_summary=count", timeout=10).json()
    assert patients["total"] >= len(SCENARIOS)
