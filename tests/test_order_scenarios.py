"""Order-sign scenarios (clinical-knowledge.md section 15): a chart and draft orders in, the advice
out. Every row of the section 15 tables is tested on both sides of its trigger: the gate that
makes it apply, and the same order where it must stay silent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from calcinosis.orders import EncounterSetting, OrderAdvice, load_order_knowledge
from fhir_mapping import bundle_resources
from fhir_mapping.orders import (
    DraftOrdersError,
    check_draft_orders,
    encounter_setting,
    read_draft_orders,
    short_name,
)
from tests.charts import AS_OF, ICD10, LOINC, RXNORM, Chart, when
from tests.fhir_chart import FhirChart

PATIENT = "pat-1"


def medication_order(
    text: str,
    *,
    rxnorm: str | None = None,
    route: str | None = None,
    status: str = "draft",
    order_id: str = "draft-1",
    dose_ug: float | None = None,
    dosage_text: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """An unsigned MedicationRequest, written by the chart builder the sandbox's draft orders use."""
    return FhirChart(PATIENT).add_draft_medication(
        order_id,
        text,
        rxnorm=rxnorm,
        route=route,
        dosage_text=dosage_text,
        dose_ug=dose_ug,
        reason=reason,
        status=status,
    )


def lab_order(loinc: str | None, text: str, order_id: str = "draft-lab") -> dict[str, Any]:
    """An unsigned ServiceRequest (LOINC-coded when given), by the same builder."""
    return FhirChart(PATIENT).add_draft_test(order_id, text, loinc=loinc)


def bundle(*orders: dict[str, Any]) -> dict[str, Any]:
    """The `draftOrders` Bundle of these orders."""
    drafts = FhirChart(PATIENT)
    for order in orders:
        drafts.add(order)
    return drafts.bundle()


def check(
    chart: Chart, *orders: dict[str, Any], encounter: EncounterSetting = EncounterSetting.UNKNOWN
) -> list[OrderAdvice]:
    drafts = read_draft_orders(bundle(*orders))
    result = check_draft_orders(bundle_resources(chart.bundle()), drafts, AS_OF, PATIENT, encounter=encounter)
    advice = list(result.check.advice)
    assert all(a.indicator in ("info", "warning") for a in advice), "critical is never used"
    assert len({a.order.reference for a in advice}) == len(advice), "one card per draft order"
    return advice


def one(advice: list[OrderAdvice]) -> OrderAdvice:
    assert len(advice) == 1, [a.summary for a in advice]
    return advice[0]


# ----- patients at each gate -----------------------------------------------------------------


def calciphylaxis_chart() -> Chart:
    """Coded calciphylaxis, normal calcium and phosphate, no dialysis."""
    chart = Chart(PATIENT)
    chart.condition(None, text="Calciphylaxis of the thigh")
    chart.mineral_panel(9.4, 4.0, 4.0, egfr=70)
    return chart


def risk_pattern_chart(pth: float = 1240) -> Chart:
    """No calcinosis on record; dialysis for 7 years and PTH above 1000: the consensus pattern."""
    chart = Chart(PATIENT)
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=7 * 365, sessions_every=180)
    chart.mineral_panel(9.2, 4.0, 4.2, egfr=None)
    chart.lab("2731-8", pth, "pg/mL", 20)
    return chart


def dystrophic_chart() -> Chart:
    """Calcinosis cutis in systemic sclerosis, normal labs, normal kidney function."""
    chart = Chart(PATIENT)
    chart.calcinosis(body_sites=["right index finger"])
    chart.condition("M34.0", ICD10, "Progressive systemic sclerosis")
    chart.mineral_panel(9.3, 4.1, 3.6, egfr=88)
    return chart


def metastatic_chart(calcium: float = 9.4, phosphate: float = 4.0, egfr: float = 80) -> Chart:
    """Calcinosis cutis with the given calcium (albumin 4.0, so uncorrected) and phosphate."""
    chart = Chart(PATIENT)
    chart.calcinosis()
    chart.mineral_panel(calcium, 4.0, phosphate, egfr=egfr)
    return chart


def iatrogenic_chart() -> Chart:
    """Calcinosis cutis a month after IV calcium gluconate."""
    chart = Chart(PATIENT)
    chart.calcinosis(onset_days_ago=30)
    chart.medication("Calcium gluconate 10% injection", 60, kind="MedicationAdministration", route="intravenous")
    chart.mineral_panel(9.3, 4.0, 3.9)
    return chart


def no_calcinosis_chart() -> Chart:
    chart = Chart(PATIENT)
    chart.condition("I10", ICD10, "Essential hypertension")
    chart.mineral_panel(11.8, 4.0, 7.9, egfr=40)
    return chart


WARFARIN = medication_order("warfarin sodium 5 MG Oral Tablet", rxnorm="855332")


# ----- 15.1 calciphylaxis and the risk pattern ------------------------------------------------


