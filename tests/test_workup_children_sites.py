"""Scenarios for workup by yield (issue 12 item 4), the iatrogenic site (item 5), children (item 6)
and the codes now confirmed (item 10): a FHIR chart in, the assessment out.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from calcinosis import Subtype
from calcinosis.assessment import Assessment
from calcinosis.findings import Analyte
from calcinosis.knowledge_base import default_knowledge
from calcinosis.statements import card_statements
from fhir_mapping.pipeline import default_terminology
from fhir_mapping.terminology import LOINC
from tests.charts import AS_OF, ICD10, SNOMED, Chart

KB = default_knowledge()


def born(years: float) -> str:
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


def workup(assessment: Assessment | None) -> set[str]:
    assert assessment is not None
    return {g.item_id for g in assessment.workup}


def raised(assessment: Assessment | None) -> set[str]:
    assert assessment is not None
    return {d.differential_id for d in assessment.differentials if d.raised_by}


CTD_PANEL = {"ana", "anti-scl-70", "anti-pm-scl", "anti-centromere", "creatine-kinase"}


# ----- item 4: workup by yield --------------------------------------------------------------------


def test_no_ctd_antibodies_on_a_chart_without_a_coded_cause() -> None:
    chart = Chart()
    chart.calcinosis(body_sites=["Left forearm"])
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.medication("Omeprazole 20 MG Oral Capsule", 100)
    assert not CTD_PANEL & workup(chart.assess())


@pytest.mark.parametrize(
    "suggestive",
    ["raynaud", "ana", "ck"],
)
def test_ctd_antibodies_when_the_picture_suggests_a_ctd(suggestive: str) -> None:
    chart = Chart()
    chart.calcinosis(body_sites=["Right thumb"])
    chart.mineral_panel(9.4, 4.1, 3.6)
    if suggestive == "raynaud":
        chart.condition("266261006", SNOMED, "Raynaud's phenomenon")
    elif suggestive == "ana":
        chart.lab("8061-4", None, None, 30)["valueCodeableConcept"] = {"text": "Positive"}
    else:
        chart.lab("2157-6", 880, "U/L", 20, low=26, high=192)
    assert "anti-scl-70" in workup(chart.assess()) or "ana" in workup(chart.assess())


def test_ck_within_range_does_not_suggest_a_ctd() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.lab("2157-6", 120, "U/L", 20, low=26, high=192)
    assert not CTD_PANEL & workup(chart.assess())


@pytest.mark.parametrize(("albumin", "ionized"), [(2.9, True), (3.0, False)])
def test_ionized_calcium_when_albumin_is_below_the_reliability_limit(albumin: float, ionized: bool) -> None:
    assert KB.value("albumin-correction-unreliable") == 3.0
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.0, albumin, 3.6)
    assert ("calcium-ionized" in workup(chart.assess())) is ionized


def test_eskd_with_low_albumin_gets_ionized_calcium_not_a_24_hour_urine_calcium() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.dialysis(since_days=800)
    chart.mineral_panel(9.9, 2.7, 6.0, egfr=None)
    chart.lab("17861-6", 9.8, "mg/dL", 30)
    chart.lab("2731-8", 410, "pg/mL", 10, low=15, high=65)
    assessment = chart.assess()
    items = workup(assessment)
    assert "calcium-ionized" in items
    assert "urine-calcium-24h" not in items
    assert assessment is not None
    assert "urine-calcium-24h" in {s.item_id for s in assessment.suppressed_workup}


def test_a_recent_ionized_calcium_closes_the_gap() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.0, 2.8, 3.6)
    chart.lab("1994-3", 1.2, "mmol/L", 3)
    assert "calcium-ionized" not in workup(chart.assess())


@pytest.mark.parametrize(
    ("sex", "sites", "entity"),
    [
        ("male", ["Scrotum"], "idiopathic-scrotal-calcinosis"),
        ("female", ["Vulva"], "idiopathic-vulvar-calcinosis"),
        ("male", ["Left shoulder"], "tumoral-calcinosis"),
    ],
)
def test_idiopathic_entities_are_named_when_the_picture_fits(sex: str, sites: list[str], entity: str) -> None:
    chart = Chart(gender=sex, birth_date=born(27))
    chart.calcinosis(body_sites=sites)
    chart.mineral_panel(9.4, 4.3, 3.4)
    chart.medication("Cetirizine 10 MG Oral Tablet", 300)
    assessment = chart.assess()
    assert assessment is not None
    assert entity in {e.entity_id for e in assessment.idiopathic_entities}
    assert "CC-IDIO-ENTITY" in assessment.subtype(Subtype.IDIOPATHIC).rule_ids


def test_subepidermal_calcified_nodule_in_a_child_but_not_with_high_phosphate_tumoral() -> None:
    child = Chart(gender="female", birth_date=born(6))
    child.calcinosis(body_sites=["Left eyelid"])
    child.lab("17861-6", 9.8, "mg/dL", low=8.8, high=10.8)
    child.lab("1751-7", 4.2, "g/dL", low=3.5, high=5.2)
    child.lab("2777-1", 5.0, "mg/dL", low=4.0, high=6.5)
    child.medication("Amoxicillin 250 MG Oral Capsule", 300)
    found = child.assess()
    assert found is not None
    assert "subepidermal-calcified-nodule" in {e.entity_id for e in found.idiopathic_entities}
    hftc = Chart(gender="male", birth_date=born(17))
    hftc.calcinosis(body_sites=["Right hip"])
    hftc.mineral_panel(9.6, 4.4, 7.1, egfr=110)
    result = hftc.assess()
    assert result is not None and "tumoral-calcinosis" not in {e.entity_id for e in result.idiopathic_entities}


# ----- item 5: iatrogenic site ----------------------------------------------------------------------


def _iv_calcium(chart: Chart, days_ago: float, site: dict[str, object] | None) -> None:
    administration = chart.medication(
        "Calcium Gluconate 100 MG/ML Injectable Solution",
        days_ago,
        kind="MedicationAdministration",
        route="Intravenous",
    )
    if site is not None:
        administration["dosage"]["site"] = site


@pytest.mark.parametrize(
    ("exposure_site", "lesion_site", "expected", "words"),
    [
        ({"text": "Left hand (peripheral IV)"}, ["Left hand"], "likely", "at the site of the calcinosis"),
        (
            {"coding": [{"system": SNOMED, "code": "85151006", "display": "Structure of left hand"}]},
            [{"coding": [{"system": SNOMED, "code": "85151006", "display": "Structure of left hand"}]}],
            "likely",
            "same coded site",
        ),
        ({"text": "Right foot"}, ["Left hand"], "unlikely", "different site"),
        (None, ["Left hand"], "possible", "cannot be assessed"),
    ],
)
def test_exposure_site_against_the_calcinosis_site(
    exposure_site: dict[str, object] | None, lesion_site: list[object], expected: str, words: str
) -> None:
    # IV calcium 200 days before onset: inside the 12-month window, outside the close window.
    chart = Chart(birth_date=born(40))
    entry = chart.calcinosis(onset_days_ago=10)
    entry["bodySite"] = [s if isinstance(s, dict) else {"text": s} for s in lesion_site]
    chart.mineral_panel(9.4, 4.1, 3.6)
    _iv_calcium(chart, 210, exposure_site)
    assessment = chart.assess()
    assert assessment is not None
    iatrogenic = assessment.subtype(Subtype.IATROGENIC)
    assert iatrogenic.likelihood.value == expected
    assert any(words in f.statement for f in iatrogenic.findings)


def test_a_close_exposure_at_a_different_site_is_lowered_to_possible() -> None:
    chart = Chart(birth_date=born(40))
    chart.calcinosis(onset_days_ago=10, body_sites=["Left hand"])
    chart.mineral_panel(9.4, 4.1, 3.6)
    _iv_calcium(chart, 30, {"text": "Right forearm"})
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.subtype(Subtype.IATROGENIC).likelihood.value == "possible"


@pytest.mark.parametrize(("age", "mimic"), [(0.4, True), (1.5, False)])
def test_infant_extravasation_raises_the_infection_mimic(age: float, mimic: bool) -> None:
    assert KB.value("infant-age-years") == 1
    chart = Chart(birth_date=born(age))
    chart.calcinosis(onset_days_ago=10, body_sites=["Left hand"])
    chart.lab("17861-6", 9.8, "mg/dL", low=8.8, high=10.8)
    chart.lab("1751-7", 3.9, "g/dL", low=3.4, high=4.7)
    chart.lab("2777-1", 5.8, "mg/dL", low=4.0, high=7.0)
    _iv_calcium(chart, 30, {"text": "Left hand"})
    assert ("infection-mimic" in raised(chart.assess())) is mimic


# ----- item 6: children -------------------------------------------------------------------------------


def test_normal_infant_values_are_not_metastatic() -> None:
    # Infant calcium 10.6 and phosphate 6.8, each inside the lab's age range: the adult product of
    # 72 and the adult albumin anchor must not make a metastatic pattern.
    chart = Chart(birth_date=born(0.5))
    chart.calcinosis(body_sites=["Right thigh"])
    chart.lab("17861-6", 10.6, "mg/dL", low=8.8, high=11.0)
    chart.lab("1751-7", 3.5, "g/dL", low=3.4, high=4.7)
    chart.lab("2777-1", 6.8, "mg/dL", low=4.5, high=7.0)
    chart.lab("2160-0", 0.3, "mg/dL", low=0.1, high=0.4)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.subtype(Subtype.METASTATIC).likelihood.value == "unlikely"
    caxp = assessment.derived_value("calcium-phosphate-product")
    assert caxp is not None and caxp.value is not None and caxp.value > KB.value("caxp-metastatic")
    assert any(c.outcome == "not applied" for c in caxp.comparisons)
    corrected = assessment.derived_value("corrected-calcium")
    assert corrected is not None and corrected.value == 10.6
    # PTH stays in the baseline of section 5.0; the metastatic workup (25-OH vitamin D) does not.
    assert "vitamin-d-25oh" not in workup(assessment)


def test_the_same_values_in_an_adult_are_metastatic() -> None:
    chart = Chart(birth_date=born(40))
    chart.calcinosis()
    chart.lab("17861-6", 10.6, "mg/dL", low=8.8, high=11.0)
    chart.lab("1751-7", 3.5, "g/dL", low=3.4, high=4.7)
    chart.lab("2777-1", 6.8, "mg/dL", low=4.5, high=7.0)
    assessment = chart.assess()
    assert assessment is not None
    assert "CC-MET-CAXP" in assessment.subtype(Subtype.METASTATIC).rule_ids


def test_a_child_with_a_value_outside_the_range_keeps_the_product_reading() -> None:
    chart = Chart(birth_date=born(8))
    chart.calcinosis()
    chart.lab("17861-6", 10.2, "mg/dL", low=8.8, high=10.8)
    chart.lab("1751-7", 4.2, "g/dL", low=3.5, high=5.2)
    chart.lab("2777-1", 7.4, "mg/dL", low=3.7, high=5.6)
    assessment = chart.assess()
    assert assessment is not None
    assert {"CC-MET-P", "CC-MET-CAXP"} <= set(assessment.subtype(Subtype.METASTATIC).rule_ids)


@pytest.mark.parametrize(
    ("sites", "text", "label"),
    [
        (["Both hands"], None, "circumscripta"),
        (["Fingers"], None, "circumscripta"),
        (["Elbows, knees and buttocks"], None, "universalis"),
        ([], "Calcinosis cutis of both hands", "circumscripta"),
        ([], "Calcinosis cutis of elbows and knees", "universalis"),
        (["Feet"], None, "circumscripta"),
    ],
)
def test_plural_and_multi_region_site_text(sites: list[str], text: str | None, label: str) -> None:
    chart = Chart()
    chart.calcinosis(body_sites=sites or None, text=text)
    assessment = chart.assess()
    assert assessment is not None and assessment.distribution.label.value == label


# ----- item 10: codes now confirmed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "analyte"),
    [
        ("1649-3", Analyte.VITAMIN_D_1_25),
        ("62290-2", Analyte.VITAMIN_D_1_25),
        ("2729-2", Analyte.PTHRP),
        ("31290-0", Analyte.ANTI_CENTROMERE),
        ("29966-9", Analyte.ANTI_CENTROMERE),
        ("30341-2", Analyte.ESR),
        ("1988-5", Analyte.CRP),
        ("32708-0", Analyte.ANCA),
        ("27818-4", Analyte.PROTEIN_C),
        ("6303-2", Analyte.LUPUS_ANTICOAGULANT),
        ("2779-7", Analyte.URINE_PHOSPHATE_24H),
        ("2701-1", Analyte.URINE_OXALATE_24H),
        ("8302-2", Analyte.BODY_HEIGHT),
    ],
)
def test_confirmed_codes_recognise_results_on_file(code: str, analyte: Analyte) -> None:
    assert analyte in default_terminology().match_code(LOINC, code)


def test_orders_carry_the_confirmed_codes() -> None:
    codes = {item.id: item.code.code for item in KB.workup if item.code is not None}
    assert codes["vitamin-d-1-25"] == "1649-3"
    assert codes["pthrp"] == "2729-2"
    assert codes["lipid-panel"] == "57698-3"
    assert codes["urine-oxalate-24h"] == "2701-1"
    assert codes["urine-phosphate-24h"] == "2779-7"
    assert {codes["esr"], codes["crp"], codes["anca"]} == {"30341-2", "1988-5", "32708-0"}
    assert "anti-centromere" not in codes  # no confirmed order code: ordered by name


def test_a_result_on_file_under_the_reference_lab_code_closes_the_1_25_gap() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(11.6, 4.1, 3.1, egfr=90)
    chart.lab("17861-6", 11.5, "mg/dL", 20)
    missing = workup(chart.assess())
    assert "vitamin-d-1-25" in missing
    chart.lab("62290-2", 44, "pg/mL", 10)
    assert "vitamin-d-1-25" not in workup(chart.assess())


def test_suspected_calciphylaxis_orders_coded_coagulation_and_inflammation_tests() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition(None, text="Necrotic ulcers with eschar, both thighs")
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=2000)
    chart.mineral_panel(9.5, 3.8, 5.5, egfr=None)
    items = workup(chart.assess())
    assert {"protein-c", "protein-s", "lupus-anticoagulant", "crp", "esr", "anca"} <= items
    chart.lab("27818-4", 85, "%", 5)
    assert "protein-c" not in workup(chart.assess())


# ----- 5.3: milia-like idiopathic calcinosis cutis (children, Down syndrome) -------------------------


def _child_papules(age: float, down: str | None) -> Chart:
    """Multiple small calcified papules with normal labs (the lab's age-specific ranges)."""
    chart = Chart(gender="male", birth_date=born(age))
    chart.calcinosis(body_sites=["Both hands"], onset_days_ago=30)
    if down is not None:
        chart.condition(None, text=down)
    chart.lab("17861-6", 9.6, "mg/dL", low=8.8, high=10.8)
    chart.lab("1751-7", 4.3, "g/dL", low=3.5, high=5.2)
    chart.lab("2777-1", 4.6, "mg/dL", low=3.7, high=5.6)
    chart.medication("Cetirizine 10 MG Oral Tablet", 300)
    return chart


ADULT = default_knowledge().value("adult-age-years")


@pytest.mark.parametrize(
    ("age", "down", "named"),
    [
        (6, "Down syndrome", True),
        (ADULT - 0.2, "Trisomy 21", True),  # a child, just below the adult age
        (ADULT + 0.2, "Down syndrome", False),  # an adult, just above it
        (6, None, False),  # no Down syndrome on record
        (6, "Family history of Down syndrome", False),  # not the patient's
    ],
)
def test_milia_like_idiopathic_calcinosis_is_named_in_a_child_with_down_syndrome(
    age: float, down: str | None, named: bool
) -> None:
    assessment = _child_papules(age, down).assess()
    assert assessment is not None
    found = {e.entity_id: e for e in assessment.idiopathic_entities}
    assert ("milia-like-idiopathic-calcinosis" in found) is named
    if named:
        entity = found["milia-like-idiopathic-calcinosis"]
        assert entity.finding.sources == ("regionalderm",)
        assert any(down in (e.display or "") for e in entity.finding.evidence)
        detail = card_statements(assessment, default_knowledge()).subtype.evidence
        assert "Picture fits milia-like idiopathic calcinosis cutis: a child with Down syndrome" in detail


def test_calcinosis_recorded_as_milia_like_is_named_at_any_age() -> None:
    chart = Chart(gender="female", birth_date=born(40))
    chart.condition(None, text="Milia-like calcinosis cutis of the face")
    chart.mineral_panel(9.4, 4.2, 3.5)
    chart.medication("Cetirizine 10 MG Oral Tablet", 300)
    assessment = chart.assess()
    assert assessment is not None
    assert "milia-like-idiopathic-calcinosis" in {e.entity_id for e in assessment.idiopathic_entities}


def test_the_scrotal_scenario_card_names_its_idiopathic_entity() -> None:
    """#12 item 4: the entity is named on the card's first screen, not only in the extension."""
    chart = Chart(gender="male", birth_date=born(27))
    chart.calcinosis(body_sites=["Scrotum"])
    chart.mineral_panel(9.4, 4.3, 3.4)
    chart.medication("Cetirizine 10 MG Oral Tablet", 300)
    assessment = chart.assess()
    assert assessment is not None
    statement = card_statements(assessment, default_knowledge()).subtype
    assert any(line.startswith("Picture fits idiopathic scrotal calcinosis") for line in statement.evidence)
    assert "scrotal" not in statement.summary  # a suggestion about the name, kept out of the headline


def test_an_entity_is_not_named_on_the_card_when_a_differential_is_raised() -> None:
    """An elbow nodule fits the site of tumoral calcinosis, but with gout on record the gouty tophus
    differential is the lead: the card does not add a second, weaker name."""
    for gout in (False, True):
        chart = Chart(gender="male", birth_date=born(60))
        chart.calcinosis(body_sites=["Left elbow"])
        chart.mineral_panel(9.2, 4.2, 3.4, 20)
        chart.medication("Cetirizine 10 MG Oral Tablet", 300)
        if gout:
            chart.condition("M10.9", ICD10, "Gout, unspecified")
        assessment = chart.assess()
        assert assessment is not None
        assert "tumoral-calcinosis" in {e.entity_id for e in assessment.idiopathic_entities}
        evidence = card_statements(assessment, default_knowledge()).subtype.evidence
        assert any(line.startswith("Picture fits tumoral calcinosis") for line in evidence) is not gout
