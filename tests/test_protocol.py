"""CDS Hooks protocol details that real clients exercise (issue 13): paged and unreadable
prefetch, keys the service did not request, feedback per suggestion and on issued cards only,
discovery fields, trailing slashes, byte-order marks, context fields the service does not use, and
the body cap. Fetching paths are also run against the local FHIR sandbox in
tests/integration/test_protocol_sandbox.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from hooks.models import FEEDBACK_BATCH_MAX, FEEDBACK_COMMENT_MAX
from hooks.settings import MAX_BODY_BYTES_DEFAULT, Settings
from tests.charts import ICD10, Chart
from tests.hookclient import FHIR_BASE, cards_of, get, hook_request, make_app, post, searchset

REPO = Path(__file__).resolve().parents[1]
FEEDBACK = "/cds-services/calcinosis/feedback"
SERVICE = "/cds-services/calcinosis"


def dystrophic_chart() -> Chart:
    """Systemic sclerosis with normal calcium and phosphate: dystrophic is `likely` only when the
    phosphate is seen; without it the subtype cannot be classified."""
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.medication("Omeprazole 20 MG Oral Capsule")
    return chart


def likelihoods(cards: list[dict[str, Any]]) -> dict[str, str]:
    subtypes = cards[0]["extension"]["org.calcinosis-cds.assessment"]["subtypes"]
    return {s["subtype"]: s["likelihood"] for s in subtypes}


def observations_paged(chart: Chart, next_url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Page 1 holds calcium and albumin only; phosphate and eGFR are on page 2."""
    observations = [r for r in chart.resources if r["resourceType"] == "Observation"]
    return searchset(observations[:2], next_url=next_url), observations[2:]


# ----- 1. paged prefetch ---------------------------------------------------------------------------


def test_paged_required_prefetch_without_a_fhir_server_is_412_not_a_first_page_answer() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["observations"], _ = observations_paged(chart, f"{FHIR_BASE}/Observation?page=2")
    response = post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch))
    assert response.status_code == 412
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "observations" in diagnostics and "pages" in diagnostics


def test_paged_required_prefetch_with_an_untrusted_fhir_server_is_412() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["observations"], _ = observations_paged(chart, "https://elsewhere.example/Observation?page=2")
    body = hook_request(chart, prefetch=prefetch, with_server=True)
    body["fhirServer"] = "https://elsewhere.example"
    response = post(make_app(), SERVICE, body)
    assert response.status_code == 412 and "not a FHIR server trusted" in response.json()["issue"][0]["diagnostics"]


def test_paged_required_prefetch_is_completed_from_the_fhir_server() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    page2 = f"{FHIR_BASE}/Observation?patient=pat-1&page=2"
    prefetch["observations"], rest = observations_paged(chart, page2)
    with respx.mock(assert_all_called=True) as mock:
        mock.get(page2).mock(return_value=httpx.Response(200, json=searchset(rest)))
        response = post(
            make_app(local_fhir_servers=[FHIR_BASE]), SERVICE, hook_request(chart, prefetch=prefetch, with_server=True)
        )
    assert likelihoods(cards_of(response))["dystrophic"] == "likely"


def test_paged_optional_prefetch_is_used_and_the_card_says_it_was_incomplete() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    medications = prefetch["medicationRequests"]
    medications["link"] = [{"relation": "next", "url": f"{FHIR_BASE}/MedicationRequest?page=2"}]
    cards = cards_of(post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch)))
    assert likelihoods(cards)["dystrophic"] == "likely"
    assert (
        "**Incomplete record**" in cards[0]["detail"] and "medication orders: only part was sent" in cards[0]["detail"]
    )
    complete = cards_of(post(make_app(), SERVICE, hook_request(chart)))
    assert "Incomplete record" not in complete[0]["detail"]


# ----- 2. unreadable keys --------------------------------------------------------------------------

