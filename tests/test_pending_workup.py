"""Section 15.5 on patient-view: a test ordered and not yet resulted is "on file", with the same
windows, so the workup card never suggests it (and order-sign never flags what patient-view just
suggested). Scenarios: a FHIR Bundle in, the workup out; then through HTTP with and without the
`serviceRequests` prefetch, and with the fallback fetch failing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from calcinosis.assessment import Assessment
from calcinosis.knowledge_base import default_knowledge
from calcinosis.orders import EncounterSetting
from calcinosis.statements import card_statements
from fhir_mapping import assess_resources, bundle_resources
from fhir_mapping.orders import check_draft_orders, read_draft_orders
from hooks.cards import render_cards
from hooks.preview import split_detail
from tests.charts import AS_OF, ICD10, Chart, when
from tests.hookclient import FHIR_BASE, cards_of, hook_request, make_app, post
from tests.test_fhir_fallback import serve_chart

KB = default_knowledge()
PTH = ("2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma")
VITAMIN_D = ("62292-8", "25-hydroxyvitamin D2+D3 [Mass/volume] in Serum or Plasma")
IONIZED = ("1994-3", "Calcium.ionized [Moles/volume] in Blood")
DIALYSIS_PTH_DAYS = KB.days("pth-lookback-days-dialysis")
ANNUAL_DAYS = KB.days("annual-lookback-days")
INTERNAL = re.compile(r"ServiceRequest/|\bsr-\d|pth-intact|GK\b|unconfirmed|\.json")


def dialysis_chart() -> Chart:
    """Calcinosis cutis on hemodialysis, a current mineral panel, and a PTH far outside every
    window (so PTH is a workup gap unless it is already ordered)."""
    chart = Chart("pend-1")
    chart.calcinosis()
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=400, sessions_every=200)
    chart.mineral_panel(9.2, 4.0, 4.2, days_ago=3, egfr=None)
    chart.lab("2731-8", 420, "pg/mL", 400, low=150, high=600)
    return chart


def ssc_chart() -> Chart:
    """Calcinosis cutis with systemic sclerosis, no kidney disease, no PTH ever: PTH's window is a year."""
    chart = Chart("pend-2")
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6, days_ago=5)
    return chart


def assessed(chart: Chart) -> Assessment:
    """The assessment of the chart sent as a Bundle (as the `evaluate` command and the service read it)."""
    result = assess_resources(bundle_resources(chart.bundle()), AS_OF, chart.patient_id)
    assert result.assessment is not None
    return result.assessment


def workup_card(chart: Chart) -> dict[str, Any] | None:
    cards = render_cards(assessed(chart), KB, uuid.uuid4(), chart.patient_id)
    card = next((c for c in cards if c.source.topic is not None and c.source.topic.code == "workup"), None)
    return None if card is None else card.model_dump(mode="json", by_alias=True, exclude_none=True)


def suggested_codes(card: dict[str, Any] | None) -> set[str]:
    if card is None:
        return set()
    return {
        coding["code"]
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        for coding in action["resource"]["code"].get("coding", [])
    }


def day(days_ago: float) -> str:
    moment = datetime.fromisoformat(when(days_ago))
    return f"{moment.day} {moment:%b %Y}"