def test_warfarin_for_coded_calciphylaxis_is_a_warning_with_the_alternative() -> None:
    advice = one(check(calciphylaxis_chart(), WARFARIN))
    assert advice.indicator == "warning"
    assert advice.rule_id == "calciphylaxis-vitamin-k-antagonist"
    assert advice.summary.startswith("Calciphylaxis on file: warfarin sodium is a listed major risk factor")
    assert advice.alternative is not None and "direct oral anticoagulant" in advice.alternative
    assert "Galloway-2015" in advice.sources
    assert any("855332" in how and "confirmed" in how for how in advice.order.resolved_by)


@pytest.mark.parametrize("chart", [dystrophic_chart, no_calcinosis_chart, lambda: metastatic_chart(9.4, 4.0)])
def test_warfarin_outside_calciphylaxis_is_silent(chart: Any) -> None:
    """15.4 is the trap: warfarin is a reported treatment of dystrophic calcinosis."""
    assert check(chart(), WARFARIN) == []


def test_other_vitamin_k_antagonists_are_matched_by_name() -> None:
    for name in ("phenprocoumon 3 MG tablet", "acenocoumarol 1 MG tablet"):
        advice = one(check(calciphylaxis_chart(), medication_order(name)))
        assert advice.rule_id == "calciphylaxis-vitamin-k-antagonist"


def test_calcium_acetate_on_the_risk_pattern_is_a_warning_naming_non_calcium_binders() -> None:
    order = medication_order("calcium acetate 667 MG Oral Capsule", dosage_text="2 capsules with each meal")
    advice = one(check(risk_pattern_chart(), order))
    assert advice.indicator == "warning"
    assert advice.rule_id == "calciphylaxis-calcium-binder"
    assert advice.summary.startswith("Elevated calciphylaxis risk: calcium acetate adds calcium")
    assert advice.alternative is not None and "sevelamer" in advice.alternative


def test_risk_pattern_not_met_is_silent() -> None:
    """Dialysis for 7 years (one major factor) with PTH 450 (no factor): pattern not met and no
    calcinosis on record, so the gate does not open."""
    order = medication_order("calcium acetate 667 MG Oral Capsule")
    assert check(risk_pattern_chart(pth=450), order) == []


@pytest.mark.parametrize(
    ("dosage_text", "reason", "rule_id"),
    [
        ("1 tablet with meals", None, "calciphylaxis-calcium-binder"),
        (None, "Hyperphosphatemia", "calciphylaxis-calcium-binder"),
        ("1 tablet at bedtime", "Osteoporosis", "calciphylaxis-calcium-supplement"),
    ],
)
def test_calcium_carbonate_is_a_binder_or_a_supplement_by_its_use(
    dosage_text: str | None, reason: str | None, rule_id: str
) -> None:
    order = medication_order("Calcium carbonate 1250 MG Oral Tablet", dosage_text=dosage_text, reason=reason)
    advice = one(check(calciphylaxis_chart(), order))
    assert (advice.rule_id, advice.indicator) == (rule_id, "warning")


def test_calcium_supplement_outside_the_gate_is_silent() -> None:
    assert check(dystrophic_chart(), medication_order("Calcium citrate 950 MG tablet")) == []


@pytest.mark.parametrize(("pth", "alternative"), [(1240, True), (40, False)])
def test_active_vitamin_d_is_a_warning_and_names_a_calcimimetic_only_when_pth_is_high(
    pth: float, alternative: bool
) -> None:
    chart = calciphylaxis_chart()
    chart.lab("2731-8", pth, "pg/mL", 20, low=15, high=65)
    advice = one(check(chart, medication_order("calcitriol 0.25 MCG Oral Capsule", rxnorm="308867")))
    assert (advice.rule_id, advice.indicator) == ("calciphylaxis-active-vitamin-d", "warning")
    assert (advice.alternative is not None) is alternative
    assert any("308867" in how and "partial" in how for how in advice.order.resolved_by)


def test_active_vitamin_d_in_dystrophic_calcinosis_is_silent() -> None:
    assert check(dystrophic_chart(), medication_order("paricalcitol 1 MCG capsule")) == []


def test_nutritional_vitamin_d_is_info_and_a_warning_when_calcium_is_high() -> None:
    order = medication_order("Cholecalciferol 1000 UNT Oral Tablet", rxnorm="2418")
    assert one(check(calciphylaxis_chart(), order)).indicator == "info"
    chart = calciphylaxis_chart()
    chart.mineral_panel(11.2, 4.0, 4.0, days_ago=2, egfr=70)
    chart.mineral_panel(11.0, 4.0, 4.0, days_ago=4, egfr=70)
    advice = one(check(chart, order))
    assert (advice.indicator, advice.rule_id) == ("warning", "metastatic-vitamin-d")
    assert advice.summary.startswith("Calcium 11.2 mg/dL on file: Cholecalciferol adds vitamin D")
    assert any(line.startswith("Also: Calciphylaxis on file") for line in advice.why)


