"""Scenarios for the causes the data support (issue 12 item 2; clinical-knowledge.md 5.2, 2.3, 10) and
for the calciphylaxis signal (item 3; sections 5.5, 9, 11.4): a FHIR chart in, the assessment out.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from calcinosis import Subtype
from calcinosis.assessment import Assessment, CalciphylaxisStatus, MetabolicCause
from calcinosis.knowledge_base import default_knowledge
from tests.charts import AS_OF, ICD10, SNOMED, Chart

KB = default_knowledge()


def born(years: float) -> str:
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


def causes(assessment: Assessment | None) -> set[MetabolicCause]:
    assert assessment is not None
    return {c.cause for c in assessment.causes}


def statements(assessment: Assessment | None, subtype: Subtype) -> str:
    assert assessment is not None
    return " | ".join(f.statement for f in assessment.subtype(subtype).findings)


def hypercalcemic(chart: Chart, calcium: float = 11.8, phosphate: float = 3.2) -> None:
    """Two high calcium draws (confirmed hypercalcemia) with albumin, and a phosphate."""
    chart.mineral_panel(calcium, 4.1, phosphate, days_ago=5, egfr=None)
    chart.lab("17861-6", calcium - 0.2, "mg/dL", 20)


# ----- item 2: causes ------------------------------------------------------------------------------


def test_milk_alkali_from_calcium_carbonate_with_hypercalcemia_alkalosis_and_aki() -> None:
    chart = Chart(gender="female", birth_date=born(58))
    chart.calcinosis()
    chart.condition("K21.9", ICD10, "Gastro-esophageal reflux disease without esophagitis")
    chart.condition("N17.9", ICD10, "Acute kidney failure, unspecified", onset_days_ago=7)
    hypercalcemic(chart, 12.6, 4.9)
    chart.lab("1963-8", 33, "mmol/L", low=22, high=29)
    chart.lab("2731-8", 11, "pg/mL", low=15, high=65)
    chart.lab("2160-0", 2.1, "mg/dL", low=0.5, high=1.1)
    chart.medication("Calcium Carbonate 1250 MG Chewable Tablet", 120, rxnorm="1897")
    assessment = chart.assess()
    assert MetabolicCause.MILK_ALKALI in causes(assessment)
    text = statements(assessment, Subtype.METASTATIC)
    assert "milk-alkali" in text and "bicarbonate" in text and "acute kidney injury" in text
    assert "Chronic kidney disease" not in text
    assert assessment is not None
    factor_ids = {f.factor_id for f in assessment.calciphylaxis_risk.major + assessment.calciphylaxis_risk.additional}
    assert not {"calcium-binder", "calcium-binder-over-6m"} & factor_ids
    assert not assessment.calciphylaxis_risk.applicable


def test_calcium_carbonate_without_hypercalcemia_is_not_milk_alkali() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.6, 4.1, 3.4)
    chart.medication("Calcium Carbonate 1250 MG Chewable Tablet", 120, rxnorm="1897")
    assert MetabolicCause.MILK_ALKALI not in causes(chart.assess())


def test_calcium_acetate_on_dialysis_is_a_binder_not_milk_alkali() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=700)
    hypercalcemic(chart, 11.0, 6.5)
    chart.medication("Calcium acetate 667 MG Oral Capsule", 400)
    assessment = chart.assess()
    assert MetabolicCause.MILK_ALKALI not in causes(assessment)
    assert assessment is not None
    assert "calcium-binder-over-6m" in {f.factor_id for f in assessment.calciphylaxis_risk.major}


@pytest.mark.parametrize(("pth", "suppressed"), [(12, True), (25, False)])
def test_malignancy_with_suppressed_pth_and_no_ckd_from_a_single_low_egfr(pth: float, suppressed: bool) -> None:
    # The fallback "suppressed" cut-off is used when the lab gives no range.
    assert 12 < KB.value("pth-suppressed") < 25
    chart = Chart(gender="male", birth_date=born(66))
    chart.calcinosis()
    chart.condition(None, text="Squamous cell carcinoma of lung")
    hypercalcemic(chart, 13.1, 2.3)
    chart.lab("98979-8", 52, "mL/min/{1.73_m2}")
    chart.lab("2731-8", pth, "pg/mL")
    assessment = chart.assess()
    found = causes(assessment)
    assert (MetabolicCause.MALIGNANCY in found) is True
    text = statements(assessment, Subtype.METASTATIC)
    assert ("hypercalcemia of malignancy" in text) is suppressed
    assert MetabolicCause.CKD_MBD not in found
    assert "Chronic kidney disease" not in text


def test_raised_pthrp_names_malignancy_even_without_a_coded_cancer() -> None:
    chart = Chart()
    chart.calcinosis()
    hypercalcemic(chart, 12.9, 2.6)
    chart.lab("2729-2", 48, "pg/mL", high=14)
    chart.lab("2731-8", 9, "pg/mL", low=15, high=65)
    assert MetabolicCause.MALIGNANCY in causes(chart.assess())


def test_primary_hyperparathyroidism_from_high_pth_without_ckd() -> None:
    chart = Chart()
    chart.calcinosis()
    hypercalcemic(chart, 11.4, 2.4)
    chart.lab("98979-8", 88, "mL/min/{1.73_m2}")
    chart.lab("2731-8", 142, "pg/mL", low=15, high=65)
    found = causes(chart.assess())
    assert MetabolicCause.PRIMARY_HYPERPARATHYROIDISM in found
    assert MetabolicCause.TERTIARY_HYPERPARATHYROIDISM not in found


def test_tertiary_hyperparathyroidism_from_high_pth_with_hypercalcemia_on_dialysis() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=3000)
    hypercalcemic(chart, 11.3, 6.1)
    chart.lab("2731-8", 1450, "pg/mL", low=15, high=65)
    found = causes(chart.assess())
    assert MetabolicCause.TERTIARY_HYPERPARATHYROIDISM in found
    assert MetabolicCause.CKD_MBD in found
    assert MetabolicCause.PRIMARY_HYPERPARATHYROIDISM not in found


@pytest.mark.parametrize(("vitamin_d", "toxic"), [(151, True), (150, False)])
def test_vitamin_d_toxicity_at_150_both_sides(vitamin_d: float, toxic: bool) -> None:
    chart = Chart()
    chart.calcinosis()
    hypercalcemic(chart, 12.0, 4.0)
    chart.lab("62292-8", vitamin_d, "ng/mL")
    chart.lab("2731-8", 10, "pg/mL", low=15, high=65)
    assert (MetabolicCause.VITAMIN_D_TOXICITY in causes(chart.assess())) is toxic


YEAR = KB.days("annual-lookback-days")


@pytest.mark.parametrize(
    ("days_ago", "window", "toxic"),
    [
        (YEAR - 10, YEAR, True),  # inside the yearly look-back
        (YEAR + 10, YEAR, False),  # just outside it
        (YEAR + 10, YEAR + 30, True),  # a reviewer widened the look-back in thresholds.json
    ],
)
def test_causes_read_results_within_the_knowledge_bases_yearly_look_back(
    days_ago: float, window: int, toxic: bool
) -> None:
    """The causes' look-back is annual-lookback-days, not a year typed into the code."""
    from fhir_mapping import assess_resources

    kb = KB.with_thresholds({"annual-lookback-days": window})
    chart = Chart()
    chart.calcinosis()
    hypercalcemic(chart, 12.0, 4.0)
    chart.lab("62292-8", 180, "ng/mL", days_ago)
    chart.lab("2731-8", 10, "pg/mL", low=15, high=65)
    assessment = assess_resources(chart.resources, AS_OF, chart.patient_id, knowledge=kb).assessment
    assert (MetabolicCause.VITAMIN_D_TOXICITY in causes(assessment)) is toxic
    if toxic:
        statement = next(c.finding.statement for c in assessment.causes if c.cause is MetabolicCause.VITAMIN_D_TOXICITY)  # type: ignore[union-attr]
        assert f"above the toxicity level of {kb.quantity('vitamin-d-25oh-toxic')}" in statement


