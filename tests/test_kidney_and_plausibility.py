"""Scenarios for kidney function without a reported eGFR (clinical-knowledge.md 2.3, 2.3a) and for
physiologically impossible values (issue 12, items 1, 2 and 7): a FHIR chart in, the assessment out.

Every new threshold is tested on both sides, with the limit read from the knowledge base so that
the test follows a reviewed edit of thresholds.json.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from calcinosis import Subtype
from calcinosis.assessment import Assessment
from calcinosis.knowledge_base import default_knowledge
from tests.charts import AS_OF, ICD10, Chart

KB = default_knowledge()


def born(years: float) -> str:
    """A birth date `years` before the assessment moment."""
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


def kidney(assessment: Assessment | None):  # type: ignore[no-untyped-def]
    assert assessment is not None
    return assessment.derived_value("ckd-stage")


def rules(assessment: Assessment | None, subtype: Subtype) -> set[str]:
    assert assessment is not None
    return set(assessment.subtype(subtype).rule_ids)


# ----- item 7: plausibility ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calcium", "unit"),
    [(1e308, "mg/dL"), (1e308, "mmol/L"), (-16.4, "mg/dL"), (0.0, "mg/dL")],
)
def test_impossible_calcium_is_unusable_counted_and_never_a_card(calcium: float, unit: str) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", calcium, unit)
    chart.lab("1751-7", 3.9, "g/dL")
    chart.lab("2777-1", 4.0, "mg/dL")
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.data_quality.implausible_values == 1
    assert any("outside physiological limits" in issue for issue in assessment.data_quality.issues)
    assert assessment.derived_value("calcium-phosphate-product") is None
    assert assessment.derived_value("corrected-calcium") is None
    assert "CC-MET-CA" not in rules(assessment, Subtype.METASTATIC)
    assert assessment.subtype(Subtype.METASTATIC).likelihood.value == "undetermined"
    assert not assessment.severe_hypercalcemia


def test_negative_albumin_does_not_correct_calcium_into_nonsense() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, -2.0, 3.6)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.data_quality.implausible_values == 1
    assert assessment.derived_value("corrected-calcium") is None
    total = assessment.derived_value("total-calcium")
    assert total is not None and total.value == 9.4


@pytest.mark.parametrize(
    "analyte_code,threshold_id,unit",
    [("17861-6", "plausible-max-calcium-total", "mg/dL"), ("2777-1", "plausible-max-phosphate", "mg/dL")],
)
def test_plausible_maximum_on_both_sides(analyte_code: str, threshold_id: str, unit: str) -> None:
    limit = KB.value(threshold_id)
    at_limit = Chart()
    at_limit.calcinosis()
    at_limit.lab(analyte_code, limit, unit)
    above = Chart()
    above.calcinosis()
    above.lab(analyte_code, limit * 1.01, unit)
    at = at_limit.assess()
    over = above.assess()
    assert at is not None and over is not None
    assert at.data_quality.implausible_values == 0
    assert over.data_quality.implausible_values == 1


def test_zero_is_impossible_but_a_small_positive_value_is_kept() -> None:
    zero = Chart()
    zero.calcinosis()
    zero.lab("2777-1", 0.0, "mg/dL")
    small = Chart()
    small.calcinosis()
    small.lab("2777-1", 0.1, "mg/dL")
    assert zero.assess().data_quality.implausible_values == 1  # type: ignore[union-attr]
    assert small.assess().data_quality.implausible_values == 0  # type: ignore[union-attr]


def test_an_impossible_reference_range_is_dropped_and_the_fixed_cut_off_applies() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", 11.5, "mg/dL", high=1e308)
    chart.lab("17861-6", 11.4, "mg/dL", 20)
    chart.lab("1751-7", 4.1, "g/dL")
    chart.lab("2777-1", 3.0, "mg/dL")
    assessment = chart.assess()
    assert "CC-MET-CA" in rules(assessment, Subtype.METASTATIC)


# ----- item 1: kidney function without a reported eGFR -------------------------------------------


def test_adult_creatinine_gives_a_ckd_epi_2021_estimate_with_the_equation_named() -> None:
    # NKF calculator: male, 50 years, creatinine 1.0 mg/dL -> about 92 mL/min/1.73 m².
    chart = Chart(gender="male", birth_date=born(50))
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6, egfr=None)
    chart.lab("2160-0", 1.0, "mg/dL")
    derived = kidney(chart.assess())
    assert derived is not None
    assert derived.method == "CKD-EPI 2021"
    assert derived.value == pytest.approx(91.7, abs=0.5)
    assert derived.category == "G1"
    assert "CKD-EPI 2021" in derived.formula and "creatinine 1 mg/dL" in derived.formula


def test_female_coefficients_and_category_boundary_at_45() -> None:
    # 64-year-old woman, creatinine 1.3 mg/dL: 142 x (1.3/0.7)^-1.2 x 0.9938^64 x 1.012 = about 46 (G3a).
    chart = Chart(gender="female", birth_date=born(64))
    chart.calcinosis()
    chart.lab("2160-0", 1.3, "mg/dL")
    derived = kidney(chart.assess())
    assert derived is not None and derived.value == pytest.approx(46.0, abs=0.6)
    assert derived.category == "G3a"
    worse = Chart(gender="female", birth_date=born(64))
    worse.calcinosis()
    worse.lab("2160-0", 1.4, "mg/dL")
    assert kidney(worse.assess()).category == "G3b"  # type: ignore[union-attr]


def test_a_reported_egfr_always_wins_over_the_estimate() -> None:
    chart = Chart(gender="male", birth_date=born(50))
    chart.calcinosis()
    chart.lab("2160-0", 1.0, "mg/dL")
    chart.lab("98979-8", 38, "mL/min/{1.73_m2}")
    derived = kidney(chart.assess())
    assert derived is not None and derived.method == "reported eGFR" and derived.value == 38


def test_adult_without_administrative_sex_gets_no_estimate() -> None:
    chart = Chart(gender="unknown", birth_date=born(50))
    chart.calcinosis()
    chart.lab("2160-0", 1.0, "mg/dL")
    assert kidney(chart.assess()) is None


def test_adolescent_with_height_gets_bedside_schwartz_and_hftc_is_raised() -> None:
    # The issue's 17-year-old: phosphate 7.1 mg/dL, normal calcium, normal creatinine.
    chart = Chart(gender="male", birth_date=born(17))
    chart.calcinosis(body_sites=["Right hip"])
    chart.lab("17861-6", 9.6, "mg/dL", low=8.8, high=10.6)
    chart.lab("1751-7", 4.4, "g/dL", low=3.5, high=5.0)
    chart.lab("2777-1", 7.1, "mg/dL", low=2.7, high=4.5)
    chart.lab("2160-0", 0.8, "mg/dL", low=0.5, high=1.0)
    chart.lab("8302-2", 170, "cm", 100)
    assessment = chart.assess()
    derived = kidney(assessment)
    assert derived is not None and derived.method == "bedside Schwartz 2009"
    assert derived.value == pytest.approx(0.413 * 170 / 0.8, abs=0.1)
    assert derived.category == "G2"
    assert assessment is not None
    raised = {d.differential_id for d in assessment.differentials if d.raised_by}
    assert "hyperphosphatemic-tumoral-calcinosis" in raised


@pytest.mark.parametrize(("height_days_before", "estimated"), [(360, True), (370, False)])
def test_height_must_be_measured_within_a_year(height_days_before: int, estimated: bool) -> None:
    window = KB.value("height-lookback-days")
    assert (height_days_before <= window) is estimated
    chart = Chart(gender="female", birth_date=born(10))
    chart.calcinosis()
    chart.lab("2160-0", 0.5, "mg/dL", 5, low=0.3, high=0.7)
    chart.lab("8302-2", 138, "cm", 5 + height_days_before)
    derived = kidney(chart.assess())
    assert derived is not None
    if estimated:
        assert derived.method == "bedside Schwartz 2009"
    else:
        assert derived.method is None and derived.value is None
        assert derived.note is not None and "not reduced" in derived.note


@pytest.mark.parametrize(("age", "method"), [(17.9, "bedside Schwartz 2009"), (18.1, "CKD-EPI 2021")])
def test_adult_age_boundary_chooses_the_equation(age: float, method: str) -> None:
    chart = Chart(gender="female", birth_date=born(age))
    chart.calcinosis()
    chart.lab("2160-0", 0.7, "mg/dL")
    chart.lab("8302-2", 165, "cm", 30)
    assert kidney(chart.assess()).method == method  # type: ignore[union-attr]


@pytest.mark.parametrize(("age", "estimated"), [(0.9, False), (1.1, True)])
def test_no_equation_under_one_year(age: float, estimated: bool) -> None:
    chart = Chart(gender="female", birth_date=born(age))
    chart.calcinosis()
    chart.lab("2160-0", 0.3, "mg/dL", low=0.1, high=0.4)
    chart.lab("8302-2", 75, "cm", 10)
    derived = kidney(chart.assess())
    assert derived is not None
    assert (derived.method == "bedside Schwartz 2009") is estimated
    if not estimated:
        assert derived.note is not None and "under 1 year" in derived.note


def test_child_creatinine_above_the_lab_range_without_height_leaves_kidney_function_unknown() -> None:
    chart = Chart(gender="female", birth_date=born(8))
    chart.calcinosis()
    chart.lab("2160-0", 1.4, "mg/dL", low=0.3, high=0.7)
    assert kidney(chart.assess()) is None


def test_creatinine_during_a_coded_aki_is_not_estimated_or_staged() -> None:
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.condition("N17.9", ICD10, "Acute kidney failure, unspecified", onset_days_ago=10)
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=None)
    chart.lab("2160-0", 3.1, "mg/dL")
    assessment = chart.assess()
    derived = kidney(assessment)
    assert derived is not None
    assert derived.value is None and derived.category is None
    assert derived.note is not None and "acute kidney injury" in derived.note
    assert "CC-MET-CKD" not in rules(assessment, Subtype.METASTATIC)


def test_aki_that_abated_before_the_draw_does_not_block_the_estimate() -> None:
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    aki = chart.condition("N17.9", ICD10, "Acute kidney failure, unspecified", onset_days_ago=60, clinical="resolved")
    aki["abatementDateTime"] = (AS_OF - timedelta(days=40)).isoformat()
    chart.lab("2160-0", 1.0, "mg/dL")
    assert kidney(chart.assess()).method == "CKD-EPI 2021"  # type: ignore[union-attr]


def test_a_single_reported_egfr_during_aki_is_not_called_ckd() -> None:
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.condition("N17.0", ICD10, "Acute kidney failure with tubular necrosis", onset_days_ago=8)
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=38)
    assessment = chart.assess()
    assert kidney(assessment).category is None  # type: ignore[union-attr]
    assert "CC-MET-CKD" not in rules(assessment, Subtype.METASTATIC)


@pytest.mark.parametrize(("earlier_days_ago", "chronic"), [(96, True), (93, False)])
def test_ckd_is_stated_only_with_three_months_of_chronicity(earlier_days_ago: int, chronic: bool) -> None:
    # The current eGFR is 5 days old; the earlier one must be at least 90 days before it.
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=40)
    chart.lab("98979-8", 44, "mL/min/{1.73_m2}", earlier_days_ago)
    assessment = chart.assess()
    assert ("CC-MET-CKD" in rules(assessment, Subtype.METASTATIC)) is chronic


def test_chronicity_is_shown_by_estimates_from_older_creatinines_too() -> None:
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=None)
    chart.lab("2160-0", 1.9, "mg/dL", 5)
    chart.lab("2160-0", 1.8, "mg/dL", 200)
    assessment = chart.assess()
    derived = kidney(assessment)
    assert derived is not None and derived.category == "G3b" and derived.method == "CKD-EPI 2021"
    assert "CC-MET-CKD" in rules(assessment, Subtype.METASTATIC)


# ----- 2.3a: a creatinine rising by the KDIGO acute kidney injury criteria --------------------------

RISE = KB.value("aki-creatinine-rise")
RISE_HOURS = KB.value("aki-creatinine-rise-hours")
RATIO = KB.value("aki-creatinine-ratio")
RATIO_DAYS = KB.value("aki-creatinine-ratio-days")
BASELINE = 1.0


def rising_chart(latest: float, earlier_hours_before: float) -> Chart:
    """An adult with no eGFR reported: a creatinine now (5 days before the assessment) and a
    baseline of 1.0 mg/dL some hours before it."""
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=None)
    chart.lab("2160-0", latest, "mg/dL", 5)
    chart.lab("2160-0", BASELINE, "mg/dL", 5 + earlier_hours_before / 24)
    return chart


@pytest.mark.parametrize(
    ("latest", "hours_before", "rising"),
    [
        (BASELINE + RISE, RISE_HOURS - 8, True),  # the absolute rise, inside its window
        (BASELINE + RISE - 0.01, RISE_HOURS - 8, False),  # just below it
        (BASELINE + RISE, RISE_HOURS + 2, False),  # the same rise, just outside its window
        (BASELINE * RATIO, RATIO_DAYS * 24 - 12, True),  # the relative rise, inside its window
        (BASELINE * RATIO - 0.01, RATIO_DAYS * 24 - 12, False),  # just below it
        (BASELINE * RATIO, RATIO_DAYS * 24 + 12, False),  # the same rise, just outside its window
    ],
)
def test_a_creatinine_rising_by_the_aki_criteria_is_not_estimated(
    latest: float, hours_before: float, rising: bool
) -> None:
    """Only a steady creatinine gives an eGFR (2.3a): a rise meeting the KDIGO acute kidney injury
    criteria blocks the estimate, like a coded AKI, and the record says why."""
    assessment = rising_chart(latest, hours_before).assess()
    derived = kidney(assessment)
    assert derived is not None
    if rising:
        assert derived.value is None and derived.category is None
        assert derived.note is not None and "acute kidney injury by creatinine" in derived.note
        assert re.search(rf"rose from 1(\.0)? mg/dL to {latest:.1f} mg/dL", derived.note), derived.note
        assert len([e for e in derived.inputs if e.kind == "creatinine"]) == 2  # both draws are cited
    else:
        assert derived.value is not None and derived.method == "CKD-EPI 2021"
        assert "acute kidney injury" not in (derived.note or "")


def test_a_falling_creatinine_is_no_aki() -> None:
    """Recovery (creatinine falling) does not block the estimate."""
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.lab("2160-0", 1.0, "mg/dL", 5)
    chart.lab("2160-0", 2.0, "mg/dL", 6)
    assert kidney(chart.assess()).method == "CKD-EPI 2021"  # type: ignore[union-attr]


def test_a_reported_egfr_drawn_while_the_creatinine_rose_is_not_called_ckd() -> None:
    """The lab's eGFR is computed from the same creatinine: during a rise it is not staged, and an
    old eGFR below 60 taken during an earlier rise does not show chronicity either."""
    chart = Chart(gender="male", birth_date=born(60))
    chart.calcinosis()
    chart.mineral_panel(9.0, 4.1, 6.2, egfr=38)
    chart.lab("2160-0", 2.1, "mg/dL", 5)
    chart.lab("2160-0", 1.2, "mg/dL", 6)
    chart.lab("98979-8", 44, "mL/min/{1.73_m2}", 200)
    assessment = chart.assess()
    derived = kidney(assessment)
    assert derived.category is None  # type: ignore[union-attr]
    assert "not staged as chronic kidney disease" in (derived.note or "")  # type: ignore[union-attr]
    assert "CC-MET-CKD" not in rules(assessment, Subtype.METASTATIC)
    steady = Chart(gender="male", birth_date=born(60))
    steady.calcinosis()
    steady.mineral_panel(9.0, 4.1, 6.2, egfr=38)
    steady.lab("2160-0", 2.1, "mg/dL", 5)
    steady.lab("2160-0", 2.0, "mg/dL", 6)
    steady.lab("98979-8", 44, "mL/min/{1.73_m2}", 200)
    assert kidney(steady.assess()).category == "G3b"  # type: ignore[union-attr]