def test_parenteral_iron_is_info_in_calciphylaxis_and_silent_otherwise() -> None:
    order = medication_order("iron sucrose 100 MG in 5 mL injection", route="intravenous")
    assert one(check(calciphylaxis_chart(), order)).indicator == "info"
    assert check(dystrophic_chart(), order) == []


@pytest.mark.parametrize(
    ("text", "route", "card"),
    [
        ("prednisone 20 MG Oral Tablet", "oral", True),
        ("methylprednisolone 125 MG injection", "intravenous", True),
        ("triamcinolone acetonide 10 MG/ML injection", "intralesional", False),
        ("triamcinolone acetonide 40 MG/ML injection", "intra-articular", False),
        ("hydrocortisone 1% cream", "topical", False),
    ],
)
def test_glucocorticoids_only_systemic_routes(text: str, route: str, card: bool) -> None:
    advice = check(calciphylaxis_chart(), medication_order(text, route=route))
    assert bool(advice) is card
    if card:
        assert advice[0].indicator == "info"
        assert "Never stop it abruptly" in advice[0].summary


@pytest.mark.parametrize("text", ["heparin sodium 5000 UNT/ML injection", "enoxaparin 40 MG/0.4ML", "insulin glargine"])
def test_heparin_and_insulin_get_no_card(text: str) -> None:
    assert check(calciphylaxis_chart(), medication_order(text, route="subcutaneous")) == []


def test_calcinosis_on_dialysis_opens_section_15_1() -> None:
    """15.4: once the patient is on dialysis, 15.1 applies even to dystrophic calcinosis."""
    chart = dystrophic_chart()
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=400, sessions_every=200)
    advice = one(check(chart, WARFARIN))
    assert advice.summary.startswith("Calcinosis on dialysis: warfarin sodium")


# ----- 15.2 metastatic: calcium, phosphate or Ca x P above the limit -----------------------------


@pytest.mark.parametrize(("calcium", "card"), [(11.2, True), (10.3, False)])
def test_calcium_order_with_high_calcium(calcium: float, card: bool) -> None:
    order = medication_order("Calcium carbonate 500 MG chewable tablet")
    advice = check(metastatic_chart(calcium=calcium), order)
    assert bool(advice) is card
    if card:
        assert (advice[0].rule_id, advice[0].indicator) == ("metastatic-calcium", "warning")
        assert (
            advice[0].summary
            == f"Calcium {calcium} mg/dL on file: Calcium carbonate adds calcium. Consider holding it."
        )


@pytest.mark.parametrize(("phosphate", "card"), [(7.9, True), (4.4, False)])
def test_iv_phosphate_with_high_phosphate(phosphate: float, card: bool) -> None:
    order = medication_order("potassium phosphates 3 MMOL/ML injection", route="intravenous")
    advice = check(metastatic_chart(phosphate=phosphate), order)
    assert bool(advice) is card
    if card:
        assert (advice[0].rule_id, advice[0].indicator) == ("metastatic-phosphate", "warning")


@pytest.mark.parametrize(("calcium", "phosphate", "card"), [(9.9, 7.2, True), (9.7, 7.2, False)])
def test_vitamin_d_with_calcium_phosphate_product_either_side_of_70(
    calcium: float, phosphate: float, card: bool
) -> None:
    """9.9 x 7.2 = 71.3 (above 70); 9.7 x 7.2 = 69.8 (not above). Phosphate 7.2 is itself above
    the fallback limit, so the phosphate order fires either way; vitamin D adds both ions."""
    chart = metastatic_chart(calcium=calcium, phosphate=phosphate)
    advice = one(check(chart, medication_order("calcitriol 0.5 MCG capsule")))
    assert advice.rule_id == "metastatic-vitamin-d"
    product_named = "Ca x P" in advice.summary
    assert product_named is False  # phosphate is the first abnormal value named for vitamin D
    calcium_order = check(chart, medication_order("calcium acetate 667 MG capsule"))
    assert bool(calcium_order) is card  # calcium adds to the product only when it is above 70


@pytest.mark.parametrize(
    ("calcium", "indicator"), [(10.3, None), (11.0, "info"), (11.9, "info"), (12.0, "warning"), (13.1, "warning")]
)
def test_calcium_raising_drug_by_calcium_level(calcium: float, indicator: str | None) -> None:
    advice = check(metastatic_chart(calcium=calcium), medication_order("hydrochlorothiazide 25 MG tablet"))
    assert (advice[0].indicator if advice else None) == indicator


@pytest.mark.parametrize(("egfr", "card"), [(22, True), (45, False)])
def test_oral_sodium_phosphate_in_advanced_ckd_with_normal_phosphate(egfr: float, card: bool) -> None:
    chart = metastatic_chart(egfr=egfr)
    chart.lab("98979-8", egfr, "mL/min/{1.73_m2}", 150)  # chronic
    advice = check(chart, medication_order("sodium phosphate enema", route="rectal"))
    assert bool(advice) is card
    if card:
        assert (advice[0].rule_id, advice[0].indicator) == ("kidney-oral-sodium-phosphate", "info")


