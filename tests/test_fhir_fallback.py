"""The FHIR fallback's edge cases with respx: missing prefetch keys fetched concurrently with the
bearer token, paging, errors (401/404/500), timeouts, slow pages against the deadline,
OperationOutcome bodies, foreign next links, caps, and the early stop on charts without calcinosis.

(The same paths against a real FHIR server are in the integration tests.)"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import respx

from tests.charts import ICD10, Chart
from tests.fhir_chart import searchset
from tests.hookclient import FHIR_BASE, cards_of, hook_request, make_app, post

SEARCH = {
    "Condition": re.compile(rf"{re.escape(FHIR_BASE)}/Condition\?.*"),
    "Observation": re.compile(rf"{re.escape(FHIR_BASE)}/Observation\?.*"),
    "MedicationRequest": re.compile(rf"{re.escape(FHIR_BASE)}/MedicationRequest\?.*"),
    "MedicationStatement": re.compile(rf"{re.escape(FHIR_BASE)}/MedicationStatement\?.*"),
    "MedicationAdministration": re.compile(rf"{re.escape(FHIR_BASE)}/MedicationAdministration\?.*"),
    "Procedure": re.compile(rf"{re.escape(FHIR_BASE)}/Procedure\?.*"),
    "ServiceRequest": re.compile(rf"{re.escape(FHIR_BASE)}/ServiceRequest\?.*"),
}


def chart_with_calcinosis() -> Chart:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.medication("Omeprazole 20 MG Oral Capsule")
    return chart


def of_type(chart: Chart, resource_type: str) -> list[dict[str, Any]]:
    return [r for r in chart.resources if r["resourceType"] == resource_type]


def serve_chart(
    mock: respx.MockRouter, chart: Chart, overrides: dict[str, Any] | None = None
) -> dict[str, respx.Route]:
    """Routes answering every template query from the chart; `overrides` replace some."""
    overrides = overrides or {}
    routes: dict[str, respx.Route] = {}
    patient = of_type(chart, "Patient")[0]
    routes["Patient"] = mock.get(f"{FHIR_BASE}/Patient/{chart.patient_id}").mock(
        return_value=overrides.get("Patient", httpx.Response(200, json=patient))
    )
    for resource_type, pattern in SEARCH.items():
        response = overrides.get(resource_type, httpx.Response(200, json=searchset(of_type(chart, resource_type))))
        route = mock.get(url__regex=pattern.pattern)
        if callable(response) or isinstance(response, Exception):
            route.mock(side_effect=response)
        else:
            route.mock(return_value=response)
        routes[resource_type] = route
    return routes


def call(chart: Chart, prefetch: dict[str, Any] | None = None, **settings: Any) -> httpx.Response:
    settings.setdefault("local_fhir_servers", [FHIR_BASE])
    app = make_app(**settings)
    return post(app, "/cds-services/calcinosis", hook_request(chart, prefetch=prefetch or {}, with_server=True))


def likelihoods(response: httpx.Response) -> dict[str, str]:
    cards = cards_of(response)
    return {s["subtype"]: s["likelihood"] for s in cards[0]["extension"]["org.calcinosis-cds.assessment"]["subtypes"]}


def test_everything_fetched_with_the_bearer_token_and_paging_followed() -> None:
    chart = chart_with_calcinosis()
    observations = of_type(chart, "Observation")
    with respx.mock(assert_all_called=False) as mock:
        page2 = f"{FHIR_BASE}/Observation-page2?token=abc"
        mock.get(page2).mock(return_value=httpx.Response(200, json=searchset(observations[2:])))
        routes = serve_chart(
            mock, chart, {"Observation": httpx.Response(200, json=searchset(observations[:2], next_url=page2))}
        )
        response = call(chart)
        assert likelihoods(response)["dystrophic"] == "likely"  # needs the phosphate on page 2
        for route in routes.values():
            assert route.called
            assert route.calls.last.request.headers["Authorization"] == "Bearer secret-token-value"
        assert "_count=" in str(routes["Observation"].calls.last.request.url)


def test_prefetched_keys_are_not_fetched_again_and_null_means_no_data() -> None:
    chart = chart_with_calcinosis()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["medicationRequests"] = None
    del prefetch["procedures"]
    with respx.mock(assert_all_called=False) as mock:
        routes = serve_chart(mock, chart)
        cards_of(call(chart, prefetch))
        assert not routes["MedicationRequest"].called
        assert not routes["Observation"].called and not routes["Condition"].called
        assert routes["Procedure"].called


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(401, json={"resourceType": "OperationOutcome"}), "refused access (401)"),
        (httpx.Response(500, text="boom"), "answered 500"),
        (
            httpx.Response(
                200, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
            ),
            "OperationOutcome",
        ),
        (httpx.Response(200, text="<html>not json</html>"), "invalid JSON"),
        (
            httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": "oops"}),
            "did not answer with a Bundle",
        ),
        (httpx.Response(302, headers={"Location": "https://elsewhere.example/steal"}), "redirect"),
    ],
)
def test_required_fetch_failures_are_412_with_an_operation_outcome(response: httpx.Response, reason: str) -> None:
    chart = chart_with_calcinosis()
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": response})
        answer = call(chart)
    assert answer.status_code == 412
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome" and reason in body["issue"][0]["diagnostics"]
    assert "secret-token-value" not in answer.text


def test_missing_patient_is_not_fatal_but_missing_conditions_are() -> None:
    chart = chart_with_calcinosis()
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Patient": httpx.Response(404, json={"resourceType": "OperationOutcome"})})
        assert call(chart).status_code == 200
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Condition": httpx.Response(404, json={"resourceType": "OperationOutcome"})})
        answer = call(chart)  # a search answering 404 cannot mean "no conditions"
        assert answer.status_code == 412 and "404" in answer.json()["issue"][0]["diagnostics"]


def test_timeout_is_412() -> None:
    chart = chart_with_calcinosis()
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": httpx.ReadTimeout("slow")})
        answer = call(chart)
    assert answer.status_code == 412 and "timed out" in answer.json()["issue"][0]["diagnostics"]


def test_slow_pages_hit_the_overall_deadline() -> None:
    chart = chart_with_calcinosis()

    async def slow_page(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200, json=searchset([], next_url=f"{FHIR_BASE}/Observation?page=next"))

    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": slow_page})
        answer = call(chart, fetch_deadline_seconds=0.5, fhir_page_cap=100)
    assert answer.status_code == 412
    assert "deadline" in answer.json()["issue"][0]["diagnostics"]


def test_optional_fetch_failure_degrades_instead_of_failing() -> None:
    chart = chart_with_calcinosis()
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Procedure": httpx.Response(500), "MedicationAdministration": httpx.Response(403)})
        assert likelihoods(call(chart))["dystrophic"] == "likely"


def test_operation_outcome_in_prefetch_is_fetched_from_the_server() -> None:
    chart = chart_with_calcinosis()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["observations"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    with respx.mock(assert_all_called=False) as mock:
        routes = serve_chart(mock, chart)
        assert likelihoods(call(chart, prefetch))["dystrophic"] == "likely"
        assert routes["Observation"].called


def test_paged_prefetch_is_completed_from_the_server() -> None:
    chart = chart_with_calcinosis()
    observations = of_type(chart, "Observation")
    prefetch = hook_request(chart)["prefetch"]
    page2 = f"{FHIR_BASE}/Observation?_page=2"
    prefetch["observations"] = searchset(observations[:1], next_url=page2)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(page2).mock(return_value=httpx.Response(200, json=searchset(observations[1:])))
        assert likelihoods(call(chart, prefetch))["dystrophic"] == "likely"
        assert route.called


def test_next_link_to_another_server_is_not_followed() -> None:
    chart = chart_with_calcinosis()
    observations = of_type(chart, "Observation")
    with respx.mock(assert_all_called=False) as mock:
        evil = mock.get(url__startswith="https://evil.example").mock(
            return_value=httpx.Response(200, json=searchset([]))
        )
        serve_chart(
            mock,
            chart,
            {"Observation": httpx.Response(200, json=searchset(observations, next_url="https://evil.example/steal"))},
        )
        answer = call(chart)
        assert answer.status_code == 412 and not evil.called


def test_page_and_size_caps() -> None:
    chart = chart_with_calcinosis()
    endless = httpx.Response(200, json=searchset([], next_url=f"{FHIR_BASE}/Observation?page=again"))
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": endless})
        answer = call(chart, fhir_page_cap=3)
    assert answer.status_code == 412 and "more than 3 pages" in answer.json()["issue"][0]["diagnostics"]
    big = httpx.Response(
        200,
        content=b'{"resourceType":"Bundle","type":"searchset","entry":['
        + b'{"resource":{"resourceType":"Observation"}},' * 2000
        + b"{}]}",
    )
    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": big})
        answer = call(chart, fhir_max_response_bytes=10_000)
    assert answer.status_code == 412 and "size cap" in answer.json()["issue"][0]["diagnostics"]


def test_no_calcinosis_stops_the_other_fetches() -> None:
    chart = Chart()
    chart.condition("N18.4", ICD10, "Chronic kidney disease, stage 4 (severe)")
    finished: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2)
        finished.append(str(request.url))
        return httpx.Response(200, json=searchset([]))

    with respx.mock(assert_all_called=False) as mock:
        serve_chart(mock, chart, {"Observation": slow, "Procedure": slow})
        assert cards_of(call(chart)) == []
    assert finished == []
