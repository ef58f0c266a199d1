"""The order-sign service through HTTP: the registry's routes, the hook's context, cards that meet
the spec and section 11.4, the early exit, shape mismatches and feedback."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.charts import AS_OF, ICD10, Chart
from tests.hookclient import cards_of, get, hook_request, make_app, post
from tests.test_api import no_empty_values
from tests.test_order_scenarios import (
    PTH_ORDER,
    WARFARIN,
    bundle,
    calciphylaxis_chart,
    dialysis_calcinosis_chart,
    dystrophic_chart,
    iatrogenic_chart,
    medication_order,
    metastatic_chart,
)

ORDER_SIGN = "/cds-services/calcinosis-order-sign"
INTERNAL = re.compile(
    r"\bGK\b|unconfirmed|design choice|\.json|MedicationRequest/|Observation/|Condition/|calciphylaxis-vitamin"
)
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CLINICIAN_DATE = re.compile(r"\b[1-9]\d? (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}\b")
"""'3 Oct 2026': how every card, patient-view or order-sign, writes a date (clinical-knowledge.md 11.4)."""


@pytest.fixture(scope="module")
def app() -> Any:
    return make_app()


def order_sign_request(chart: Chart | None, *orders: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = hook_request(chart, **extra)
    if chart is not None and "prefetch" not in extra:
        body["prefetch"] = chart.prefetch(order_sign=True)
    body["hook"] = "order-sign"
    body["context"]["draftOrders"] = bundle(*orders)
    return body


def clinician_text(card: dict[str, Any]) -> str:
    """What a clinician or the record sees: everything but the extension."""
    return " ".join(
        [card["summary"], card.get("detail", "")]
        + [s["label"] for s in card.get("suggestions", [])]
        + [a["description"] for s in card.get("suggestions", []) for a in s.get("actions", [])]
        + [r["display"] for r in card.get("overrideReasons", [])]
        + [link["label"] for link in card.get("links", [])]
    )


def test_warfarin_for_calciphylaxis_through_http(app: Any) -> None:
    response = post(app, ORDER_SIGN, order_sign_request(calciphylaxis_chart(), WARFARIN))
    (card,) = cards_of(response)
    no_empty_values(response.json())
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Calciphylaxis on file: warfarin sodium is a listed major risk factor")
    assert len(card["summary"]) < 140
    assert card["source"]["topic"]["code"] == "order-check"
    assert "suggestions" not in card  # no one-click change to an anticoagulant
    reasons = {r["display"] for r in card["overrideReasons"]}
    assert "Treats dystrophic calcinosis" in reasons and "Discussed with nephrology" in reasons
    assert "direct oral anticoagulant" in card["detail"]
    assert card["detail"].count("\n") <= 8
    assert not INTERNAL.search(clinician_text(card)), clinician_text(card)
    extension = card["extension"]["org.calcinosis-cds.order-check"]
    assert extension["draftOrder"] == "MedicationRequest/draft-1" and extension["section"] == "15.1"
    assert any("855332" in how for how in extension["resolvedBy"])
    assert card["uuid"].endswith("04")


def test_repeat_pth_offers_to_delete_the_draft(app: Any) -> None:
    chart = dialysis_calcinosis_chart(20)
    response = post(app, ORDER_SIGN, order_sign_request(chart, PTH_ORDER))
    (card,) = cards_of(response)
    assert card["indicator"] == "info"
    summary = re.fullmatch(r"PTH result on file from (.+): 420 pg/mL\. Is a repeat needed\?", card["summary"])
    assert summary is not None and CLINICIAN_DATE.fullmatch(summary.group(1)), card["summary"]
    (suggestion,) = card["suggestions"]
    assert card["selectionBehavior"] == "at-most-one"
    (action,) = suggestion["actions"]
    assert action == {
        "type": "delete",
        "description": "Remove this draft order: Parathyrin.intact [Mass/volume] in Serum or Plasma",
        "resourceId": "ServiceRequest/draft-lab",
    }
    assert {r["display"] for r in card["overrideReasons"]} >= {
        "Clinical change since the last result",
        "Treatment adjusted since the last result",
    }
    assert card["uuid"].endswith("05")
    assert not INTERNAL.search(clinician_text(card))


def test_one_card_per_order_strictest_first(app: Any) -> None:
    chart = calciphylaxis_chart()
    orders = (
        WARFARIN,
        medication_order("prednisone 20 MG Oral Tablet", route="oral", order_id="draft-2"),
        medication_order("Lactated Ringer's injection", route="intravenous", order_id="draft-3"),
        medication_order("amoxicillin 500 MG capsule", order_id="draft-4"),
    )
    cards = cards_of(post(app, ORDER_SIGN, order_sign_request(chart, *orders)))
    assert [c["indicator"] for c in cards] == ["warning", "info"]
    assert len({c["uuid"] for c in cards}) == 2


def test_ssc_patient_warfarin_is_silent(app: Any) -> None:
    assert cards_of(post(app, ORDER_SIGN, order_sign_request(dystrophic_chart(), WARFARIN))) == []


def test_irrelevant_orders_answer_at_once_without_fetching(app: Any) -> None:
    """The FHIR server named here does not exist: nothing is fetched for an order no table names."""
    body = order_sign_request(None, medication_order("amoxicillin 500 MG capsule"), with_server=True)
    body.pop("prefetch", None)
    assert cards_of(post(app, ORDER_SIGN, body)) == []


def test_missing_chart_without_server_is_412_when_an_order_needs_checking(app: Any) -> None:
    body = order_sign_request(None, WARFARIN)
    body.pop("prefetch", None)
    response = post(app, ORDER_SIGN, body)
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("path", "hook", "with_orders"),
    [
        ("/cds-services/calcinosis", "order-sign", True),
        (ORDER_SIGN, "patient-view", False),
        (ORDER_SIGN, "patient-view", True),
    ],
)
def test_shape_mismatch_is_400(app: Any, path: str, hook: str, with_orders: bool) -> None:
    body = order_sign_request(calciphylaxis_chart(), WARFARIN) if with_orders else hook_request(calciphylaxis_chart())
    body["hook"] = hook
    response = post(app, path, body)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "answers the" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("draft_orders", "field"),
    [
        (None, "draftOrders"),
        ("not a bundle", "draftOrders"),
        ({"resourceType": "Patient", "id": "x"}, "context.draftOrders"),
        ({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}, 3]}, "context.draftOrders.entry"),
    ],
)
def test_malformed_draft_orders_are_400_naming_the_field(app: Any, draft_orders: Any, field: str) -> None:
    body = order_sign_request(calciphylaxis_chart(), WARFARIN)
    body["context"]["draftOrders"] = draft_orders
    if draft_orders is None:
        del body["context"]["draftOrders"]
    response = post(app, ORDER_SIGN, body)
    assert response.status_code == 400
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert field in diagnostics and "not a bundle" not in diagnostics


def test_feedback_on_an_order_card(app: Any) -> None:
    (card,) = cards_of(post(app, ORDER_SIGN, order_sign_request(calciphylaxis_chart(), WARFARIN)))
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][1]},
                "outcomeTimestamp": "2026-11-01T12:00:00Z",
            }
        ]
    }
    response = post(app, f"{ORDER_SIGN}/feedback", feedback)
    assert response.status_code == 200
    assert post(app, "/cds-services/no-such-service/feedback", feedback).status_code == 404


def test_unknown_service_is_404(app: Any) -> None:
    response = post(app, "/cds-services/no-such-service", order_sign_request(calciphylaxis_chart(), WARFARIN))
    assert response.status_code == 404


def test_encounter_prefetch_sets_the_repeat_window(app: Any) -> None:
    """An emergency encounter: no repeat-lab card (15.5); the same call in clinic gets one."""
    chart = Chart("pat-1")
    chart.calcinosis()
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=400, sessions_every=200)
    days_before_now = (AS_OF - datetime.now(UTC)).total_seconds() / 86400 + 5  # the service assesses "now"
    chart.lab("2777-1", 4.1, "mg/dL", days_before_now, low=2.5, high=4.5)
    order = {**PTH_ORDER, "code": {"coding": [{"system": "http://loinc.org", "code": "2777-1"}], "text": "Phosphate"}}
    for encounter_class, expected in (("EMER", 0), ("AMB", 1)):
        body = order_sign_request(chart, order)
        body["context"]["encounterId"] = "enc-1"
        body["prefetch"]["encounter"] = {"resourceType": "Encounter", "id": "enc-1", "class": {"code": encounter_class}}
        assert len(cards_of(post(app, ORDER_SIGN, body))) == expected


def test_a_pending_test_order_in_the_prefetch_makes_the_draft_a_repeat(app: Any) -> None:
    """15.5 through HTTP: the `serviceRequests` prefetch holds the active orders; an active PTH
    order placed 10 days ago (no result yet) gets the repeat card, the same order completed or
    placed four months ago does not, and without the key (nothing to fetch it with) the check
    reads the results only."""
    days_before_now = (AS_OF - datetime.now(UTC)).total_seconds() / 86400  # the service assesses "now"
    expected = {("active", 10): 1, ("completed", 10): 0, ("revoked", 10): 0, ("active", 120): 0}
    for (status, days_ago), count in expected.items():
        chart = dialysis_calcinosis_chart(400)
        chart.lab_ordered("2731-8", "PTH intact", days_before_now + days_ago, status=status)
        body = order_sign_request(chart, PTH_ORDER)
        assert ("ServiceRequest" in str(body["prefetch"]["serviceRequests"])) is (status == "active")
        cards = cards_of(post(app, ORDER_SIGN, body))
        assert len(cards) == count, (status, days_ago, [c["summary"] for c in cards])
        if count:
            (card,) = cards
            assert card["summary"].startswith("PTH already ordered on ")
            assert card["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/draft-lab"
            assert "(no result yet)" in card["detail"]
            assert CLINICIAN_DATE.search(card["summary"]) and not ISO_DATE.search(clinician_text(card))
            assert not INTERNAL.search(clinician_text(card)), clinician_text(card)
    chart = dialysis_calcinosis_chart(400)
    chart.lab_ordered("2731-8", "PTH intact", days_before_now + 10)
    body = order_sign_request(chart, PTH_ORDER)
    del body["prefetch"]["serviceRequests"]
    assert cards_of(post(app, ORDER_SIGN, body)) == []


def test_no_order_sign_card_writes_an_iso_date(app: Any) -> None:
    """Order-sign cards write dates as the patient-view cards do ('3 Oct 2026', 11.4), in the
    summary (a repeat result, a pending order) and in the evidence lines of the detail; ISO dates
    stay in the extension. One call per kind of card that shows a date: 15.1 with the evidence of
    calciphylaxis, 15.2 with the abnormal values, 15.3, a repeat result and a pending order."""
    days_before_now = (AS_OF - datetime.now(UTC)).total_seconds() / 86400  # the service assesses "now"
    pending = dialysis_calcinosis_chart(400)
    pending.lab_ordered("2731-8", "PTH intact", days_before_now + 10)
    calls = [
        (calciphylaxis_chart(), (WARFARIN,)),
        (
            metastatic_chart(11.2, 7.9),
            (
                medication_order("calcitriol 0.25 MCG Oral Capsule", rxnorm="308867"),
                medication_order("potassium phosphate injection", route="intravenous", order_id="draft-2"),
            ),
        ),
        (iatrogenic_chart(), (medication_order("calcium gluconate 100 MG/ML injection", route="intravenous"),)),
        (dialysis_calcinosis_chart(20), (PTH_ORDER,)),
        (pending, (PTH_ORDER,)),
    ]
    dated: list[str] = []
    for chart, orders in calls:
        cards = cards_of(post(app, ORDER_SIGN, order_sign_request(chart, *orders)))
        assert len(cards) == len(orders), [c["summary"] for c in cards]
        for card in cards:
            text = clinician_text(card)
            assert not ISO_DATE.search(text), text
            if CLINICIAN_DATE.search(text):
                dated.append(card["extension"]["org.calcinosis-cds.order-check"]["rule"])
            evidence = card["extension"]["org.calcinosis-cds.order-check"].get("evidence", [])
            assert all(ISO_DATE.match(e["date"]) for e in evidence if e.get("date"))  # machine-readable
    assert set(dated) >= {
        "calciphylaxis-vitamin-k-antagonist",
        "metastatic-vitamin-d",
        "metastatic-phosphate",
        "repeat-pth",
        "repeat-pth-pending",
    }, dated


def test_discovery_lists_both_services(app: Any) -> None:
    services = get(app, "/cds-services").json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [
        ("calcinosis", "patient-view"),
        ("calcinosis-order-sign", "order-sign"),
    ]


def test_the_readme_example_request_is_a_valid_order_sign_call() -> None:
    """The README's example is what the service accepts: a valid request, a valid context, and
    both draft orders resolved (warfarin by its RxNorm code, PTH by its LOINC code)."""
    from pathlib import Path

    from fhir_mapping.orders import read_draft_orders
    from hooks.models import HookRequest, OrderSignContext

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("Example (`order-sign.json`):", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    request = HookRequest.model_validate_json(block)
    assert request.hook == "order-sign"
    context = OrderSignContext.model_validate(request.context)
    warfarin, pth = read_draft_orders(context.draft_orders)
    assert [c.value for c in warfarin.drug_classes] == [
        "warfarin"
    ] and warfarin.reference == "MedicationRequest/draft-1"
    assert [a.value for a in pth.analytes] == ["pth-intact"] and pth.reference == "ServiceRequest/draft-2"


def test_untrusted_fhir_server_is_never_called_and_the_call_is_412(app: Any) -> None:
    """The outbound policy applies to order-sign as to patient-view: with authentication off only
    loopback servers are called, so a chart that must be fetched from elsewhere is 412."""
    body = order_sign_request(None, WARFARIN, with_server=True)
    body.pop("prefetch", None)
    response = post(app, ORDER_SIGN, body)
    assert response.status_code == 412
    assert "not a FHIR server trusted for this client" in response.json()["issue"][0]["diagnostics"]
    assert "secret-token-value" not in response.text