def test_treatments_of_hypercalcemia_never_get_a_card() -> None:
    chart = metastatic_chart(calcium=12.5, phosphate=7.9)
    for text in (
        "sevelamer carbonate 800 MG tablet",
        "cinacalcet 30 MG tablet",
        "zoledronic acid 4 MG injection",
        "calcitonin salmon injection",
        "sodium chloride 0.9% infusion",
        "lanthanum carbonate 500 MG",
    ):
        assert check(chart, medication_order(text)) == [], text


def test_lactated_ringers_is_silent_even_with_hypercalcemia() -> None:
    order = medication_order("Lactated Ringer's injection 1000 mL (contains calcium chloride)", route="intravenous")
    assert check(metastatic_chart(calcium=12.5), order) == []


def test_multivitamin_with_calcium_and_vitamin_d_is_silent() -> None:
    order = medication_order("Multivitamin with minerals (calcium, vitamin D3) tablet")
    assert check(metastatic_chart(calcium=12.5), order) == []


# ----- parenteral nutrition (15.0: only its added calcium, only against 15.2) ------------------

PN_WITH_CALCIUM = (
    "Parenteral nutrition (adult, central) with calcium gluconate 10 mEq, potassium phosphate 15 mmol",
    "TPN 2-in-1 with calcium chloride 5 mEq and multivitamin infusion",
    "Peripheral parenteral nutrition, calcium 4.5 mEq/L",
)


def iatrogenic_hypercalcemic_chart() -> Chart:
    """Calcinosis after IV calcium gluconate, and calcium 11.2 mg/dL yesterday."""
    chart = iatrogenic_chart()
    chart.mineral_panel(11.2, 4.0, 3.9, days_ago=1)
    return chart


@pytest.mark.parametrize("text", PN_WITH_CALCIUM)
def test_parenteral_nutrition_after_iv_calcium_calcinosis_is_not_an_iv_calcium_order(text: str) -> None:
    """15.0: parenteral nutrition with added calcium is handled only in 15.2, so the 15.3 IV
    calcium precautions (slow infusion, central vein, stop at the site) never fire on it: silent
    with normal calcium, the 15.2 warning with hypercalcaemia."""
    order = medication_order(text, route="intravenous")
    assert check(iatrogenic_chart(), order) == []
    advice = one(check(iatrogenic_hypercalcemic_chart(), order))
    assert (advice.rule_id, advice.section, advice.indicator) == (
        "metastatic-calcium-parenteral-nutrition",
        "15.2",
        "warning",
    )
    assert advice.summary == (
        "Calcium 11.2 mg/dL on file: this parenteral nutrition adds calcium. Consider removing the calcium from the feed."
    )
    assert [c.value for c in advice.order.drug_classes] == ["parenteral-nutrition"]
    assert advice.alternative is None


@pytest.mark.parametrize(("calcium", "card"), [(11.2, True), (10.3, False)])
def test_parenteral_nutrition_with_calcium_by_the_calcium_level(calcium: float, card: bool) -> None:
    """The multivitamin in the bag does not exclude the order (it did before: a multivitamin
    excludes a whole order); the calcium in it is what 15.2 reads."""
    order = medication_order(PN_WITH_CALCIUM[1], route="intravenous")
    advice = check(metastatic_chart(calcium=calcium), order)
    assert bool(advice) is card
    if card:
        assert one(advice).rule_id == "metastatic-calcium-parenteral-nutrition"


def test_parenteral_nutrition_without_calcium_or_for_calciphylaxis_is_silent() -> None:
    """Its phosphate salt is no phosphate order (15.0), even with phosphate above the range; and
    15.1 (calciphylaxis) does not read parenteral nutrition at all."""
    no_calcium = medication_order("Total parenteral nutrition with potassium phosphate 20 mmol", route="intravenous")
    assert check(metastatic_chart(calcium=9.4, phosphate=7.9), no_calcium) == []
    assert check(iatrogenic_chart(), no_calcium) == []
    with_calcium = medication_order(PN_WITH_CALCIUM[0], route="intravenous")
    assert check(calciphylaxis_chart(), with_calcium) == []


@pytest.mark.parametrize(
    "text",
    [
        "TPN without calcium (hypercalcaemia), potassium phosphate 10 mmol",
        "Parenteral nutrition, calcium-free",
        "Parenteral nutrition: calcium 0 mEq, magnesium 8 mEq",
        "Parenteral nutrition, no added calcium",
    ],
)
def test_parenteral_nutrition_that_says_it_has_no_calcium_is_silent(text: str) -> None:
    """The other side of the 15.2 parenteral nutrition warning: the feed names calcium only to
    say it has none."""
    order = medication_order(text, route="intravenous")
    assert check(metastatic_chart(calcium=11.2), order) == []
    assert check(iatrogenic_hypercalcemic_chart(), order) == []


