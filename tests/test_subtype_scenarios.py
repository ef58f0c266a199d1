"""Clinical scenarios: a FHIR chart in, the expected assessment out (clinical-knowledge.md 4-5).

Each threshold is tested on both sides. Charts are built with `tests.charts`; what the service sees
is only the FHIR Bundle.
"""

from __future__ import annotations

import pytest

from calcinosis import Subtype
from calcinosis.assessment import Assessment
from tests.charts import ICD10, SNOMED, Chart


def likelihoods(assessment: Assessment | None) -> dict[str, str]:
    assert assessment is not None, "expected an assessment"
    return {s.subtype.value: s.likelihood.value for s in assessment.subtypes}


def rule_ids(assessment: Assessment, subtype: Subtype) -> set[str]:
    return set(assessment.subtype(subtype).rule_ids)


# ----- entry criteria and the silent case ----------------------------------------------------


def test_no_calcinosis_is_silent_even_with_advanced_ckd() -> None:
    chart = Chart()
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.mineral_panel(10.9, 3.1, 7.9, egfr=9)
    assert chart.assess() is None


@pytest.mark.parametrize(
    ("clinical", "verification", "silent"),
    [
        ("active", "confirmed", False),
        ("resolved", "confirmed", True),
        ("inactive", "confirmed", True),
        ("active", "refuted", True),
        ("active", "entered-in-error", True),
        (None, None, False),
    ],
)
def test_condition_statuses_decide_entry(clinical: str | None, verification: str | None, silent: bool) -> None:
    chart = Chart()
    chart.calcinosis(clinical=clinical, verification=verification)
    assert (chart.assess() is None) is silent


def test_icd10_only_problem_list_enters() -> None:
    chart = Chart()
    chart.condition("L942", ICD10, "Calcinosis cutis")  # undotted, as some EHRs send it
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.entry[0].code == f"{ICD10}|L942"


def test_snomed_only_calciphylaxis_enters_and_is_likely() -> None:
    chart = Chart()
    chart.condition("237900002", SNOMED, "Calciphylaxis")
    assessment = chart.assess()
    assert likelihoods(assessment)["calciphylaxis"] == "likely"


def test_calcinosis_text_without_a_known_code_enters() -> None:
    chart = Chart()
    chart.condition("LOCAL-123", "http://hospital.example/codes", "Calcinosis cutis of finger")
    assert chart.assess() is not None


def test_e83_59_alone_is_not_calciphylaxis_but_with_text_it_is() -> None:
    broad = Chart()
    broad.condition("E83.59", ICD10, "Other disorders of calcium metabolism")
    assert broad.assess() is None
    named = Chart()
    named.condition("E83.59", ICD10, "Other disorders of calcium metabolism", text="Calciphylaxis")
    assert likelihoods(named.assess())["calciphylaxis"] == "likely"


# ----- dystrophic ------------------------------------------------------------------------------


def test_dystrophic_in_systemic_sclerosis_with_normal_labs() -> None:
    chart = Chart()
    chart.calcinosis(body_sites=["Right thumb"])
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.medication("Omeprazole 20 MG Oral Capsule")
    assessment = chart.assess()
    assert likelihoods(assessment) == {
        "dystrophic": "likely",
        "metastatic": "unlikely",
        "idiopathic": "unlikely",
        "iatrogenic": "unlikely",
        "calciphylaxis": "unlikely",
    }
    assert assessment is not None
    assert {"CC-DYS-LABS", "CC-DYS-CAUSE"} <= rule_ids(assessment, Subtype.DYSTROPHIC)
    cause = next(f for f in assessment.subtype(Subtype.DYSTROPHIC).findings if f.rule_id == "CC-DYS-CAUSE")
    assert cause.evidence[0].code == f"{ICD10}|M34.1"
    assert assessment.distribution.label.value == "circumscripta"


def test_dermatomyositis_snomed_only_is_a_dystrophic_cause() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("396230008", SNOMED, "Dermatomyositis")
    chart.mineral_panel(9.0, 4.0, 3.9)
    assert likelihoods(chart.assess())["dystrophic"] == "likely"


