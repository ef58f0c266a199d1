"""The subtype card's words about kidney function (issue 12, items 1 and 2; clinical-knowledge.md
2.3, 2.3a and 11.4): a FHIR chart in, the card out.

"CKD" is stated only when the record shows KDIGO chronicity (a reduced eGFR at least the
knowledge base's chronicity window earlier, a coded stage, dialysis or a transplant): one eGFR,
reported or estimated from one creatinine, is named as the eGFR it is. Windows are read from the
knowledge base, so the tests follow a reviewed edit of thresholds.json.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from calcinosis.assessment import Assessment
from calcinosis.knowledge_base import default_knowledge
from hooks.cards import render_cards
from tests.charts import AS_OF, ICD10, Chart

KB = default_knowledge()
CHRONICITY_DAYS = KB.value("ckd-chronicity-days")
DRAWN_DAYS_AGO = 5
"""The current panel is drawn this many days before the assessment (`Chart.mineral_panel`)."""


def born(years: float) -> str:
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


def subtype_card(assessment: Assessment | None) -> tuple[str, str]:
    """(summary, detail) of the subtype card, rendered as the EHR receives it."""
    assert assessment is not None
    cards = render_cards(assessment, KB, uuid.UUID(int=5), "pat-1")
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "subtype")
    return card.summary, card.detail or ""


def malignancy_chart(earlier_egfr_days_ago: float | None) -> Chart:
    """Hypercalcemia of malignancy (suppressed PTH, low phosphate) with an eGFR of 52 now and,
    optionally, an eGFR of 50 drawn earlier."""
    chart = Chart(gender="male", birth_date=born(64))
    chart.calcinosis()
    chart.condition("C34.90", ICD10, "Malignant neoplasm of unspecified part of lung")
    chart.mineral_panel(11.8, 4.1, 2.3, days_ago=DRAWN_DAYS_AGO, egfr=52)
    chart.lab("2731-8", 12, "pg/mL", DRAWN_DAYS_AGO)
    if earlier_egfr_days_ago is not None:
        chart.lab("98979-8", 50, "mL/min/{1.73_m2}", earlier_egfr_days_ago)
    return chart


def test_a_single_egfr_is_stated_as_an_egfr_not_as_ckd() -> None:
    summary, detail = subtype_card(malignancy_chart(None).assess())
    assert "CKD" not in summary
    assert "eGFR 52" in summary
    assert "CKD G3" not in detail
    assert "hypercalcemia of malignancy" in summary


@pytest.mark.parametrize(
    ("days_before_the_current_draw", "chronic"),
    [(CHRONICITY_DAYS + 1, True), (CHRONICITY_DAYS, True), (CHRONICITY_DAYS - 2, False)],
)
def test_ckd_is_named_only_with_two_egfrs_the_chronicity_window_apart(
    days_before_the_current_draw: float, chronic: bool
) -> None:
    assessment = malignancy_chart(DRAWN_DAYS_AGO + days_before_the_current_draw).assess()
    summary, _ = subtype_card(assessment)
    assert ("in CKD G3a" in summary) is chronic, summary
    assert ("eGFR 52" in summary) is not chronic, summary
    derived = assessment.derived_value("ckd-stage") if assessment else None
    assert derived is not None and derived.ckd_established is chronic


def creatinine_chart(earlier_creatinine_days_ago: float | None) -> Chart:
    """A high phosphate with no eGFR reported: a creatinine of 1.6 mg/dL (CKD-EPI 2021, male, 64
    years: about 48), and optionally an earlier creatinine of 1.7 mg/dL."""
    chart = Chart(gender="male", birth_date=born(64))
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 6.2, days_ago=DRAWN_DAYS_AGO, egfr=None)
    chart.lab("2160-0", 1.6, "mg/dL", DRAWN_DAYS_AGO)
    if earlier_creatinine_days_ago is not None:
        chart.lab("2160-0", 1.7, "mg/dL", earlier_creatinine_days_ago)
    return chart


def test_a_single_creatinine_is_stated_as_an_egfr_not_as_ckd() -> None:
    summary, _ = subtype_card(creatinine_chart(None).assess())
    assert "CKD" not in summary
    assert "eGFR 48" in summary


def test_two_creatinines_the_chronicity_window_apart_are_ckd() -> None:
    summary, _ = subtype_card(creatinine_chart(DRAWN_DAYS_AGO + CHRONICITY_DAYS + 1).assess())
    assert "in CKD G3a" in summary


def test_a_coded_stage_is_ckd_without_a_second_egfr() -> None:
    chart = malignancy_chart(None)
    chart.condition("N18.31", ICD10, "Chronic kidney disease, stage 3a")
    summary, _ = subtype_card(chart.assess())
    assert "in CKD G3a" in summary


# ----- the card says which equation produced an eGFR it shows (2.3a) ----------------------------


def first_screen_evidence(detail: str) -> list[str]:
    """The evidence lines of the detail's first screen (the bullet list after the headline)."""
    block = detail.split("\n\n", 1)[0]
    return [line for line in block.splitlines() if line.startswith("- ")]