def test_granulomatous_disease_from_sarcoidosis_or_raised_calcitriol() -> None:
    coded = Chart()
    coded.calcinosis()
    coded.condition("D86.9", ICD10, "Sarcoidosis, unspecified")
    hypercalcemic(coded)
    assert MetabolicCause.GRANULOMATOUS in causes(coded.assess())
    by_labs = Chart()
    by_labs.calcinosis()
    hypercalcemic(by_labs)
    by_labs.lab("2731-8", 8, "pg/mL", low=15, high=65)
    by_labs.lab("1649-3", 110, "pg/mL", low=18, high=72)
    assert MetabolicCause.GRANULOMATOUS in causes(by_labs.assess())


def test_hypoparathyroidism_with_high_phosphate() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition(None, text="Postsurgical hypoparathyroidism")
    chart.mineral_panel(8.1, 4.2, 6.3, egfr=90)
    chart.lab("2731-8", 6, "pg/mL", low=15, high=65)
    assessment = chart.assess()
    assert MetabolicCause.HYPOPARATHYROIDISM in causes(assessment)
    assert MetabolicCause.CKD_MBD not in causes(assessment)


def test_ckd_mbd_on_dialysis_with_high_phosphate() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=1000)
    chart.mineral_panel(9.6, 3.8, 7.4, egfr=None)
    chart.lab("2731-8", 620, "pg/mL", low=15, high=65)
    assessment = chart.assess()
    assert MetabolicCause.CKD_MBD in causes(assessment)
    assert "CKD-mineral and bone disorder" in statements(assessment, Subtype.METASTATIC)
    assert assessment is not None and assessment.subtype(Subtype.METASTATIC).likelihood.value == "likely"