UNREADABLE = {
    "wrong type": {"resourceType": "Patient", "id": "pat-1"},
    "old wrapper": {"response": {"status": "200 OK"}, "resource": {"resourceType": "Bundle", "type": "searchset"}},
    "garbage": "Observation?patient=pat-1",
    "a number": 42,
    "entries not resources": {"resourceType": "Bundle", "type": "searchset", "entry": ["x"]},
}


@pytest.mark.parametrize("value", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_required_key_without_a_fhir_server_is_412_not_silence(value: Any) -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["conditions"] = value
    response = post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch))
    assert response.status_code == 412, response.text
    assert "conditions" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("value", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_key_is_fetched_when_the_fhir_server_is_usable(value: Any) -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["conditions"] = value
    conditions = [r for r in chart.resources if r["resourceType"] == "Condition"]
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(url__regex=rf"{re.escape(FHIR_BASE)}/Condition\?.*").mock(
            return_value=httpx.Response(200, json=searchset(conditions))
        )
        response = post(
            make_app(local_fhir_servers=[FHIR_BASE]), SERVICE, hook_request(chart, prefetch=prefetch, with_server=True)
        )
        assert route.called
    assert likelihoods(cards_of(response))["dystrophic"] == "likely"


def test_unreadable_patient_read_is_412_and_a_wrong_type_bundle_for_a_read_too() -> None:
    chart = dystrophic_chart()
    for value in ({"resourceType": "Bundle", "type": "searchset"}, {"resourceType": "Condition"}):
        prefetch = hook_request(chart)["prefetch"]
        prefetch["patient"] = value
        assert post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch)).status_code == 412


def test_unreadable_optional_key_is_named_in_the_card() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch["procedures"] = {"response": {"status": "200"}, "resource": {}}
    cards = cards_of(post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch)))
    assert "procedures: could not be read" in cards[0]["detail"]


# ----- 3. keys the service did not request ----------------------------------------------------------


def test_keys_not_requested_are_ignored_whatever_they_hold() -> None:
    chart = dystrophic_chart()
    prefetch = hook_request(chart)["prefetch"]
    prefetch.update({"user": "123", "other": [1, 2], "nothing": None, "deep": {"a": {"b": "c"}}})
    cards = cards_of(post(make_app(), SERVICE, hook_request(chart, prefetch=prefetch)))
    assert likelihoods(cards)["dystrophic"] == "likely"


def test_the_specifications_own_example_request_is_accepted() -> None:
    """The 2.0.1 specification's patient-view example sends a prefetch key `user` with "123"."""
    body = {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "http://hooks.smarthealthit.org:9080",
        "hook": "patient-view",
        "context": {"userId": "Practitioner/example", "patientId": "1288992"},
        "prefetch": {
            "patientToGreet": {"resourceType": "Patient", "gender": "male", "id": "1288992"},
            "user": "123",
        },
    }
    response = post(make_app(), SERVICE, body)
    # Conditions are not in the prefetch and that server is not trusted here: 412, never 400.
    assert response.status_code == 412


# ----- 4. feedback -----------------------------------------------------------------------------------


def issued_cards(app: Any) -> list[dict[str, Any]]:
    chart = Chart()
    chart.calcinosis(body_sites=["Left knee"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=900)
    chart.mineral_panel(10.2, 4.0, 7.7, egfr=7)
    return cards_of(post(app, SERVICE, hook_request(chart)))


def workup_of(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cards if c["source"]["topic"]["code"] == "workup")


def accepted(card: dict[str, Any], *suggestions: dict[str, Any], stamp: str = "2026-11-01T12:00:00Z") -> dict[str, Any]:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": s["uuid"]} for s in suggestions],
        "outcomeTimestamp": stamp,
    }


def test_each_accepted_suggestion_is_kept_as_the_sandbox_posts_them() -> None:
    app = make_app()
    workup = workup_of(issued_cards(app))
    suggestions = workup["suggestions"]
    assert len(suggestions) >= 3
    for suggestion in suggestions[:3]:  # the sandbox: one post per accepted suggestion
        assert post(app, FEEDBACK, {"feedback": [accepted(workup, suggestion)]}).json()["new"] == 1
    assert post(app, FEEDBACK, {"feedback": [accepted(workup, suggestions[0])]}).json()["new"] == 0
    report = __import__("hooks.stores", fromlist=["feedback_report"]).feedback_report(app.state.feedback.records())
    assert report["topics"]["workup"]["acceptedSuggestions"] == 3 and report["topics"]["workup"]["accepted"] == 1