def test_parenteral_nutrition_with_calcium_as_a_contained_ingredient() -> None:
    """The calcium may be named only among the ingredients of a contained Medication."""
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-pn",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationReference": {"reference": "#pn"},
        "contained": [
            {
                "resourceType": "Medication",
                "id": "pn",
                "code": {"text": "Parenteral nutrition, compounded"},
                "ingredient": [
                    {"itemCodeableConcept": {"text": "Amino acids 10%"}},
                    {"itemCodeableConcept": {"text": "Dextrose 70%"}},
                    {"itemCodeableConcept": {"text": "Calcium gluconate"}},
                ],
            }
        ],
    }
    advice = one(check(iatrogenic_hypercalcemic_chart(), order))
    assert advice.rule_id == "metastatic-calcium-parenteral-nutrition"
    assert check(iatrogenic_chart(), order) == []


def test_parenteral_nutrition_names_are_whole_words() -> None:
    """'TPN' is matched as a word; a plain IV calcium gluconate order is still IV calcium (15.3)."""
    (tpn,) = read_draft_orders(bundle(medication_order("TPN adult with calcium gluconate")))
    assert [c.value for c in tpn.drug_classes] == ["parenteral-nutrition"]
    (plain,) = read_draft_orders(bundle(medication_order("calcium gluconate 100 MG/ML injection (stpn)")))
    assert "parenteral-nutrition" not in [c.value for c in plain.drug_classes]
    advice = one(check(iatrogenic_chart(), medication_order("calcium gluconate 100 MG/ML injection", route="iv")))
    assert advice.rule_id == "iatrogenic-calcium-gluconate"


# ----- 15.3 prior iatrogenic calcinosis -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "route", "rule_id"),
    [
        ("calcium chloride 100 MG/ML injection", "intravenous", "iatrogenic-calcium-chloride"),
        ("calcium gluconate 100 MG/ML injection", "intravenous", "iatrogenic-calcium-gluconate"),
        ("sodium phosphates 3 MMOL/ML injection", "intravenous", "iatrogenic-phosphate"),
    ],
)
def test_iv_calcium_or_phosphate_after_iatrogenic_calcinosis_is_info(text: str, route: str, rule_id: str) -> None:
    advice = one(check(iatrogenic_chart(), medication_order(text, route=route)))
    assert (advice.rule_id, advice.indicator) == (rule_id, "info")
    assert advice.summary.startswith("Earlier calcinosis")
    assert check(dystrophic_chart(), medication_order(text, route=route)) == []


def test_oral_calcium_gluconate_after_iatrogenic_calcinosis_is_silent() -> None:
    assert check(iatrogenic_chart(), medication_order("calcium gluconate 500 MG oral tablet", route="oral")) == []


def test_eeg_after_iatrogenic_calcinosis_asks_for_a_calcium_free_paste() -> None:
    advice = one(check(iatrogenic_chart(), lab_order(None, "EEG, routine")))
    assert (advice.rule_id, advice.indicator) == ("iatrogenic-electrode-paste", "info")
    assert check(dystrophic_chart(), lab_order(None, "EEG, routine")) == []


# ----- 15.4 dystrophic calcinosis: treatments, not triggers -------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "warfarin 1 MG tablet",
        "diltiazem 120 MG extended release capsule",
        "alendronate 70 MG tablet",
        "minocycline 100 MG capsule",
        "ceftriaxone 1 G injection",
        "probenecid 500 MG tablet",
        "colchicine 0.6 MG tablet",
        "sodium thiosulfate 25% injection",
        "rituximab 500 MG injection",
        "immune globulin 10% infusion",
        "aluminum hydroxide 320 MG/5ML suspension",
    ],
)
def test_reported_treatments_in_dystrophic_only_calcinosis_are_silent(text: str) -> None:
    assert check(dystrophic_chart(), medication_order(text)) == []


@pytest.mark.parametrize(("egfr", "card"), [(50, True), (75, False)])
def test_aluminum_hydroxide_in_ckd_g3a_or_worse_is_info(egfr: float, card: bool) -> None:
    chart = dystrophic_chart()
    chart.lab("98979-8", egfr, "mL/min/{1.73_m2}", 1)
    advice = check(chart, medication_order("aluminum hydroxide 320 MG/5ML suspension"))
    assert bool(advice) is card
    if card:
        assert (advice[0].rule_id, advice[0].indicator) == ("kidney-aluminum", "info")
        assert advice[0].summary.startswith("eGFR 50 (G3a range)")


@pytest.mark.parametrize(("earlier_days", "words"), [(89, "eGFR 50 (G3a range)"), (91, "CKD G3a")])
def test_the_order_card_says_ckd_only_with_three_months_of_chronicity(earlier_days: int, words: str) -> None:
    chart = dystrophic_chart()
    chart.lab("98979-8", 50, "mL/min/{1.73_m2}", 1)
    chart.lab("98979-8", 52, "mL/min/{1.73_m2}", 1 + earlier_days)
    advice = check(chart, medication_order("aluminum hydroxide 320 MG/5ML suspension"))
    assert advice[0].summary.startswith(words)


