"""The CDS Hooks API through HTTP: discovery, the service call with prefetch, cards, errors,
feedback and CORS. Every response body is validated against the spec models."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from prometheus_client import generate_latest

from hooks.metrics import REGISTRY
from hooks.models import Discovery
from tests.charts import ICD10, Chart
from tests.hookclient import cards_of, get, hook_request, make_app, post

ALLOWED_TOKEN = re.compile(
    r"\{\{(context\.(patientId|userId|encounterId)|userPractitionerId|userPractitionerRoleId|userPatientId|userRelatedPersonId)\}\}"
)


def no_empty_values(value: Any, path: str = "") -> None:
    """The spec forbids null and empty values in responses (cards: [] excepted)."""
    if isinstance(value, dict):
        assert value, f"empty object at {path}"
        for key, item in value.items():
            assert item is not None, f"null at {path}.{key}"
            no_empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        assert value or path == ".cards", f"empty list at {path}"
        for index, item in enumerate(value):
            no_empty_values(item, f"{path}[{index}]")
    elif isinstance(value, str):
        assert value != "", f"empty string at {path}"


@pytest.fixture(scope="module")
def app() -> Any:
    return make_app()


def metastatic_chart() -> Chart:
    chart = Chart()
    chart.calcinosis(body_sites=["Left knee"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=900)
    chart.mineral_panel(10.2, 4.0, 7.7, egfr=7)
    chart.medication("Sevelamer carbonate 800 MG Oral Tablet")
    return chart


# ----- discovery ---------------------------------------------------------------------------------


def test_discovery_lists_the_service_with_prefetch_inside_the_spec_subset(app: Any) -> None:
    response = get(app, "/cds-services")
    assert response.status_code == 200
    body = response.json()
    Discovery.model_validate(body)
    no_empty_values(body)
    service, order_sign = body["services"]
    assert service["id"] == "calcinosis" and service["hook"] == "patient-view"
    assert service["version"] == "2.0.1" and service["hookVersion"] == "1.0"
    assert order_sign["id"] == "calcinosis-order-sign" and order_sign["hook"] == "order-sign"
    assert order_sign["version"] == "2.0.1" and order_sign["hookVersion"] == "1.0"
    assert set(service["prefetch"]) >= {"patient", "conditions", "observations", "medicationRequests"}
    # both read the test orders not yet resulted (15.5: on file for the workup and for a repeat);
    # order-sign reads the same chart, plus the encounter its context may name
    assert service["prefetch"]["serviceRequests"] == "ServiceRequest?patient={{context.patientId}}&status=active"
    assert order_sign["prefetch"] == {**service["prefetch"], "encounter": "Encounter/{{context.encounterId}}"}
    for template in [*service["prefetch"].values(), *order_sign["prefetch"].values()]:
        tokens = re.findall(r"\{\{[^}]*\}\}", template)
        assert tokens and all(ALLOWED_TOKEN.fullmatch(t) for t in tokens)
        assert ":" not in template.split("?")[-1].split("=")[0]  # no search modifiers
    observations = service["prefetch"]["observations"]
    assert "http://loinc.org|17861-6" in observations and "http://loinc.org|2777-1" in observations


# ----- the service call ---------------------------------------------------------------------------


def test_cards_for_documented_calcinosis(app: Any) -> None:
    """Subtype and workup; no differentials card when this record raises none (11.4)."""
    chart = metastatic_chart()
    response = post(app, "/cds-services/calcinosis", hook_request(chart))
    cards = cards_of(response)
    no_empty_values(response.json())
    assert [c["source"]["topic"]["code"] for c in cards] == ["subtype", "workup"]
    subtype, workup = cards
    assert all(len(c["summary"]) < 140 and c["uuid"] and c["overrideReasons"] for c in cards)
    assert subtype["summary"].startswith(
        ("Pattern consistent with metastatic calcification on dialysis: Ca x P", "Consider metastatic calcification")
    )
    assert subtype["indicator"] == "info"
    assessment = subtype["extension"]["org.calcinosis-cds.assessment"]
    likelihoods = {s["subtype"]: s["likelihood"] for s in assessment["subtypes"]}
    assert likelihoods["metastatic"] == "likely"
    assert {d["name"] for d in assessment["derived"]} >= {"corrected-calcium", "calcium-phosphate-product", "ckd-stage"}
    assert "7.7 mg/dL" in subtype["detail"] and "range" not in subtype["summary"]
    assert workup["selectionBehavior"] == "any"
    for suggestion in workup["suggestions"]:
        assert suggestion["uuid"]
        (action,) = suggestion["actions"]
        assert action["type"] == "create"
        resource = action["resource"]
        ServiceRequest.model_validate(resource)
        assert resource["status"] == "draft" and resource["intent"] == "proposal"
        assert resource["subject"] == {"reference": f"Patient/{chart.patient_id}"}
    codes = {s["actions"][0]["resource"]["code"].get("coding", [{}])[0].get("code") for s in workup["suggestions"]}
    assert "2731-8" in codes  # PTH not on file
    assert all(link["type"] == "absolute" for c in cards for link in c.get("links", []))


def test_no_cards_without_calcinosis(app: Any) -> None:
    chart = Chart()
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.mineral_panel(10.9, 3.2, 8.1, egfr=8)
    assert cards_of(post(app, "/cds-services/calcinosis", hook_request(chart))) == []


def test_suspected_calciphylaxis_is_a_warning_and_never_critical(app: Any) -> None:
    chart = Chart()
    chart.condition("237900002", "http://snomed.info/sct", "Calciphylaxis")
    chart.dialysis(since_days=2500)
    cards = cards_of(post(app, "/cds-services/calcinosis", hook_request(chart)))
    assert cards[0]["indicator"] == "warning"
    assert all(c["indicator"] != "critical" for c in cards)
    assert "biopsy" not in json.dumps([s["label"] for c in cards for s in c.get("suggestions", [])]).lower()


def test_card_uuids_are_stable_per_hook_instance_and_unique_across_calls(app: Any) -> None:
    chart = metastatic_chart()
    request = hook_request(chart)
    first = cards_of(post(app, "/cds-services/calcinosis", request))
    again = cards_of(post(app, "/cds-services/calcinosis", request))
    other = cards_of(post(app, "/cds-services/calcinosis", hook_request(chart)))
    assert [c["uuid"] for c in first] == [c["uuid"] for c in again]
    assert not {c["uuid"] for c in first} & {c["uuid"] for c in other}


def test_record_text_cannot_inject_html_into_the_detail(app: Any) -> None:
    chart = Chart()
    chart.condition("L94.2", ICD10, "Calcinosis cutis <img src=x onerror=alert(1)> | broken table")
    cards = cards_of(post(app, "/cds-services/calcinosis", hook_request(chart)))
    assert "<img" not in cards[0]["detail"]


# ----- prefetch semantics without a FHIR server ---------------------------------------------------


def test_null_prefetch_means_no_data(app: Any) -> None:
    chart = Chart()
    chart.calcinosis()
    prefetch = {
        key: None for key in ("medicationRequests", "medicationStatements", "medicationAdministrations", "procedures")
    }
    prefetch.update(
        {k: v for k, v in hook_request(chart)["prefetch"].items() if k in ("patient", "conditions", "observations")}
    )
    cards = cards_of(post(app, "/cds-services/calcinosis", hook_request(chart, prefetch=prefetch)))
    assert cards


def test_missing_required_prefetch_without_fhir_server_is_412(app: Any) -> None:
    chart = Chart()
    chart.calcinosis()
    prefetch = hook_request(chart)["prefetch"]
    del prefetch["observations"]
    response = post(app, "/cds-services/calcinosis", hook_request(chart, prefetch=prefetch))
    assert response.status_code == 412
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and "observations" in body["issue"][0]["diagnostics"]


def test_over_broad_prefetch_is_filtered(app: Any) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    prefetch = hook_request(chart)["prefetch"]
    # Another patient's hypercalcemia, and a Condition smuggled into the observations key.
    other = {
        "resourceType": "Observation",
        "id": "other-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6"}]},
        "subject": {"reference": "Patient/someone-else"},
        "effectiveDateTime": "2026-10-30",
        "valueQuantity": {"value": 13.9, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }
    smuggled = {
        "resourceType": "Condition",
        "id": "c-x",
        "subject": {"reference": f"Patient/{chart.patient_id}"},
        "code": {"coding": [{"system": ICD10, "code": "E21.0"}]},
    }
    # And entries whose resourceType is not even a string (filtered by comparison, never hashed).
    odd = [{"resource": {"resourceType": ["Observation"], "id": "odd-1"}}, {"resource": {"resourceType": {}}}]
    prefetch["observations"]["entry"] += [{"resource": other}, {"resource": smuggled}, *odd]
    cards = cards_of(post(app, "/cds-services/calcinosis", hook_request(chart, prefetch=prefetch)))
    likelihoods = {
        s["subtype"]: s["likelihood"] for s in cards[0]["extension"]["org.calcinosis-cds.assessment"]["subtypes"]
    }
    assert likelihoods["dystrophic"] == "likely" and likelihoods["metastatic"] == "unlikely"


# ----- malformed requests: 400/404/415 with an OperationOutcome, no echo --------------------------


def _bad(
    app: Any, body: Any, headers: dict[str, str] | None = None, path: str = "/cds-services/calcinosis"
) -> tuple[int, dict[str, Any]]:
    response = post(app, path, body, headers)
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["resourceType"] == "OperationOutcome"
    return response.status_code, payload


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r.pop("hookInstance"), "hookInstance"),
        (lambda r: r.update(hookInstance="not-a-uuid"), "hookInstance"),
        (lambda r: r["context"].update(patientId="Patient/pat-1"), "patientId"),
        (lambda r: r["context"].pop("userId"), "userId"),
        (lambda r: r.update(hook="order-sign"), "patient-view"),
        (
            lambda r: r.update(
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 1,
                    "scope": "s",
                    "subject": "c",
                }
            ),
            "fhirServer",
        ),
        (lambda r: r.update(fhirServer="not a url"), "fhirServer"),
        (lambda r: r.pop("context"), "context"),
    ],
)
def test_malformed_requests_are_400(app: Any, mutate: Any, needle: str) -> None:
    chart = Chart()
    chart.condition("L94.2", ICD10, "Calcinosis cutis", text="Jane Doe-Secretname calcinosis")
    request = hook_request(chart)
    mutate(request)
    status, body = _bad(app, request)
    assert status == 400 and needle in body["issue"][0]["diagnostics"]
    assert "Secretname" not in json.dumps(body)


def test_invalid_json_wrong_type_and_unknown_service(app: Any) -> None:
    assert _bad(app, b"{not json")[0] == 400
    assert _bad(app, b"[]")[0] == 400
    assert _bad(app, b"{}", headers={"Content-Type": "text/plain"})[0] == 415
    assert _bad(app, hook_request(Chart()), path="/cds-services/nope")[0] == 404


# ----- feedback ------------------------------------------------------------------------------------


def test_feedback_is_validated_and_idempotent() -> None:
    app = make_app()
    cards = cards_of(post(app, "/cds-services/calcinosis", hook_request(metastatic_chart())))
    workup = next(c for c in cards if c["source"]["topic"]["code"] == "workup")
    item = {
        "card": workup["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": workup["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": "2026-11-01T12:00:00Z",
    }
    first = post(app, "/cds-services/calcinosis/feedback", {"feedback": [item]})
    assert first.status_code == 200 and first.json() == {"received": 1, "new": 1}
    again = post(app, "/cds-services/calcinosis/feedback", {"feedback": [item]})
    assert again.json() == {"received": 1, "new": 0}
    overridden = dict(
        item,
        outcome="overridden",
        overrideReason={
            "reason": {
                "system": "urn:calcinosis-cds:override-reason",
                "code": "not-relevant",
                "display": "Not relevant",
            }
        },
    )
    overridden.pop("acceptedSuggestions")
    assert post(app, "/cds-services/calcinosis/feedback", {"feedback": [overridden]}).json()["new"] == 1
    assert len(app.state.feedback.records()) == 2


@pytest.mark.parametrize(
    "item",
    [
        {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-01T12:00:00Z"},
        {"card": "c", "outcome": "overridden", "overrideReason": {}, "outcomeTimestamp": "2026-11-01T12:00:00Z"},
        {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-01T12:00:00Z"},
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
    ],
)
def test_invalid_feedback_is_400(app: Any, item: dict[str, Any]) -> None:
    assert _bad(app, {"feedback": [item]}, path="/cds-services/calcinosis/feedback")[0] == 400


# ----- CORS ------------------------------------------------------------------------------------------


def test_cors_allows_the_sandbox_on_get_and_post(app: Any) -> None:
    import asyncio

    import httpx

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            preflight = await client.options(
                "/cds-services/calcinosis",
                headers={
                    "Origin": "https://sandbox.cds-hooks.org",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            chart = Chart()
            posted = await client.post(
                "/cds-services/calcinosis",
                json=hook_request(chart),
                headers={"Origin": "https://sandbox.cds-hooks.org"},
            )
            return preflight, posted

    preflight, posted = asyncio.run(scenario())
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] in (
        "*",
        "https://sandbox.cds-hooks.org",
    )
    assert posted.headers["access-control-allow-origin"] in ("*", "https://sandbox.cds-hooks.org")


def test_health_readiness_and_metrics_without_patient_data() -> None:
    app = make_app()
    assert get(app, "/healthz").json() == {"status": "ok"}
    ready = get(app, "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "knowledgeBase": ready.json()["checks"]["knowledgeBase"]
    }
    assert ready.json()["feedbackStore"] in ("unknown", "ok")  # reported, not required (test_resilience.py)
    chart = metastatic_chart()
    post(app, "/cds-services/calcinosis", hook_request(chart))
    assert get(app, "/metrics").status_code == 404  # the metrics have a port of their own
    text = generate_latest(REGISTRY).decode()
    assert 'calcinosis_requests_total{endpoint="/cds-services/{service_id}",status="200"}' in text
    assert 'calcinosis_cards_total{indicator="info",topic="workup"}' in text
    assert chart.patient_id not in text and "Practitioner" not in text