# ----- item 3: the calciphylaxis signal -----------------------------------------------------------


def _dialysis_with_major_factors(chart: Chart) -> None:
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=6 * 365)
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")
    chart.mineral_panel(9.5, 3.2, 6.2, egfr=None)


def test_necrotic_ulcers_with_the_risk_pattern_make_calciphylaxis_suspected_without_a_code() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition(None, text="Necrotic ulcer with black eschar, left thigh", body_sites=["Left thigh"])
    _dialysis_with_major_factors(chart)
    assessment = chart.assess()
    assert assessment is not None and assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.status is CalciphylaxisStatus.SUSPECTED
    assert assessment.calciphylaxis.setting == "uremic"
    assert assessment.calciphylaxis.lesions and not assessment.calciphylaxis.skin_exam_needed
    calciphylaxis = assessment.subtype(Subtype.CALCIPHYLAXIS)
    assert calciphylaxis.likelihood.value == "likely"
    assert not any("skin examination" in m for m in calciphylaxis.missing)
    assert assessment.calciphylaxis_risk.applicable
    assert "bone-scintigraphy" in {g.item_id for g in assessment.workup}
    assert "skin-biopsy" not in {g.item_id for g in assessment.workup}


def test_lesion_recorded_and_skin_exam_missing_never_appear_together() -> None:
    for lesion in (True, False):
        chart = Chart()
        chart.calcinosis()
        if lesion:
            chart.condition(None, text="Retiform purpura, abdomen")
        _dialysis_with_major_factors(chart)
        assessment = chart.assess()
        assert assessment is not None
        subtype = assessment.subtype(Subtype.CALCIPHYLAXIS)
        lesion_rule = "CC-CPX-LESION" in subtype.rule_ids
        exam_missing = any("skin examination" in m for m in subtype.missing)
        assert lesion_rule is lesion and exam_missing is (not lesion)


def test_risk_pattern_without_skin_findings_is_elevated_risk_only() -> None:
    chart = Chart()
    chart.calcinosis()
    _dialysis_with_major_factors(chart)
    assessment = chart.assess()
    assert assessment is not None and assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.status is CalciphylaxisStatus.ELEVATED_RISK
    assert assessment.subtype(Subtype.CALCIPHYLAXIS).likelihood.value == "unlikely"


def test_risk_section_only_for_dialysis_advanced_ckd_or_suspected_calciphylaxis() -> None:
    plain = Chart()
    plain.calcinosis()
    plain.condition("E11.9", ICD10, "Type 2 diabetes mellitus without complications")
    plain.mineral_panel(9.4, 3.2, 3.6, egfr=80)
    assessment = plain.assess()
    assert assessment is not None and not assessment.calciphylaxis_risk.applicable
    ckd4 = Chart()
    ckd4.calcinosis()
    ckd4.condition("N18.4", ICD10, "Chronic kidney disease, stage 4 (severe)")
    ckd4.mineral_panel(9.4, 3.2, 3.6, egfr=22)
    assert ckd4.assess().calciphylaxis_risk.applicable  # type: ignore[union-attr]


def test_non_uremic_calciphylaxis_with_normal_kidneys() -> None:
    chart = Chart(gender="female", birth_date=born(61))
    chart.calcinosis()
    chart.condition(None, text="Painful retiform purpura with necrotic ulcers, both thighs")
    chart.condition("M06.9", ICD10, "Rheumatoid arthritis, unspecified")
    chart.condition(None, text="Alcoholic liver disease")
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 300, rxnorm="855332")
    chart.medication("Prednisone 10 MG Oral Tablet", 500, rxnorm="8640")
    chart.mineral_panel(9.3, 2.9, 3.8, egfr=92)
    assessment = chart.assess()
    assert assessment is not None and assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.status is CalciphylaxisStatus.SUSPECTED
    assert assessment.calciphylaxis.setting == "non-uremic"
    factor_ids = {f.factor_id for f in assessment.calciphylaxis.non_uremic_factors}
    assert {"liver-disease", "vitamin-k-antagonist", "glucocorticoids", "hypoalbuminemia", "female-sex"} <= factor_ids
    assert assessment.subtype(Subtype.CALCIPHYLAXIS).likelihood.value == "possible"
    assert assessment.calciphylaxis_risk.applicable


