"""Differentials (clinical-knowledge.md 8) and workup gaps (6, 7): scenarios on both sides,
with Synthea charts as realistic background."""

from __future__ import annotations

import pytest

from calcinosis.assessment import Assessment
from tests.charts import ICD10, SNOMED, Chart, synthea_chart, synthea_resources

REQUIRED = {"gouty-tophus", "osteoma-cutis", "progressive-osseous-heteroplasia", "primary-hyperoxaluria", "xanthoma"}


def differentials(assessment: Assessment | None) -> dict[str, str]:
    assert assessment is not None
    return {d.differential_id: d.consideration for d in assessment.differentials}


def test_the_five_required_differentials_are_always_listed_with_a_separating_test() -> None:
    chart = Chart()
    chart.calcinosis()
    assessment = chart.assess()
    assert assessment is not None
    assert {d.differential_id for d in assessment.differentials} >= REQUIRED
    assert all(d.separating_test and d.sources for d in assessment.differentials)
    assert set(differentials(assessment).values()) == {"consider"}


def test_gout_chart_from_synthea_raises_gouty_tophus() -> None:
    chart = synthea_chart("Truman_Wiegand")  # gout, colchicine, allopurinol, CKD stage 1
    chart.calcinosis(body_sites=["Left elbow"])
    assessment = chart.assess()
    assert differentials(assessment)["gouty-tophus"] == "raised"
    assert assessment is not None
    gout = next(d for d in assessment.differentials if d.differential_id == "gouty-tophus")
    assert {f.rule_id for f in gout.raised_by} >= {"DX-GOUT-DX", "DX-GOUT-DRUG"}
    assert assessment.differentials[0].differential_id == "gouty-tophus"  # raised ones first
    assert "uric-acid" in {g.item_id for g in assessment.workup}


def test_uric_acid_within_range_lowers_but_does_not_remove_gout() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M10.9", ICD10, "Gout, unspecified")
    chart.lab("3084-1", 5.1, "mg/dL", 40, low=3.5, high=7.2)
    assessment = chart.assess()
    assert assessment is not None
    gout = next(d for d in assessment.differentials if d.differential_id == "gouty-tophus")
    assert gout.consideration == "raised" and gout.lowered_by
    assert "uric-acid" not in {g.item_id for g in assessment.workup}


@pytest.mark.parametrize(("cholesterol", "raised"), [(239, False), (240, True)])
def test_xanthoma_total_cholesterol_cut_off(cholesterol: float, raised: bool) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("2093-3", cholesterol, "mg/dL", 100)
    assert (differentials(chart.assess())["xanthoma"] == "raised") is raised


@pytest.mark.parametrize(("triglycerides", "raised"), [(199, False), (200, True)])
def test_xanthoma_triglyceride_cut_off(triglycerides: float, raised: bool) -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("2571-8", triglycerides, "mg/dL", 100)
    assert (differentials(chart.assess())["xanthoma"] == "raised") is raised


def test_synthea_lipid_chart_background() -> None:
    chart = synthea_chart("Truman_Wiegand")  # hypertriglyceridemia on the problem list
    chart.calcinosis()
    assert "xanthoma" in differentials(chart.assess())


def test_primary_hyperoxaluria_code_raises_oxalosis() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("E72.538", ICD10, "Other specified primary hyperoxaluria")
    assert differentials(chart.assess())["primary-hyperoxaluria"] == "raised"


def test_oxalosis_is_raised_by_its_own_signals_not_by_every_calciphylaxis_chart() -> None:
    chart = Chart()
    chart.condition("237900002", SNOMED, "Calciphylaxis")
    chart.dialysis(since_days=400)
    result = differentials(chart.assess())
    assert result["primary-hyperoxaluria"] == "consider"
    assert "calciphylaxis-mimics" in result
    stones = Chart()
    stones.condition("237900002", SNOMED, "Calciphylaxis")
    stones.dialysis(since_days=400)
    stones.condition(None, text="Recurrent nephrolithiasis since childhood")
    assert differentials(stones.assess())["primary-hyperoxaluria"] == "raised"
    coded = Chart()
    coded.condition("237900002", SNOMED, "Calciphylaxis")
    coded.condition("E72.530", ICD10, "Primary hyperoxaluria, type 1")
    assert differentials(coded.assess())["primary-hyperoxaluria"] == "raised"


def test_osteoma_cutis_by_text_and_aho() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition(None, text="Osteoma cutis of face")
    assert differentials(chart.assess())["osteoma-cutis"] == "raised"
    aho = Chart()
    aho.calcinosis()
    aho.condition("E20.1", ICD10, "Pseudohypoparathyroidism")
    result = differentials(aho.assess())
    assert result["osteoma-cutis"] == "raised" and result["progressive-osseous-heteroplasia"] == "raised"