def test_mixed_picture_ssc_on_dialysis() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.0", ICD10, "Progressive systemic sclerosis")
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=700)
    chart.mineral_panel(9.8, 3.9, 7.6, egfr=8)
    result = likelihoods(chart.assess())
    assert result["metastatic"] == "likely"
    assert result["dystrophic"] == "possible"


# ----- metastatic: each threshold on both sides ------------------------------------------------


def test_metastatic_with_ckd_g5d_and_high_caxp() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=900)
    chart.mineral_panel(10.2, 4.0, 7.5, egfr=7)
    assessment = chart.assess()
    assert likelihoods(assessment)["metastatic"] == "likely"
    assert assessment is not None
    assert {"CC-MET-P", "CC-MET-CAXP", "CC-MET-CKD"} <= rule_ids(assessment, Subtype.METASTATIC)
    caxp = assessment.derived_value("calcium-phosphate-product")
    assert caxp is not None and caxp.value == pytest.approx(76.5)
    assert {c.threshold for c in caxp.comparisons} == {"caxp-metastatic", "caxp-kdoqi-target"}
    stage = assessment.derived_value("ckd-stage")
    assert stage is not None and stage.category == "G5D"


@pytest.mark.parametrize(("phosphate", "expected"), [(7.0, False), (7.001, True)])
def test_caxp_threshold_70_both_sides(phosphate: float, expected: bool) -> None:
    # Ca 10.0 (lab range to 10.5) and P below its lab upper limit of 8: only Ca x P can fire.
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", 10.0, "mg/dL", 3, low=8.5, high=10.5)
    chart.lab("1751-7", 4.0, "g/dL", 3)
    chart.lab("2777-1", phosphate, "mg/dL", 3, high=8.0)
    assessment = chart.assess()
    assert assessment is not None
    assert ("CC-MET-CAXP" in rule_ids(assessment, Subtype.METASTATIC)) is expected


@pytest.mark.parametrize(("phosphate", "high"), [(4.5, False), (4.6, True)])
def test_phosphate_fallback_upper_limit_4_5(phosphate: float, high: bool) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.2, 4.2, phosphate)
    assessment = chart.assess()
    assert assessment is not None
    assert ("CC-MET-P" in rule_ids(assessment, Subtype.METASTATIC)) is high


@pytest.mark.parametrize(
    ("calcium", "albumin", "high"), [(10.4, 4.0, False), (10.5, 4.0, True), (9.6, 3.1, False), (9.8, 3.1, True)]
)
def test_corrected_calcium_fallback_upper_limit(calcium: float, albumin: float, high: bool) -> None:
    # Corrected: 9.6 + 0.8 x (4.0 - 3.1) = 10.32 (not above 10.4); 9.8 -> 10.52 (above).
    chart = Chart()
    chart.calcinosis()
    for days_ago in (3, 20):
        chart.lab("17861-6", calcium, "mg/dL", days_ago)
        chart.lab("1751-7", albumin, "g/dL", days_ago)
    chart.lab("2777-1", 3.5, "mg/dL", 3)
    assessment = chart.assess()
    assert assessment is not None
    assert ("CC-MET-CA" in rule_ids(assessment, Subtype.METASTATIC)) is high
    corrected = assessment.derived_value("corrected-calcium")
    assert corrected is not None
    assert corrected.value == pytest.approx(calcium + 0.8 * max(0.0, 4.0 - albumin), abs=0.01)


def test_lab_reference_range_beats_the_fallback() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", 10.3, "mg/dL", 3, low=8.6, high=10.2)
    chart.lab("17861-6", 10.35, "mg/dL", 30, low=8.6, high=10.2)
    chart.lab("1751-7", 4.2, "g/dL", 3)
    chart.lab("1751-7", 4.2, "g/dL", 30)
    chart.lab("2777-1", 3.4, "mg/dL", 3)
    assessment = chart.assess()
    assert assessment is not None
    calcium = assessment.derived_value("corrected-calcium")
    assert calcium is not None and calcium.category == "high"
    assert calcium.comparisons[0].basis == "lab reference range"