@pytest.mark.parametrize(("egfr", "card"), [(25, True), (65, False)])
def test_bisphosphonate_in_ckd_g3_to_g5_is_info(egfr: float, card: bool) -> None:
    chart = dystrophic_chart()
    chart.lab("98979-8", egfr, "mL/min/{1.73_m2}", 1)
    advice = check(chart, medication_order("alendronate sodium 70 MG Oral Tablet", rxnorm="46041"))
    assert bool(advice) is card
    if card:
        assert (advice[0].rule_id, advice[0].indicator) == ("kidney-bisphosphonate", "info")


# ----- 15.0 exclusions --------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["stopped", "cancelled", "completed", "entered-in-error"])
def test_a_draft_that_stops_a_medicine_is_silent(status: str) -> None:
    order = medication_order("warfarin sodium 5 MG Oral Tablet", rxnorm="855332", status=status)
    assert check(calciphylaxis_chart(), order) == []


@pytest.mark.parametrize(("dose", "card"), [(0.25, False), (0.5, True), (1.0, True)])
def test_a_lower_dose_of_an_active_medicine_is_silent(dose: float, card: bool) -> None:
    chart = calciphylaxis_chart()
    chart.medication("calcitriol 0.5 MCG capsule", 120, dose_ug=0.5)
    order = medication_order("calcitriol 0.25 MCG capsule", dose_ug=dose)
    assert bool(check(chart, order)) is card


def test_patient_without_calcinosis_or_risk_pattern_is_silent_for_every_order() -> None:
    orders = [
        medication_order(text, order_id=f"d{i}")
        for i, text in enumerate(
            ["warfarin 5 MG", "calcium acetate 667 MG", "calcitriol 0.25 MCG", "potassium phosphate injection"]
        )
    ]
    assert check(no_calcinosis_chart(), *orders) == []


def test_irrelevant_drafts_do_not_read_the_chart() -> None:
    drafts = read_draft_orders(bundle(medication_order("amoxicillin 500 MG capsule")))
    result = check_draft_orders(bundle_resources(calciphylaxis_chart().bundle()), drafts, AS_OF, PATIENT)
    assert result.check.advice == () and result.findings is None


# ----- 15.5 repeat labs ----------------------------------------------------------------------


def dialysis_calcinosis_chart(pth_days_ago: float, pth: float = 420) -> Chart:
    chart = Chart(PATIENT)
    chart.calcinosis()
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=400, sessions_every=200)
    chart.mineral_panel(9.2, 4.0, 4.2, days_ago=3, egfr=None)
    chart.lab("2731-8", pth, "pg/mL", pth_days_ago, low=150, high=600)
    return chart


def clinician_day(days_ago: float) -> str:
    """The date `days_ago` before AS_OF as the patient-view cards write it ('3 Oct 2026',
    clinical-knowledge.md 11.4), spelled out here so a change of the shared helper shows."""
    moment = datetime.fromisoformat(when(days_ago))
    return f"{moment.day} {moment:%b %Y}"


PTH_ORDER = lab_order("2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma")


@pytest.mark.parametrize(("days_ago", "card"), [(20, True), (89, True), (91, False)])
def test_repeat_pth_within_the_dialysis_window(days_ago: float, card: bool) -> None:
    advice = check(dialysis_calcinosis_chart(days_ago), PTH_ORDER, encounter=EncounterSetting.AMBULATORY)
    repeat = [a for a in advice if a.kind == "repeat-lab"]
    assert bool(repeat) is card
    if card:
        item = repeat[0]
        assert item.indicator == "info"
        assert item.summary == f"PTH result on file from {clinician_day(days_ago)}: 420 pg/mL. Is a repeat needed?"
        assert item.delete_draft and item.order.reference == "ServiceRequest/draft-lab"


def test_repeat_pth_without_ckd_uses_three_months() -> None:
    chart = metastatic_chart()
    chart.lab("2731-8", 40, "pg/mL", 60, low=15, high=65)
    assert one(check(chart, PTH_ORDER)).kind == "repeat-lab"
    chart = metastatic_chart()
    chart.lab("2731-8", 40, "pg/mL", 95, low=15, high=65)
    assert check(chart, PTH_ORDER) == []


@pytest.mark.parametrize(
    ("encounter", "days_ago", "card"),
    [
        (EncounterSetting.INPATIENT, 1, True),
        (EncounterSetting.INPATIENT, 3, False),
        (EncounterSetting.UNKNOWN, 3, False),
        (EncounterSetting.AMBULATORY, 3, True),
        (EncounterSetting.AMBULATORY, 31, False),  # G5D: one month
        (EncounterSetting.EMERGENCY, 1, False),
        (EncounterSetting.INTENSIVE_CARE, 1, False),
    ],
)
def test_repeat_phosphate_by_setting(encounter: EncounterSetting, days_ago: float, card: bool) -> None:
    chart = Chart(PATIENT)
    chart.calcinosis()
    chart.condition("Z99.2", ICD10, "Dependence on renal dialysis")
    chart.dialysis(since_days=400, sessions_every=200)
    chart.lab("2777-1", 4.1, "mg/dL", days_ago, low=2.5, high=4.5)
    advice = check(chart, lab_order("2777-1", "Phosphate [Mass/volume] in Serum or Plasma"), encounter=encounter)
    assert bool(advice) is card


