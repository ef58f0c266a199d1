"""FHIR mapping edge cases real EHR data brings: statuses, dates, comparators, components,
missing values, medication shapes and malformed resources (one test each)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from calcinosis.findings import Analyte, DrugClass, Interpretation, LabResult
from fhir_mapping import assess_resources, bundle_resources, map_resources, parse_datetime
from fhir_mapping.pipeline import USED_ELEMENTS, default_terminology, validation_problem, warm_up_samples
from tests.charts import AS_OF, LOINC, RXNORM, UCUM, Chart, when


def labs_of(chart: Chart, analyte: Analyte) -> list[LabResult]:
    mapped = map_resources(bundle_resources(chart.bundle()), default_terminology(), AS_OF, chart.patient_id)
    return [lab for lab in mapped.findings.labs if lab.analyte is analyte]


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("registered", False),
        ("cancelled", False),
        ("entered-in-error", False),
    ],
)
def test_observation_status(status: str, counts: bool) -> None:
    chart = Chart()
    chart.lab("17861-6", 9.5, "mg/dL", status=status)
    assert bool(labs_of(chart, Analyte.CALCIUM_TOTAL)) is counts


def test_preliminary_only_result_is_a_workup_gap() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.lab("2777-1", 3.3, "mg/dL", 2, status="preliminary")
    assessment = chart.assess()
    assert assessment is not None
    assert "serum-phosphate" in {g.item_id for g in assessment.workup}


def test_comparator_is_kept() -> None:
    chart = Chart()
    chart.lab("2731-8", 3, "pg/mL", comparator="<")
    (lab,) = labs_of(chart, Analyte.PTH_INTACT)
    assert lab.comparator == "<" and lab.value == 3


def test_effective_period_uses_its_end() -> None:
    chart = Chart()
    chart.lab("17861-6", 9.5, "mg/dL", 10, date_field="effectivePeriod")
    (lab,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert lab.effective == parse_datetime(when(10))


def test_issued_only_is_used_and_flagged() -> None:
    chart = Chart()
    chart.lab("17861-6", 9.5, "mg/dL", 10, date_field="issued")
    (lab,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert lab.date_from_issued and lab.effective == parse_datetime(when(10))


def test_no_date_at_all_skips_the_resource() -> None:
    chart = Chart()
    chart.lab("17861-6", 9.5, "mg/dL", 10, date_field="none")
    mapped = map_resources(bundle_resources(chart.bundle()), default_terminology(), AS_OF)
    assert mapped.findings.resources_skipped == 1
    assert not mapped.findings.labs


def test_components_of_a_panel_are_read() -> None:
    chart = Chart()
    chart.add(
        {
            "resourceType": "Observation",
            "id": "panel-1",
            "status": "final",
            "code": {
                "coding": [{"system": LOINC, "code": "24346-9", "display": "Parathyrin.intact and Calcium panel"}]
            },
            "subject": chart.subject,
            "effectiveDateTime": when(3),
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "2731-8"}]},
                    "valueQuantity": {"value": 88, "unit": "pg/mL", "system": UCUM, "code": "pg/mL"},
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "17861-6"}]},
                    "valueQuantity": {"value": 10.1, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                    "interpretation": [{"coding": [{"code": "H"}]}],
                },
            ],
        }
    )
    (pth,) = labs_of(chart, Analyte.PTH_INTACT)
    (calcium,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert pth.value == 88 and calcium.value == 10.1
    assert calcium.interpretation is Interpretation.HIGH and pth.source.reference == "Observation/panel-1"


def test_missing_value_is_unusable_not_zero() -> None:
    chart = Chart()
    chart.lab("17861-6", None, None)
    (lab,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert not lab.usable and lab.value is None and "no value" in (lab.unusable_reason or "")


def test_value_without_unit_is_unusable() -> None:
    chart = Chart()
    chart.lab("17861-6", 9.4, None)
    (lab,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert not lab.usable and lab.unusable_reason == "no unit given"


def test_unit_spellings_fold() -> None:
    chart = Chart()
    chart.lab("17861-6", 2.5, "MMOL/L", ucum_code=False)
    chart.lab("14682-9", 300, "µmol/L", ucum_code=False)
    (calcium,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    (creatinine,) = labs_of(chart, Analyte.CREATININE)
    assert calcium.value == pytest.approx(10.02) and creatinine.value == pytest.approx(3.393)


def test_reference_range_in_si_units_is_normalised() -> None:
    chart = Chart()
    chart.lab("2000-8", 2.5, "mmol/L", low=2.15, high=2.55)
    (lab,) = labs_of(chart, Analyte.CALCIUM_TOTAL)
    assert lab.reference_high == pytest.approx(2.55 * 4.008)


def test_resources_of_another_patient_are_rejected() -> None:
    chart = Chart()
    chart.lab("17861-6", 9.5, "mg/dL")
    other = chart.lab("17861-6", 13.5, "mg/dL")
    other["subject"] = {"reference": "Patient/someone-else"}
    assert [lab.value for lab in labs_of(chart, Analyte.CALCIUM_TOTAL)] == [9.5]


def test_malformed_resources_are_skipped_and_counted_never_raised() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    chart.resources.extend(
        [
            "not a resource",  # type: ignore[list-item]
            {"resourceType": "Observation"},
            {"resourceType": "Observation", "id": "x", "status": "final", "code": {"coding": "oops"}},
            {
                "resourceType": "Observation",
                "id": "y",
                "status": 7,
                "code": {"coding": [{"system": LOINC, "code": "17861-6"}]},
            },
            {"resourceType": "Condition", "id": "z", "code": {"coding": [{"system": None, "code": ["L94.2"]}]}},
            {"resourceType": "MedicationRequest", "id": "m", "status": "active"},
            {
                "resourceType": "Observation",
                "id": "w",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "2777-1"}]},
                "effectiveDateTime": "yesterday",
                "valueQuantity": {"value": "high"},
            },
        ]
    )
    result = assess_resources(bundle_resources(chart.bundle()), AS_OF, chart.patient_id)
    assert result.assessment is not None
    assert result.findings.resources_skipped >= 4


def test_cited_resource_failing_fhir_validation_is_dropped() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    bad = chart.lab("2777-1", 9.9, "mg/dL", 1)
    bad["valueQuantity"]["unit"] = 42  # invalid FHIR, but the value is readable
    bad["valueQuantity"].pop("code")
    bad["valueQuantity"]["code"] = "mg/dL"
    bad["status"] = "final"
    bad["subject"] = {"reference": f"Patient/{chart.patient_id}", "unexpected": True}
    assessment = chart.assess()
    assert assessment is not None
    assert f"Observation/{bad['id']}" not in assessment.evidence_references
    assert any(bad["id"] in issue and "validation" in issue for issue in assessment.data_quality.issues)


def test_contained_and_referenced_medications() -> None:
    chart = Chart()
    chart.add(
        {
            "resourceType": "MedicationRequest",
            "id": "mr-contained",
            "status": "active",
            "intent": "order",
            "subject": chart.subject,
            "authoredOn": when(100),
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "m1",
                    "code": {
                        "coding": [{"system": RXNORM, "code": "855332", "display": "warfarin sodium 5 MG Oral Tablet"}]
                    },
                }
            ],
            "medicationReference": {"reference": "#m1"},
        }
    )
    chart.add({"resourceType": "Medication", "id": "calcitriol", "code": {"text": "Calcitriol 0.25 MCG Oral Capsule"}})
    chart.add(
        {
            "resourceType": "MedicationStatement",
            "id": "ms-ref",
            "status": "active",
            "subject": chart.subject,
            "effectivePeriod": {"start": when(50)},
            "medicationReference": {"reference": "Medication/calcitriol"},
        }
    )
    mapped = map_resources(bundle_resources(chart.bundle()), default_terminology(), AS_OF)
    classes = {m.drug_class for m in mapped.findings.medications}
    assert {DrugClass.WARFARIN, DrugClass.ACTIVE_VITAMIN_D} <= classes
    assert mapped.findings.has_medication_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-04", datetime(2026, 3, 4, tzinfo=UTC)),
        ("2026-03", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-03-04T10:00:00+02:00", datetime(2026, 3, 4, 8, tzinfo=UTC)),
        ("2026-03-04T10:00:00.123Z", datetime(2026, 3, 4, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-03-04T10:00:00", datetime(2026, 3, 4, 10, tzinfo=UTC)),
        ("2026-03-04 10:00:00", None),
        ("2026-02-30", None),
        ("04/03/2026", None),
        (20260304, None),
    ],
)
def test_parse_datetime(text: Any, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_mapping_does_not_mutate_the_input() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    bundle = chart.bundle()
    before = copy.deepcopy(bundle)
    assess_resources(bundle_resources(bundle), AS_OF, chart.patient_id)
    assert bundle == before


def test_results_beyond_the_retention_window_are_not_read_except_the_newest() -> None:
    chart = Chart()
    for days_ago in (5, 800, 900, 1500):
        chart.lab("17861-6", 9.0 + days_ago / 10000, "mg/dL", days_ago)
    mapped = map_resources(bundle_resources(chart.bundle()), default_terminology(), AS_OF, chart.patient_id, 730)
    ages = sorted(round((AS_OF - lab.effective).days) for lab in mapped.findings.labs)
    assert ages == [5, 800]


def test_validation_outcomes_are_cached_by_content() -> None:
    from fhir_mapping.pipeline import ValidationCache, validation_problem

    cache = ValidationCache(max_entries=2)
    good = {"resourceType": "Observation", "id": "a", "status": "final", "code": {"text": "x"}}
    bad = {
        "resourceType": "Observation",
        "id": "b",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": "x"},
    }
    assert validation_problem(good, cache) is None
    problem = validation_problem(bad, cache)
    assert problem is not None and "valueQuantity" in problem
    assert validation_problem(bad, cache) == problem
    changed = dict(bad, valueQuantity={"value": 1})
    assert validation_problem(changed, cache) is None  # different content, validated afresh
    assert len(cache._entries) == 2  # bounded


def test_the_start_up_samples_are_valid_so_they_build_every_validator_they_name() -> None:
    """A sample that failed validation early would leave nested validators unbuilt, and the first
    request would pay for them again."""
    samples = warm_up_samples()
    assert all(validation_problem(sample, cache=None) is None for sample in samples)
    # Each element name is one FHIR data type wherever it stands, and the nested models are shared
    # between resource types: every name validated anywhere is in some sample.
    used = {element for sample in samples for element in sample}
    wanted = {element for elements in USED_ELEMENTS.values() for element in elements}
    assert wanted <= used, sorted(wanted - used)
    assert {sample["resourceType"] for sample in samples} == set(USED_ELEMENTS)