def test_single_high_calcium_needs_a_repeat() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(11.2, 4.1, 3.5)
    assessment = chart.assess()
    assert likelihoods(assessment)["metastatic"] == "possible"
    assert assessment is not None and "CC-MET-REPEAT" in rule_ids(assessment, Subtype.METASTATIC)


def test_ionized_calcium_is_preferred_and_confirms() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("E21.0", ICD10, "Primary hyperparathyroidism")
    chart.mineral_panel(10.1, 4.1, 3.5)
    chart.lab("1994-3", 1.45, "mmol/L", 4)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.derived_value("ionized-calcium") is not None
    assert likelihoods(assessment)["metastatic"] == "likely"


def test_si_units_give_the_same_assessment_as_conventional_units() -> None:
    conventional = Chart()
    conventional.calcinosis()
    conventional.condition("N18.5", ICD10, "Chronic kidney disease, stage 5")
    conventional.mineral_panel(10.0, 3.0, 7.2, egfr=12)
    si = Chart()
    si.calcinosis()
    si.condition("N18.5", ICD10, "Chronic kidney disease, stage 5")
    si.lab("2000-8", 10.0 / 4.008, "mmol/L", 5)
    si.lab("1751-7", 30.0, "g/L", 5)
    si.lab("14879-1", 7.2 / 3.097, "mmol/L", 5)
    si.lab("98979-8", 12, "mL/min/{1.73_m2}", 5)
    a, b = conventional.assess(), si.assess()
    assert likelihoods(a) == likelihoods(b)
    assert a is not None and b is not None
    caxp_a, caxp_b = a.derived_value("calcium-phosphate-product"), b.derived_value("calcium-phosphate-product")
    assert caxp_a is not None and caxp_b is not None and caxp_a.value == pytest.approx(caxp_b.value, abs=0.2)


# ----- insufficient data -----------------------------------------------------------------------


def test_no_labs_leaves_dystrophic_and_idiopathic_undetermined() -> None:
    chart = Chart()
    chart.calcinosis()
    assessment = chart.assess()
    result = likelihoods(assessment)
    assert result["dystrophic"] == result["idiopathic"] == result["metastatic"] == "undetermined"
    assert assessment is not None
    assert "CC-GATE" in rule_ids(assessment, Subtype.DYSTROPHIC)
    gaps = {g.item_id for g in assessment.workup}
    assert {
        "serum-calcium",
        "serum-albumin",
        "serum-phosphate",
        "creatinine-egfr",
        "pth-intact",
        "plain-radiograph",
    } <= gaps


@pytest.mark.parametrize(("days_ago", "determined"), [(89, True), (91, False)])
def test_gate_window_is_90_days(days_ago: float, determined: bool) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6, days_ago=days_ago)
    result = likelihoods(chart.assess())
    assert (result["dystrophic"] != "undetermined") is determined


def test_calcium_without_albumin_does_not_pass_the_gate() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", 9.4, "mg/dL", 5)
    chart.lab("2777-1", 3.6, "mg/dL", 5)
    assessment = chart.assess()
    assert likelihoods(assessment)["dystrophic"] == "undetermined"
    assert assessment is not None
    assert any("albumin" in m for m in assessment.subtype(Subtype.DYSTROPHIC).missing)


def test_unknown_unit_makes_the_value_unusable_and_says_so() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("17861-6", 2.4, "mEq/dL", 5)
    chart.lab("1751-7", 4.0, "g/dL", 5)
    chart.lab("2777-1", 3.6, "mg/dL", 5)
    assessment = chart.assess()
    assert likelihoods(assessment)["dystrophic"] == "undetermined"
    assert assessment is not None
    assert any("mEq/dL" in m for m in assessment.subtype(Subtype.DYSTROPHIC).missing)
    assert any("mEq/dL" in issue for issue in assessment.data_quality.issues)


# ----- idiopathic --------------------------------------------------------------------------------