def test_total_and_ionized_calcium_are_different_tests() -> None:
    chart = metastatic_chart()
    ionized = lab_order("1994-3", "Calcium.ionized [Moles/volume] in Blood")
    total = lab_order("17861-6", "Calcium [Mass/volume] in Serum or Plasma")
    assert check(chart, ionized, encounter=EncounterSetting.AMBULATORY) == []
    assert one(check(chart, total, encounter=EncounterSetting.AMBULATORY)).kind == "repeat-lab"


def test_no_repeat_card_when_a_treatment_started_since_the_result() -> None:
    chart = dialysis_calcinosis_chart(20)
    chart.medication("cinacalcet 30 MG tablet", 10)
    assert [a for a in check(chart, PTH_ORDER) if a.kind == "repeat-lab"] == []
    # ... or is being started in the same order list
    plain = dialysis_calcinosis_chart(20)
    starting = medication_order("cinacalcet 30 MG tablet", order_id="draft-2")
    assert [a for a in check(plain, PTH_ORDER, starting) if a.kind == "repeat-lab"] == []


def test_no_repeat_card_for_an_abnormal_value_being_treated() -> None:
    chart = dialysis_calcinosis_chart(20, pth=1100)
    chart.medication("cinacalcet 30 MG tablet", 200)
    assert [a for a in check(chart, PTH_ORDER) if a.kind == "repeat-lab"] == []


def test_repeat_windows_never_exceed_the_workup_look_back() -> None:
    """A test patient-view suggests (no result in its look-back) is never a repeat on order-sign."""
    chart = metastatic_chart(egfr=50)
    chart.lab("98979-8", 50, "mL/min/{1.73_m2}", 150)
    chart.lab("17861-6", 9.4, "mg/dL", 120)  # within the 6-month G3 interval, outside the 90-day look-back
    assert check(chart, lab_order("1994-3", "Calcium ionized"), encounter=EncounterSetting.AMBULATORY) == []


def dialysis_calcinosis_without_pth() -> Chart:
    """Calcinosis on dialysis (the 15.5 PTH interval is 3 months) with no PTH result on file."""
    chart = dialysis_calcinosis_chart(400)  # the only PTH result is far outside every interval
    return chart


PTH_TEXT = "Parathyrin.intact [Mass/volume] in Serum or Plasma"


@pytest.mark.parametrize(
    ("status", "days_ago", "card"),
    [
        ("active", 10, True),
        ("active", 89, True),  # G5D PTH interval: 3 months
        ("active", 91, False),
        ("completed", 10, False),
        ("revoked", 10, False),
        ("draft", 10, False),
        ("on-hold", 10, False),
    ],
)
def test_a_pending_order_for_the_same_test_counts_as_on_file(status: str, days_ago: float, card: bool) -> None:
    """15.5: "on file" is a result or an active order for the same test not yet resulted."""
    chart = dialysis_calcinosis_without_pth()
    placed = chart.lab_ordered("2731-8", PTH_TEXT, days_ago, status=status)
    advice = check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY)
    assert bool(advice) is card, [a.summary for a in advice]
    if card:
        item = one(advice)
        assert (item.kind, item.indicator, item.rule_id) == ("repeat-lab", "info", "repeat-pth-pending")
        assert item.summary == (
            f"PTH already ordered on {clinician_day(days_ago)}, result not yet on file. Is a second order needed?"
        )
        assert item.delete_draft and item.order.reference == "ServiceRequest/draft-lab"
        assert item.repeat_of is not None and item.repeat_of.reference == f"ServiceRequest/{placed['id']}"


def test_a_pending_order_with_a_result_already_on_the_chart_is_not_pending() -> None:
    """An order whose result arrived (an Observation based on it) is no longer pending: the
    result itself decides (here it is outside the interval, so no card)."""
    chart = dialysis_calcinosis_without_pth()
    placed = chart.lab_ordered("2731-8", PTH_TEXT, 120)
    old_result = chart.lab("2731-8", 410, "pg/mL", 118, low=150, high=600)
    old_result["basedOn"] = [{"reference": f"ServiceRequest/{placed['id']}"}]
    placed["authoredOn"] = when(10)  # still active on the chart, but resulted
    assert check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY) == []


def test_a_pending_order_of_another_test_or_a_proposal_is_not_a_repeat() -> None:
    chart = dialysis_calcinosis_without_pth()
    chart.lab_ordered("2777-1", "Phosphate [Mass/volume] in Serum or Plasma", 10)
    chart.lab_ordered("2731-8", PTH_TEXT, 10, intent="proposal")
    assert check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY) == []