def test_one_bad_entry_does_not_cost_the_others() -> None:
    app = make_app()
    cards = issued_cards(app)
    workup = workup_of(cards)
    good = accepted(workup, workup["suggestions"][0])
    bad = {"card": cards[0]["uuid"], "outcome": "ignored", "outcomeTimestamp": "2026-11-01T12:00:00Z"}
    response = post(app, FEEDBACK, {"feedback": [bad, good]})
    assert response.status_code == 200
    body = response.json()
    assert body["received"] == 2 and body["new"] == 1
    assert [r["index"] for r in body["rejected"]] == [0] and "outcome" in body["rejected"][0]["reason"]


def test_override_reason_without_system_and_lowercase_timestamps_are_accepted() -> None:
    app = make_app()
    cards = issued_cards(app)
    item = {
        "card": cards[0]["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": {"code": "not-relevant", "display": "Not relevant"}},
        "outcomeTimestamp": "2026-11-01t12:00:00.52z",
    }
    response = post(app, FEEDBACK, {"feedback": [item]})
    assert response.status_code == 200 and response.json() == {"received": 1, "new": 1}
    (record,) = app.state.feedback.records()
    assert record.override_system == "" and record.override_code == "not-relevant" and record.topic == "subtype"


@pytest.mark.parametrize(
    "card",
    ["Zebulon Canarysmith MRN 12345", "f4d1b2c0-0000-4000-8000-000000000001", "f4d1b2c0-0000-4000-8000-000000000002"],
)
def test_feedback_on_cards_this_service_did_not_issue_is_not_stored(card: str) -> None:
    app = make_app()
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-01T12:00:00Z"}
    response = post(app, FEEDBACK, {"feedback": [item]})
    assert response.status_code == 400
    assert "Zebulon" not in response.text and app.state.feedback.records() == []