@pytest.mark.parametrize(("birth_date", "raised"), [("2025-09-01", True), ("2023-01-01", False)])
def test_poh_raised_by_onset_in_infancy(birth_date: str, raised: bool) -> None:
    chart = Chart(birth_date=birth_date)
    chart.calcinosis(onset_days_ago=10)
    assert (differentials(chart.assess())["progressive-osseous-heteroplasia"] == "raised") is raised


def test_hyperphosphatemia_with_normal_calcium_and_kidneys_raises_hftc() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.2, 6.3, egfr=101)
    assert differentials(chart.assess()).get("hyperphosphatemic-tumoral-calcinosis") == "raised"


def test_workup_items_carry_loinc_codes_and_sources() -> None:
    chart = Chart()
    chart.calcinosis()
    assessment = chart.assess()
    assert assessment is not None
    labs = [g for g in assessment.workup if g.kind == "lab" and g.code is not None]
    assert labs and all(g.code is not None and g.code.system == "http://loinc.org" and g.sources for g in labs)
    # No SNOMED CT code for a plain radiograph or a skin biopsy is confirmed by the terminology
    # reference: such orders carry the test's name, never a code the EHR would file unchecked.
    radiograph = next(g for g in assessment.workup if g.item_id == "plain-radiograph")
    assert radiograph.code is None and radiograph.label == "Plain radiograph of the affected area"


def test_recent_results_close_gaps_and_old_ones_are_cited() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6, days_ago=10)
    chart.lab("2731-8", 55, "pg/mL", 500)  # PTH older than a year
    chart.procedure("X-ray of left hand", 20, code="363680008")
    assessment = chart.assess()
    assert assessment is not None
    gaps = {g.item_id: g for g in assessment.workup}
    assert not {"serum-calcium", "serum-albumin", "serum-phosphate", "creatinine-egfr", "plain-radiograph"} & set(gaps)
    assert gaps["pth-intact"].last_result is not None


def test_chest_xray_does_not_count_as_imaging_of_the_lesion() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.procedure("Plain chest X-ray", 20, code="399208008")
    assessment = chart.assess()
    assert assessment is not None
    assert "plain-radiograph" in {g.item_id for g in assessment.workup}


def test_hypercalcemia_with_low_pth_asks_for_pthrp_and_high_pth_for_urine_calcium() -> None:
    low = Chart()
    low.calcinosis()
    low.mineral_panel(11.6, 4.1, 3.1)
    low.lab("2731-8", 8, "pg/mL", 3, low=15, high=65)
    gaps = {g.item_id for g in low.assess().workup}  # type: ignore[union-attr]
    assert {"pthrp", "serum-protein-electrophoresis", "magnesium", "vitamin-d-1-25"} <= gaps
    high = Chart()
    high.calcinosis()
    high.mineral_panel(11.6, 4.1, 3.1)
    high.lab("2731-8", 140, "pg/mL", 3, low=15, high=65)
    gaps_high = {g.item_id for g in high.assess().workup}  # type: ignore[union-attr]
    assert "urine-calcium-24h" in gaps_high and "pthrp" not in gaps_high


def test_dystrophic_picture_without_ctd_asks_for_autoantibodies() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("266261006", SNOMED, "Raynaud's phenomenon")
    chart.mineral_panel(9.4, 4.1, 3.6)
    gaps = {g.item_id for g in chart.assess().workup}  # type: ignore[union-attr]
    assert {"ana", "anti-scl-70", "anti-pm-scl", "anti-centromere", "creatine-kinase"} <= gaps


@pytest.mark.parametrize(
    "prefix",
    [
        "Vito_Feeney",
        "Truman_Wiegand",
        "Josue_Sipes",
        "Darron_Feeney",
        "Annetta_Hoppe",
        "Nelida_Gislason",
        "Lloyd_Rippin",
        "Dorris_Kuhic",
    ],
)
def test_synthea_background_charts_are_silent(prefix: str) -> None:
    from fhir_mapping import assess_resources
    from tests.charts import AS_OF

    patient_id, resources = synthea_resources(prefix)
    result = assess_resources(resources, AS_OF, patient_id)
    assert result.assessment is None
    assert result.findings.resources_skipped == 0


def test_calcinosis_layered_on_synthea_ckd_chart() -> None:
    chart = synthea_chart("Josue_Sipes")  # CKD stage 1 then 2; calcium 49765-1, eGFR 33914-3
    chart.calcinosis()
    assessment = chart.assess()
    assert assessment is not None
    # Synthea has no phosphate: classification by mineral metabolism is not possible.
    dystrophic = next(s for s in assessment.subtypes if s.subtype.value == "dystrophic")
    assert dystrophic.likelihood.value == "undetermined"
    assert "serum-phosphate" in {g.item_id for g in assessment.workup}