def test_provisional_calciphylaxis_code_is_suspected_not_recorded() -> None:
    chart = Chart()
    chart.condition("237900002", SNOMED, "Calciphylaxis", verification="provisional")
    assessment = chart.assess()
    assert assessment is not None and assessment.calciphylaxis is not None
    assert assessment.calciphylaxis.status is CalciphylaxisStatus.SUSPECTED
    assert assessment.suspected_only
    assert assessment.subtype(Subtype.CALCIPHYLAXIS).likelihood.value == "possible"
    confirmed = Chart()
    confirmed.condition("237900002", SNOMED, "Calciphylaxis")
    done = confirmed.assess()
    assert done is not None and done.calciphylaxis is not None
    assert done.calciphylaxis.status is CalciphylaxisStatus.RECORDED and not done.suspected_only


# ----- item 8: no coded cause ---------------------------------------------------------------------


def test_refuted_only_cause_leaves_no_cause_recorded_and_the_headline_says_so() -> None:
    from hooks.cards import subtype_summary

    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "Systemic sclerosis, CR(E)ST syndrome", verification="refuted")
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.medication("Omeprazole 20 MG Oral Capsule", 100)
    assessment = chart.assess()
    assert assessment is not None and assessment.no_cause_recorded
    assert assessment.subtype(Subtype.DYSTROPHIC).likelihood.value == "possible"
    assert assessment.subtype(Subtype.IDIOPATHIC).likelihood.value == "possible"
    summary = subtype_summary(assessment)
    assert "dystrophic" not in summary.lower() and "no underlying cause" in summary
    with_cause = Chart()
    with_cause.calcinosis()
    with_cause.condition("M34.1", ICD10, "Systemic sclerosis, CR(E)ST syndrome")
    with_cause.mineral_panel(9.4, 4.1, 3.6)
    assert not with_cause.assess().no_cause_recorded  # type: ignore[union-attr]


# ----- what the subtype card makes of the signal --------------------------------------------------


def test_suspected_calciphylaxis_heads_a_warning_card_and_elevated_risk_does_not() -> None:
    from hooks.cards import subtype_card, subtype_summary

    suspected = Chart()
    suspected.calcinosis()
    suspected.condition(None, text="Necrotic ulcer with black eschar, left thigh")
    _dialysis_with_major_factors(suspected)
    assessment = suspected.assess()
    assert assessment is not None
    summary = subtype_summary(assessment)
    assert summary.startswith("Consider calciphylaxis: ") and "eschar" in summary
    card = subtype_card(assessment, KB, __import__("uuid").UUID(int=1))
    assert card.indicator == "warning"
    assert "Major risk factors" in (card.detail or "")
    risk_only = Chart()
    risk_only.calcinosis()
    _dialysis_with_major_factors(risk_only)
    elevated = risk_only.assess()
    assert elevated is not None
    assert "calciphylaxis" not in subtype_summary(elevated).lower().split(":")[0]
    assert subtype_card(elevated, KB, __import__("uuid").UUID(int=1)).indicator == "info"


def test_provisional_calciphylaxis_card_says_suspected_not_recorded() -> None:
    from hooks.cards import subtype_summary

    chart = Chart()
    chart.condition("237900002", SNOMED, "Calciphylaxis", verification="provisional")
    assessment = chart.assess()
    assert assessment is not None
    summary = subtype_summary(assessment)
    assert "suspected" in summary and "recorded on the problem list" not in summary


def test_risk_factors_are_not_shown_on_a_chart_without_kidney_disease() -> None:
    from hooks.cards import subtype_card

    chart = Chart()
    chart.calcinosis()
    chart.condition("E11.9", ICD10, "Type 2 diabetes mellitus without complications")
    chart.mineral_panel(9.4, 3.2, 3.6, egfr=80)
    assessment = chart.assess()
    assert assessment is not None
    card = subtype_card(assessment, KB, __import__("uuid").UUID(int=1))
    assert "risk factor" not in (card.detail or "").lower()