def test_an_adult_estimate_names_ckd_epi_2021_and_the_creatinine() -> None:
    summary, detail = subtype_card(creatinine_chart(None).assess())
    assert "estimated eGFR 48" in summary
    lines = first_screen_evidence(detail)
    assert "- eGFR 48 mL/min/1.73 m² (estimated from creatinine 1.6 mg/dL, CKD-EPI 2021)" in "\n".join(lines)
    assert len(lines) <= 3


def test_a_creatinine_in_si_units_is_shown_as_reported() -> None:
    chart = Chart(gender="male", birth_date=born(64))
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 6.2, days_ago=DRAWN_DAYS_AGO, egfr=None)
    chart.lab("14682-9", 141, "umol/L", DRAWN_DAYS_AGO)
    _, detail = subtype_card(chart.assess())
    assert "(estimated from creatinine 141 umol/L (1.6 mg/dL), CKD-EPI 2021)" in detail


def child_chart(height_cm: float | None) -> Chart:
    """A 12-year-old with a high phosphate (above the lab's range) and a creatinine of 1.6 mg/dL,
    no eGFR reported: bedside Schwartz with a height gives 0.413 x 150 / 1.6 = about 39."""
    chart = Chart(gender="female", birth_date=born(12))
    chart.calcinosis()
    chart.lab("17861-6", 9.6, "mg/dL", DRAWN_DAYS_AGO, low=8.8, high=10.8)
    chart.lab("1751-7", 4.2, "g/dL", DRAWN_DAYS_AGO)
    chart.lab("2777-1", 7.9, "mg/dL", DRAWN_DAYS_AGO, low=3.7, high=5.6)
    chart.lab("2160-0", 1.6, "mg/dL", DRAWN_DAYS_AGO)
    if height_cm is not None:
        chart.lab("8302-2", height_cm, "cm", 40)
    return chart


def test_a_child_estimate_names_bedside_schwartz_and_the_height() -> None:
    summary, detail = subtype_card(child_chart(150).assess())
    assert "estimated eGFR 39" in summary and "CKD" not in summary
    assert (
        "eGFR 39 mL/min/1.73 m² (estimated from creatinine 1.6 mg/dL and height 150 cm, bedside Schwartz 2009)"
        in detail
    )
    assert "CKD-EPI" not in detail
    assert len(first_screen_evidence(detail)) <= 3


def test_a_child_without_a_height_gets_no_estimate_and_no_equation() -> None:
    summary, detail = subtype_card(child_chart(None).assess())
    assert "eGFR" not in summary and "estimated from" not in detail


def test_a_reported_egfr_is_not_labelled_as_estimated() -> None:
    summary, detail = subtype_card(malignancy_chart(None).assess())
    assert "with eGFR 52" in summary and "estimated" not in summary
    assert "eGFR 52 mL/min/1.73 m², " in detail
    assert "estimated from" not in detail and "CKD-EPI" not in detail
    # Three evidence lines already (calcium, cause, ...): the first screen stays within 11.4.
    assert len(first_screen_evidence(detail)) <= 3


def differentials_detail(assessment: Assessment | None) -> str:
    assert assessment is not None
    cards = render_cards(assessment, KB, uuid.UUID(int=6), "pat-1")
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "differentials")
    return card.detail or ""


@pytest.mark.parametrize("reported_egfr", [None, 110])
def test_no_advanced_kidney_disease_says_which_equation_when_estimated(reported_egfr: float | None) -> None:
    # Issue 12 item 1: a 17-year-old, phosphate 7.1 mg/dL, normal calcium, creatinine 0.7 mg/dL and a
    # height of 165 cm: hyperphosphatemic tumoral calcinosis is raised on an estimated eGFR of 97.
    chart = Chart(gender="male", birth_date=born(17))
    chart.calcinosis(body_sites=["Right hip"])
    chart.mineral_panel(9.6, 4.4, 7.1, days_ago=DRAWN_DAYS_AGO, egfr=reported_egfr)
    chart.lab("2160-0", 0.7, "mg/dL", DRAWN_DAYS_AGO)
    chart.lab("8302-2", 165, "cm", 30)
    detail = differentials_detail(chart.assess())
    assert "Hyperphosphatemic familial tumoral calcinosis: raised by" in detail
    estimate = "eGFR 97 mL/min/1.73 m² (estimated from creatinine 0.7 mg/dL and height 165 cm, bedside Schwartz 2009)"
    assert (estimate in detail) is (reported_egfr is None)
    if reported_egfr is not None:
        assert "estimated from" not in detail
