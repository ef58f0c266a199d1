"""The calciphylaxis risk section and "advanced kidney disease" need established CKD (issue 12,
item 3; clinical-knowledge.md 2.3, 2.3a, 9 and 11.4): a FHIR chart in, the assessment out.

The risk factors are shown on dialysis, in CKD G4-G5, or when calciphylaxis is suspected. CKD is
a diagnosis that needs KDIGO chronicity (a reduced eGFR at least the knowledge base's chronicity
window earlier), a coded stage, dialysis or a transplant: one eGFR of 25, or one drawn during a
coded acute kidney injury, is not advanced CKD. The chronicity window is read from the knowledge
base, so the tests follow a reviewed edit of thresholds.json.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from calcinosis.assessment import Assessment, Subtype
from calcinosis.knowledge_base import default_knowledge
from hooks.cards import render_cards
from tests.charts import AS_OF, ICD10, Chart

KB = default_knowledge()
CHRONICITY_DAYS = KB.value("ckd-chronicity-days")
DRAWN_DAYS_AGO = 5
"""The current panel is drawn this many days before the assessment (`Chart.mineral_panel`)."""
RISK_LINE = "Calciphylaxis risk factors:"


def born(years: float) -> str:
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


def warfarin_chart(egfr: float = 25) -> Chart:
    """Calcinosis cutis on long-term warfarin (a major calciphylaxis risk factor, section 9) with
    normal calcium and phosphate and an eGFR of `egfr` drawn with the current panel."""
    chart = Chart(gender="female", birth_date=born(70))
    chart.calcinosis()
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")
    chart.mineral_panel(9.3, 4.0, 3.9, days_ago=DRAWN_DAYS_AGO, egfr=egfr)
    return chart


def subtype_text(assessment: Assessment) -> str:
    """Summary and detail of the subtype card, rendered as the EHR receives it."""
    cards = render_cards(assessment, KB, uuid.UUID(int=7), "pat-1")
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "subtype")
    return f"{card.summary}\n{card.detail or ''}"


def assess(chart: Chart) -> Assessment:
    assessment = chart.assess()
    assert assessment is not None
    return assessment


def assert_risk_section(assessment: Assessment, shown: bool) -> None:
    assert assessment.calciphylaxis_risk.applicable is shown
    assert any(f.factor_id == "warfarin-long-term" for f in assessment.calciphylaxis_risk.major), (
        assessment.calciphylaxis_risk
    )
    assert (RISK_LINE in subtype_text(assessment)) is shown, subtype_text(assessment)


def test_a_single_egfr_of_25_opens_no_risk_section_and_is_not_advanced_ckd() -> None:
    assessment = assess(warfarin_chart(25))
    assert_risk_section(assessment, False)
    derived = assessment.derived_value("ckd-stage")
    assert derived is not None and derived.category == "G4" and not derived.ckd_established
    # Not "advanced kidney disease" against idiopathic calcinosis either.
    idiopathic = assessment.subtype(Subtype.IDIOPATHIC)
    assert all(f.rule_id != "CC-IDIO-CKD" for f in idiopathic.findings)


@pytest.mark.parametrize(
    ("days_before_the_current_draw", "chronic"),
    [(CHRONICITY_DAYS + 1, True), (CHRONICITY_DAYS, True), (CHRONICITY_DAYS - 2, False)],
)
def test_two_egfrs_below_30_the_chronicity_window_apart_open_the_risk_section(
    days_before_the_current_draw: float, chronic: bool
) -> None:
    chart = warfarin_chart(25)
    chart.lab("98979-8", 27, "mL/min/{1.73_m2}", DRAWN_DAYS_AGO + days_before_the_current_draw)
    assessment = assess(chart)
    assert_risk_section(assessment, chronic)
    derived = assessment.derived_value("ckd-stage")
    assert derived is not None and derived.ckd_established is chronic


@pytest.mark.parametrize(
    ("code", "display", "egfr"),
    [
        ("N18.4", "Chronic kidney disease, stage 4 (severe)", 25),
        ("N18.5", "Chronic kidney disease, stage 5", 12),
    ],
)
def test_a_coded_ckd_stage_4_or_5_opens_the_risk_section(code: str, display: str, egfr: float) -> None:
    chart = warfarin_chart(egfr)
    chart.condition(code, ICD10, display)
    assert_risk_section(assess(chart), True)


def test_a_coded_ckd_stage_3_with_one_egfr_of_40_opens_no_risk_section() -> None:
    """Coded CKD makes the eGFR's category a CKD stage, but G3 is not G4-G5."""
    chart = warfarin_chart(40)
    chart.condition("N18.30", ICD10, "Chronic kidney disease, stage 3 unspecified")
    assert_risk_section(assess(chart), False)


def test_dialysis_opens_the_risk_section() -> None:
    chart = warfarin_chart(9)
    chart.dialysis(since_days=400)
    assessment = assess(chart)
    assert assessment.calciphylaxis_risk.on_dialysis
    assert assessment.calciphylaxis_risk.applicable


def test_a_single_egfr_of_25_during_a_coded_aki_opens_no_risk_section() -> None:
    chart = warfarin_chart(25)
    chart.condition("N17.9", ICD10, "Acute kidney failure, unspecified", onset_days_ago=DRAWN_DAYS_AGO + 2)
    assessment = assess(chart)
    assert_risk_section(assessment, False)
    derived = assessment.derived_value("ckd-stage")
    assert derived is not None and not derived.ckd_established


@pytest.mark.parametrize("chronic", [False, True])
def test_ischemic_lesions_with_one_egfr_of_25_are_not_called_uremic_nor_without_kidney_disease(chronic: bool) -> None:
    """Suspected calciphylaxis either way; the setting is uremic only with established CKD, and a
    single low eGFR is named as such rather than as "without advanced kidney disease"."""
    chart = warfarin_chart(25)
    chart.condition(None, text="Painful retiform purpura with necrotic ulcers, both thighs")
    if chronic:
        chart.lab("98979-8", 27, "mL/min/{1.73_m2}", DRAWN_DAYS_AGO + CHRONICITY_DAYS + 1)
    assessment = assess(chart)
    assert assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.setting == ("uremic" if chronic else "non-uremic")
    statements = " ".join(f.statement for f in assessment.subtype(Subtype.CALCIPHYLAXIS).findings)
    assert "without advanced kidney disease" not in statements
    assert ("G4-G5 range whose chronicity the record does not show" in statements) is not chronic, statements
    assert assessment.calciphylaxis_risk.applicable