def test_idiopathic_is_possible_only_as_exclusion() -> None:
    chart = Chart()
    chart.calcinosis(body_sites=["Scrotum"])
    chart.mineral_panel(9.3, 4.3, 3.4)
    chart.medication("Ibuprofen 400 MG Oral Tablet")
    chart.procedure("Appendectomy", 3000)
    assessment = chart.assess()
    result = likelihoods(assessment)
    assert result["idiopathic"] == "possible"
    assert result["dystrophic"] == "possible"
    assert result["metastatic"] == "unlikely"
    assert assessment is not None and "CC-IDIO-EXCLUSION" in rule_ids(assessment, Subtype.IDIOPATHIC)


def test_idiopathic_unlikely_in_advanced_ckd() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("N18.4", ICD10, "Chronic kidney disease, stage 4 (severe)")
    chart.mineral_panel(9.3, 4.3, 3.4, egfr=22)
    chart.medication("Ibuprofen 400 MG Oral Tablet")
    assert likelihoods(chart.assess())["idiopathic"] == "unlikely"


# ----- iatrogenic --------------------------------------------------------------------------------


@pytest.mark.parametrize(("days_before_onset", "expected"), [(20, "likely"), (200, "possible"), (400, "unlikely")])
def test_iv_calcium_gluconate_before_onset(days_before_onset: float, expected: str) -> None:
    chart = Chart(birth_date="2026-02-01")
    chart.calcinosis(onset_days_ago=10, body_sites=["Left forearm"])
    chart.mineral_panel(9.6, 3.9, 5.0)
    chart.medication(
        "Calcium Gluconate 100 MG/ML Injectable Solution",
        10 + days_before_onset,
        kind="MedicationAdministration",
        route="Intravenous",
    )
    assert likelihoods(chart.assess())["iatrogenic"] == expected


def test_oral_calcium_is_not_an_iv_exposure() -> None:
    chart = Chart()
    chart.calcinosis(onset_days_ago=10)
    chart.medication("Calcium gluconate 500 MG Oral Tablet", 30, kind="MedicationStatement", route="Oral")
    assert likelihoods(chart.assess())["iatrogenic"] == "unlikely"


def test_no_medication_or_procedure_data_leaves_iatrogenic_undetermined() -> None:
    chart = Chart()
    chart.calcinosis()
    assert likelihoods(chart.assess())["iatrogenic"] == "undetermined"


def test_eeg_before_onset_makes_iatrogenic_possible() -> None:
    chart = Chart()
    chart.calcinosis(onset_days_ago=40, body_sites=["Scalp"])
    chart.procedure("Electroencephalogram (EEG)", 100)
    assert likelihoods(chart.assess())["iatrogenic"] == "possible"


# ----- calciphylaxis ----------------------------------------------------------------------------


def test_uremic_risk_pattern_without_lesions_is_elevated_risk_not_possible_calciphylaxis() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=6 * 365)  # > 5 years: major
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")  # > 3 months: major
    chart.mineral_panel(9.5, 3.9, 5.2, egfr=6)
    assessment = chart.assess()
    assert likelihoods(assessment)["calciphylaxis"] == "unlikely"
    assert assessment is not None and assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.status.value == "elevated-risk"
    assert assessment.calciphylaxis.skin_exam_needed and not assessment.calciphylaxis.lesions
    assert assessment.calciphylaxis_risk.pattern == "met" and assessment.calciphylaxis_risk.applicable
    assert {f.factor_id for f in assessment.calciphylaxis_risk.major} == {"dialysis-over-5y", "warfarin-long-term"}
    assert "skin-biopsy" not in {g.item_id for g in assessment.workup}
    assert "bone-scintigraphy" not in {g.item_id for g in assessment.workup}


@pytest.mark.parametrize(("dialysis_years", "pattern"), [(4.5, "not-met"), (5.5, "met")])
def test_dialysis_vintage_5_years_both_sides(dialysis_years: float, pattern: str) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=dialysis_years * 365.25)
    chart.lab("2731-8", 1240, "pg/mL", 20)  # > 1000: major
    chart.mineral_panel(9.5, 3.9, 4.0, egfr=6)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.calciphylaxis_risk.pattern == pattern