# ----- scenarios: a Bundle in, the workup out ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "pending"),
    [
        ("active", True),
        ("completed", False),
        ("revoked", False),
        ("entered-in-error", False),
        ("on-hold", False),
        ("draft", False),
    ],
)
def test_only_an_active_order_keeps_a_test_out_of_the_suggestions(status: str, pending: bool) -> None:
    """An active PTH order from 10 days ago, not yet resulted: not suggested, and the card says it
    is ordered and pending. Completed, revoked, entered-in-error, on hold or draft: suggested."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, 10, status=status)
    card = workup_card(chart)
    assert card is not None
    assert ("2731-8" in suggested_codes(card)) is not pending
    line = f"Intact PTH ordered {day(10)}, result pending."
    assert (line in card["detail"].split("\n\n")[0]) is pending  # on the first screen
    if pending:
        assert "Intact PTH" not in card["summary"]
        assert not INTERNAL.search(card["detail"]), card["detail"]
        entry = next(e for e in card["extension"]["org.calcinosis-cds.workup"] if e["item"] == "pth-intact")
        assert entry == {
            "item": "pth-intact",
            "label": "Intact PTH",
            "suggested": False,
            "orderedOn": when(10)[:10],
            "resultPending": True,
        }


@pytest.mark.parametrize(
    ("days_ago", "pending"),
    [(10, True), (DIALYSIS_PTH_DAYS - 1, True), (DIALYSIS_PTH_DAYS + 1, False)],
)
def test_a_pending_order_counts_within_the_dialysis_look_back_only(days_ago: float, pending: bool) -> None:
    """On dialysis PTH's look-back is the dialysis one (180 days): an order placed inside it is on
    file; one placed before it is stale, and PTH is suggested again."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, days_ago)
    assessment = assessed(chart)
    assert ("pth-intact" in {g.item_id for g in assessment.workup}) is not pending
    assert ("pth-intact" in {p.item_id for p in assessment.pending_workup}) is pending


@pytest.mark.parametrize(("days_ago", "pending"), [(ANNUAL_DAYS - 1, True), (ANNUAL_DAYS + 1, False)])
def test_a_pending_order_counts_within_the_yearly_look_back_outside_dialysis(days_ago: float, pending: bool) -> None:
    chart = ssc_chart()
    chart.lab_ordered(*PTH, days_ago)
    assessment = assessed(chart)
    assert ("pth-intact" in {g.item_id for g in assessment.workup}) is not pending
    assert ("pth-intact" in {p.item_id for p in assessment.pending_workup}) is pending


def test_an_order_for_another_test_leaves_the_suggestion() -> None:
    """A 25-OH vitamin D order pending takes vitamin D out of the suggestions, not PTH."""
    chart = dialysis_chart()
    chart.lab_ordered(*VITAMIN_D, 5)
    card = workup_card(chart)
    codes = suggested_codes(card)
    assert "2731-8" in codes and "62292-8" not in codes
    assert card is not None and f"25-hydroxyvitamin D ordered {day(5)}, result pending." in card["detail"]


def test_a_proposal_or_plan_is_not_an_order() -> None:
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, 10, intent="proposal")
    chart.lab_ordered(*PTH, 10, intent="plan")
    assert "2731-8" in suggested_codes(workup_card(chart))


def test_an_order_whose_result_arrived_is_not_pending() -> None:
    """The result (an Observation naming the order in basedOn) decides: here it is old, so PTH is
    suggested as out of date, not reported as pending."""
    chart = dialysis_chart()
    placed = chart.lab_ordered(*PTH, 10)
    result = chart.lab("2731-8", 380, "pg/mL", 300, low=150, high=600)
    result["basedOn"] = [{"reference": f"ServiceRequest/{placed['id']}"}]
    assessment = assessed(chart)
    assert "pth-intact" in {g.item_id for g in assessment.workup}
    assert assessment.pending_workup == ()


def test_another_patients_order_is_not_this_patients() -> None:
    chart = dialysis_chart()
    placed = chart.lab_ordered(*PTH, 10)
    placed["subject"] = {"reference": "Patient/someone-else"}
    assert "pth-intact" in {g.item_id for g in assessed(chart).workup}


def test_an_ionized_calcium_ordered_is_named_once_for_calcium_and_albumin() -> None:
    """An ionized calcium satisfies both the calcium and the albumin item: neither is suggested,
    and the card names what was ordered, once."""
    chart = ssc_chart()
    chart.resources = [r for r in chart.resources if r["resourceType"] != "Observation"]
    chart.lab("2777-1", 3.6, "mg/dL", 5)
    chart.lab("98979-8", 85, "mL/min/{1.73_m2}", 5)
    chart.lab_ordered(*IONIZED, 2)
    assessment = assessed(chart)
    gaps = {g.item_id for g in assessment.workup}
    assert not gaps & {"serum-calcium", "serum-albumin"}
    assert {p.item_id for p in assessment.pending_workup} >= {"serum-calcium", "serum-albumin"}
    statements = card_statements(assessment, KB)
    assert statements.workup is not None
    assert statements.workup.statement.evidence == (f"Ionized calcium ordered {day(2)}, result pending.",)