def test_a_pending_order_is_no_repeat_when_treatment_changed_since_it_was_placed() -> None:
    chart = dialysis_calcinosis_without_pth()
    chart.lab_ordered("2731-8", PTH_TEXT, 20)
    chart.medication("cinacalcet 30 MG tablet", 10)
    assert check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY) == []


def test_the_draft_itself_on_the_chart_is_not_its_own_repeat() -> None:
    """An EHR may already hold the order being signed; it never counts against itself."""
    chart = dialysis_calcinosis_without_pth()
    chart.add_service_request(
        "draft-lab", {"coding": [{"system": LOINC, "code": "2731-8"}]}, status="active", authored=when(0.01)
    )
    assert check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY) == []


def test_a_result_on_file_is_named_before_a_pending_order() -> None:
    chart = dialysis_calcinosis_chart(20)
    chart.lab_ordered("2731-8", PTH_TEXT, 5)
    item = one(check(chart, PTH_ORDER, encounter=EncounterSetting.AMBULATORY))
    assert item.rule_id == "repeat-pth" and item.summary.startswith("PTH result on file from")


def test_pending_orders_in_hospital_use_the_inpatient_interval() -> None:
    """Phosphate in hospital: 48 hours; an order placed a day ago is a repeat, three days ago not."""
    for days_ago, card in ((1, True), (3, False)):
        chart = dialysis_calcinosis_without_pth()
        chart.lab_ordered("2777-1", "Phosphate", days_ago)
        for lab in chart.of_type("Observation"):
            if lab["code"]["coding"][0]["code"] == "2777-1":
                lab["effectiveDateTime"] = when(300)
        order = lab_order("2777-1", "Phosphate [Mass/volume] in Serum or Plasma")
        assert bool(check(chart, order, encounter=EncounterSetting.INPATIENT)) is card


# ----- reading draft orders ---------------------------------------------------------------------


def test_contained_and_referenced_medications_are_resolved_by_code_and_ingredient() -> None:
    contained = {
        "resourceType": "MedicationRequest",
        "id": "draft-c",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationReference": {"reference": "#med"},
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"text": "Coumadin 5 MG tablet"},
                "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "11289"}]}}],
            }
        ],
    }
    referenced = {
        "resourceType": "MedicationRequest",
        "id": "draft-r",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationReference": {"reference": "Medication/m2"},
    }
    medication = {"resourceType": "Medication", "id": "m2", "code": {"text": "calcium acetate 667 MG capsule"}}
    drafts = read_draft_orders(bundle(contained, referenced, medication))
    assert [d.reference for d in drafts] == ["MedicationRequest/draft-c", "MedicationRequest/draft-r"]
    assert any("contained Medication ingredient RxNorm 11289 (confirmed" in how for how in drafts[0].resolved_by)
    assert any("referenced Medication name" in how for how in drafts[1].resolved_by)
    advice = check(calciphylaxis_chart(), contained, referenced, medication)
    assert {a.rule_id for a in advice} == {"calciphylaxis-vitamin-k-antagonist", "calciphylaxis-calcium-binder"}


def test_codes_come_before_names_and_unconfirmed_codes_are_not_used() -> None:
    """Calcium acetate's RXCUI is unconfirmed in terminology.md: a code alone does not resolve it;
    its name does."""
    coded_only = {
        **medication_order("x"),
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "214342"}]},
    }
    assert read_draft_orders(bundle(coded_only))[0].drug_classes == ()
    named = medication_order("calcium acetate 667 MG capsule", rxnorm="214342")
    assert read_draft_orders(bundle(named))[0].resolved_by == ("calcium-based-binder: order name",)


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "x",
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "entry": "x"},
        {"resourceType": "Bundle", "entry": [1]},
    ],
)
def test_malformed_draft_orders_are_an_error_naming_the_field(value: Any) -> None:
    with pytest.raises(DraftOrdersError, match=r"context\.draftOrders"):
        read_draft_orders(value)


def test_short_names_and_encounter_settings() -> None:
    assert short_name("calcium acetate 667 MG Oral Capsule") == "calcium acetate"
    assert short_name("Lactated Ringer's") == "Lactated Ringer's"
    assert encounter_setting({"resourceType": "Encounter", "class": {"code": "IMP"}}) is EncounterSetting.INPATIENT
    assert encounter_setting({"resourceType": "Encounter", "class": {"code": "EMER"}}) is EncounterSetting.EMERGENCY
    icu = {"resourceType": "Encounter", "class": {"code": "IMP"}, "type": [{"text": "Intensive care unit stay"}]}
    assert encounter_setting(icu) is EncounterSetting.INTENSIVE_CARE
    assert encounter_setting(None) is EncounterSetting.UNKNOWN


def test_order_knowledge_loads_and_every_rule_cites_a_source() -> None:
    knowledge = load_order_knowledge()
    sections = {rule.section for rule in knowledge.rules}
    assert sections == {"15.1", "15.2", "15.3", "15.4"}
    assert all(rule.sources for rule in knowledge.rules)
    assert all(rule.indicator in ("info", "warning") for rule in knowledge.rules)