@pytest.mark.parametrize(
    ("pth", "comparator", "factor"),
    [
        (1001, None, "pth-over-1000"),
        (1000, None, None),
        (2500, ">", "pth-over-1000"),
        (299, None, "pth-under-300"),
        (3, "<", "pth-under-300"),
    ],
)
def test_pth_cut_offs_with_censored_values(pth: float, comparator: str | None, factor: str | None) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=400)
    chart.lab("2731-8", pth, "pg/mL", 20, comparator=comparator)
    assessment = chart.assess()
    assert assessment is not None
    factors = {f.factor_id for f in assessment.calciphylaxis_risk.major + assessment.calciphylaxis_risk.minor}
    pth_factors = {f for f in factors if f.startswith("pth")}
    assert pth_factors == ({factor} if factor else set())


def test_active_vitamin_d_dose_cut_off() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=400)
    chart.medication("Calcitriol 0.25 MCG Oral Capsule", 300, dose_ug=0.25, per_day=3)
    assessment = chart.assess()
    assert assessment is not None
    assert "active-vitamin-d-high" in {f.factor_id for f in assessment.calciphylaxis_risk.major}
    chart2 = Chart()
    chart2.calcinosis()
    chart2.dialysis(since_days=400)
    chart2.medication("Calcitriol 0.25 MCG Oral Capsule", 300, dose_ug=0.25, per_day=2)
    assessment2 = chart2.assess()
    assert assessment2 is not None
    assert "active-vitamin-d-high" not in {f.factor_id for f in assessment2.calciphylaxis_risk.major}


def test_calciphylaxis_needs_kidney_data_to_be_decided() -> None:
    chart = Chart()
    chart.calcinosis()
    assert likelihoods(chart.assess())["calciphylaxis"] == "undetermined"
    normal = Chart()
    normal.calcinosis()
    normal.mineral_panel(9.4, 4.1, 3.6, egfr=95)
    assert likelihoods(normal.assess())["calciphylaxis"] == "unlikely"


def test_a_stale_ionized_calcium_does_not_beat_a_newer_corrected_one() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.lab("1994-3", 1.0, "mmol/L", 60, low=1.12, high=1.32)  # low, two months ago
    chart.mineral_panel(9.4, 4.1, 3.6, days_ago=5)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.derived_value("corrected-calcium") is not None
    assert likelihoods(assessment)["dystrophic"] == "likely"
    fresh = Chart()
    fresh.calcinosis()
    fresh.condition("M34.1", ICD10, "CR(E)ST syndrome")
    fresh.mineral_panel(9.4, 4.1, 3.6, days_ago=5)
    fresh.lab("1994-3", 1.2, "mmol/L", 4, low=1.12, high=1.32)
    assert fresh.assess().derived_value("ionized-calcium") is not None  # type: ignore[union-attr]


def test_iatrogenic_exposure_explains_a_causeless_dystrophic_picture() -> None:
    chart = Chart(birth_date="2026-05-01")
    chart.calcinosis(onset_days_ago=10, body_sites=["Left hand"])
    chart.mineral_panel(9.6, 3.9, 5.0)
    chart.medication(
        "Calcium Gluconate 100 MG/ML Injectable Solution", 30, kind="MedicationAdministration", route="Intravenous"
    )
    assessment = chart.assess()
    result = likelihoods(assessment)
    assert result["iatrogenic"] == "likely" and result["dystrophic"] == "unlikely"
    assert assessment is not None
    assert not {"ana", "anti-scl-70", "creatine-kinase"} & {g.item_id for g in assessment.workup}
    poh = next(d for d in assessment.differentials if d.differential_id == "progressive-osseous-heteroplasia")
    assert poh.raised_by and poh.lowered_by


@pytest.mark.parametrize(
    ("sites", "label"),
    [
        (["Right thumb"], "circumscripta"),
        (["Right thumb", "Left index finger"], "circumscripta"),
        (["Right hand", "Left thigh"], "universalis"),
        (["Abdomen", "Left forearm"], "universalis"),
        ([], "unknown"),
    ],
)
def test_distribution_from_body_sites(sites: list[str], label: str) -> None:
    chart = Chart()
    chart.calcinosis(body_sites=sites)
    assessment = chart.assess()
    assert assessment is not None and assessment.distribution.label.value == label