def test_with_every_test_ordered_there_is_no_workup_card_and_the_subtype_card_says_so() -> None:
    """Nothing left to suggest: no workup card (a card without an action is noise, 11.4); the
    subtype card says, on its first screen, that the test is ordered and pending."""
    chart = ssc_chart()
    chart.procedure("Radiograph of hand", 20, code="363680008")
    chart.lab_ordered(*PTH, 3)
    assessment = assessed(chart)
    assert assessment.workup == ()
    cards = render_cards(assessment, KB, uuid.uuid4(), chart.patient_id)
    assert [c.source.topic.code for c in cards if c.source.topic is not None] == ["subtype"]
    statements = card_statements(assessment, KB)
    assert statements.subtype.missing == f"Result pending: Intact PTH (ordered {day(3)})."
    opening, _ = split_detail(cards[0].detail or "")
    assert f"Result pending: Intact PTH (ordered {day(3)})." in opening  # on the first screen
    assert statements.subtype.next_step is None or "PTH" not in statements.subtype.next_step


@pytest.mark.parametrize("days_ago", [10, 89, 91, DIALYSIS_PTH_DAYS - 1, DIALYSIS_PTH_DAYS + 1])
@pytest.mark.parametrize("encounter", [EncounterSetting.AMBULATORY, EncounterSetting.UNKNOWN])
def test_what_patient_view_suggests_order_sign_never_flags_as_a_repeat(
    days_ago: float, encounter: EncounterSetting
) -> None:
    """The gap this fixes: a PTH ordered and pending was suggested on patient-view, and the draft
    that suggestion creates was then flagged as a repeat on order-sign. Every suggested draft, sent
    back as `draftOrders` on the same chart, gets no repeat card, whatever the order's age."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, days_ago)
    card = workup_card(chart)
    assert card is not None
    drafts = {"resourceType": "Bundle", "type": "collection", "entry": []}
    for suggestion in card["suggestions"]:
        for action in suggestion["actions"]:
            drafts["entry"].append({"resource": action["resource"]})
    assert drafts["entry"]
    result = check_draft_orders(
        bundle_resources(chart.bundle()),
        read_draft_orders(drafts),
        AS_OF,
        chart.patient_id,
        encounter=encounter,
    )
    assert [a.summary for a in result.check.advice if a.kind == "repeat-lab"] == []


REPEAT_TESTS = [
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma"),
    ("2777-1", "Phosphate [Mass/volume] in Serum or Plasma"),
    PTH,
    VITAMIN_D,
    ("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma"),
]
"""Every test section 15.5 gives a re-test window (1,25-(OH)2 vitamin D aside: once per episode)."""


@pytest.mark.parametrize("chart_of", [dialysis_chart, ssc_chart], ids=["dialysis", "no-ckd"])
@pytest.mark.parametrize("test", REPEAT_TESTS, ids=[t[0] for t in REPEAT_TESTS])
def test_no_suggestion_is_a_pending_repeat_at_any_age_of_the_order(chart_of: Any, test: tuple[str, str]) -> None:
    """For each 15.5 test ordered at ages on both sides of every window involved (48 h, 1, 3 and
    6 months, a year), in an outpatient encounter (order-sign's longest intervals): no draft that
    patient-view suggests is a repeat for order-sign."""
    for days_ago in (1, 3, 29, 31, 89, 91, 179, 181, 364, 366):
        chart = chart_of()
        chart.lab_ordered(*test, days_ago)
        card = workup_card(chart)
        entries = [{"resource": a["resource"]} for s in (card or {}).get("suggestions", []) for a in s["actions"]]
        if not entries:
            continue
        drafts = read_draft_orders({"resourceType": "Bundle", "type": "collection", "entry": entries})
        result = check_draft_orders(
            bundle_resources(chart.bundle()), drafts, AS_OF, chart.patient_id, encounter=EncounterSetting.AMBULATORY
        )
        assert [a.summary for a in result.check.advice if a.kind == "repeat-lab"] == [], days_ago


# ----- through HTTP ---------------------------------------------------------------------------------

PATIENT_VIEW = "/cds-services/calcinosis"


@pytest.fixture(scope="module")
def app() -> Any:
    return make_app()


def now_days(days_ago: float) -> float:
    """`days_ago` before the service's clock, in the chart's days before AS_OF (the service assesses now)."""
    return (AS_OF - datetime.now(UTC)).total_seconds() / 86400 + days_ago


def http_workup(response: httpx.Response) -> dict[str, Any]:
    return next(c for c in cards_of(response) if c["source"]["topic"]["code"] == "workup")


@pytest.mark.parametrize(("status", "pending"), [("active", True), ("completed", False)])
def test_pending_order_in_the_prefetch(app: Any, status: str, pending: bool) -> None:
    """The EHR prefetches `serviceRequests` (active orders): an active PTH order is not suggested."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, now_days(10), status=status)
    body = hook_request(chart)
    assert "serviceRequests" in body["prefetch"]
    card = http_workup(post(app, PATIENT_VIEW, body))
    assert ("2731-8" in suggested_codes(card)) is not pending
    assert ("Intact PTH ordered " in card["detail"]) is pending
    assert "Incomplete record" not in str(cards_of(post(app, PATIENT_VIEW, body)))


def test_without_the_key_and_nothing_to_fetch_with_the_workup_reads_results_only(app: Any) -> None:
    """An EHR that does not send the optional key, and no fhirServer: the call is answered, PTH is
    suggested (no order was seen), and nothing is said to be missing from the record."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, now_days(10))
    body = hook_request(chart)
    del body["prefetch"]["serviceRequests"]
    cards = cards_of(post(app, PATIENT_VIEW, body))
    workup = next(c for c in cards if c["source"]["topic"]["code"] == "workup")
    assert "2731-8" in suggested_codes(workup) and "result pending" not in workup["detail"]
    assert "Not on file" not in cards[0]["detail"]  # only "no result on file": orders were not seen


def test_orders_prefetched_as_null_mean_none(app: Any) -> None:
    """`null` is "no data" (CDS Hooks): no order to keep out, nothing said to be incomplete."""
    chart = dialysis_chart()
    body = hook_request(chart)
    body["prefetch"]["serviceRequests"] = None
    cards = cards_of(post(app, PATIENT_VIEW, body))
    assert "2731-8" in suggested_codes(next(c for c in cards if c["source"]["topic"]["code"] == "workup"))
    assert "Incomplete record" not in cards[0]["detail"]


def test_an_unreadable_orders_prefetch_is_named_not_taken_as_no_orders(app: Any) -> None:
    """The key holds an OperationOutcome and there is no fhirServer: the call is answered, and the
    first card says the test orders could not be read (as for any optional key)."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, now_days(10))
    body = hook_request(chart)
    body["prefetch"]["serviceRequests"] = {"resourceType": "OperationOutcome", "issue": []}
    cards = cards_of(post(app, PATIENT_VIEW, body))
    assert "test orders not yet resulted: could not be read" in cards[0]["detail"]
    assert "2731-8" in suggested_codes(next(c for c in cards if c["source"]["topic"]["code"] == "workup"))


@pytest.mark.parametrize("failing", [False, True], ids=["fetched", "fetch-fails"])
def test_orders_fetched_when_not_prefetched(failing: bool) -> None:
    """No prefetch: the service fetches the active orders with the rest of the chart. When that
    fetch fails the call is still answered, and the first card says the orders were not seen."""
    chart = dialysis_chart()
    chart.lab_ordered(*PTH, now_days(10))
    overrides = {"ServiceRequest": httpx.Response(500)} if failing else {}
    with respx.mock(assert_all_called=False) as mock:
        routes = serve_chart(mock, chart, overrides)
        app = make_app(local_fhir_servers=[FHIR_BASE])
        response = post(app, PATIENT_VIEW, hook_request(chart, prefetch={}, with_server=True))
        cards = cards_of(response)
        query = str(routes["ServiceRequest"].calls.last.request.url)
    assert "patient=pend-1" in query and "status=active" in query
    workup = next(c for c in cards if c["source"]["topic"]["code"] == "workup")
    assert ("2731-8" in suggested_codes(workup)) is failing
    assert ("test orders not yet resulted: could not be fetched" in cards[0]["detail"]) is failing