def test_feedback_on_another_replicas_card_verifies_with_the_shared_key() -> None:
    key = "shared-card-id-key-0123456789abcdef"
    issuing, receiving, stranger = make_app(card_id_key=key), make_app(card_id_key=key), make_app()
    cards = issued_cards(issuing)
    item = {"card": cards[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-01T12:00:00Z"}
    assert post(receiving, FEEDBACK, {"feedback": [item]}).json()["new"] == 1
    assert post(stranger, FEEDBACK, {"feedback": [item]}).status_code == 400


def test_accepted_suggestion_must_belong_to_an_issued_card_of_its_topic() -> None:
    app = make_app()
    cards = issued_cards(app)
    subtype, workup = cards[0], workup_of(cards)
    mismatched = accepted(subtype, workup["suggestions"][0])
    invented = accepted(workup, {"uuid": "s-1"})
    body = post(app, FEEDBACK, {"feedback": [mismatched, invented, accepted(workup, workup["suggestions"][1])]}).json()
    assert [r["index"] for r in body["rejected"]] == [0, 1] and body["new"] == 1


def test_comment_length_and_batch_size_are_capped() -> None:
    app = make_app()
    cards = issued_cards(app)
    long_comment = {
        "card": cards[0]["uuid"],
        "outcome": "overridden",
        "overrideReason": {"userComment": "x" * (FEEDBACK_COMMENT_MAX + 1)},
        "outcomeTimestamp": "2026-11-01T12:00:00Z",
    }
    assert post(app, FEEDBACK, {"feedback": [long_comment]}).status_code == 400
    fits = dict(long_comment, overrideReason={"userComment": "x" * FEEDBACK_COMMENT_MAX})
    assert post(app, FEEDBACK, {"feedback": [fits]}).status_code == 200
    too_many = {"feedback": [fits] * (FEEDBACK_BATCH_MAX + 1)}
    response = post(app, FEEDBACK, too_many)
    assert response.status_code == 400 and "feedback" in response.json()["issue"][0]["diagnostics"]
    assert post(app, FEEDBACK, {"feedback": [fits] * FEEDBACK_BATCH_MAX}).json()["new"] == 0


# ----- 6. discovery and responses -------------------------------------------------------------------


def test_discovery_entry_carries_version_and_hook_version() -> None:
    services = get(make_app(), "/cds-services").json()["services"]
    assert len(services) == 2  # patient-view and order-sign
    for service in services:
        assert service["version"] == "2.0.1" and service["hookVersion"] == "1.0"


def test_every_suggested_service_request_has_an_id() -> None:
    workup = workup_of(issued_cards(make_app()))
    ids = [s["actions"][0]["resource"]["id"] for s in workup["suggestions"]]
    assert all(re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", i) for i in ids) and len(set(ids)) == len(ids)


def test_trailing_slash_is_never_redirected() -> None:
    app = make_app()
    chart = dystrophic_chart()
    for path in (SERVICE + "/", FEEDBACK + "/", "/cds-services/"):
        response = post(app, path, hook_request(chart), headers={"Host": "evil.example"})
        assert response.status_code in (404, 405) and "location" not in response.headers
        assert response.json()["resourceType"] == "OperationOutcome"


def test_body_with_a_utf8_byte_order_mark_is_read() -> None:
    import orjson

    chart = dystrophic_chart()
    body = b"\xef\xbb\xbf" + orjson.dumps(hook_request(chart))
    cards = cards_of(post(make_app(), SERVICE, body))
    assert likelihoods(cards)["dystrophic"] == "likely"


@pytest.mark.parametrize(
    "context",
    [
        {"userId": "Device/ehr-rules-engine", "patientId": "pat-1"},
        {"userId": "Practitioner/doc-1", "patientId": "pat-1", "encounterId": "ENC:2026/11/01#4"},
        {"userId": "PractitionerRole/abc+def=", "patientId": "pat-1", "encounterId": "Encounter/9"},
    ],
)
def test_unused_context_fields_of_any_shape_are_accepted(context: dict[str, Any]) -> None:
    chart = dystrophic_chart()
    cards = cards_of(post(make_app(), SERVICE, hook_request(chart, context=context)))
    assert likelihoods(cards)["dystrophic"] == "likely"


def test_patient_id_is_still_checked_because_it_is_used() -> None:
    chart = dystrophic_chart()
    body = hook_request(chart, context={"userId": "Practitioner/1", "patientId": "Patient/pat-1"})
    response = post(make_app(), SERVICE, body)
    assert response.status_code == 400 and "patientId" in response.json()["issue"][0]["diagnostics"]


# ----- 8. the body cap -------------------------------------------------------------------------------


def test_default_body_cap_admits_a_long_dialysis_history() -> None:
    """30,000 Observations (about 28 MB as EHR prefetch) fit under the default cap."""
    assert Settings(auth_disabled=True).max_body_bytes == MAX_BODY_BYTES_DEFAULT >= 30 * 1024 * 1024


def test_a_body_over_the_cap_is_413_and_the_cap_is_configurable() -> None:
    chart = dystrophic_chart()
    body = hook_request(chart)
    body["prefetch"]["padding"] = {"resourceType": "Basic", "text": "x" * 200_000}
    assert post(make_app(max_body_bytes=150_000), SERVICE, body).status_code == 413
    assert post(make_app(max_body_bytes=300_000), SERVICE, body).status_code == 200


def test_ingress_body_size_matches_the_service_cap() -> None:
    ingress = (REPO / "deploy/kubernetes/overlays/production/ingress.yaml").read_text()
    match = re.search(r'nginx\.ingress\.kubernetes\.io/proxy-body-size:\s*"(\d+)m"', ingress)
    assert match is not None, "the ingress must set ingress-nginx's body size (its default is 1 MB)"
    assert int(match.group(1)) * 1024 * 1024 == MAX_BODY_BYTES_DEFAULT
