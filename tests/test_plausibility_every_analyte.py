"""Physiologically impossible values for every analyte the rules read (issue 12 item 7): a FHIR
chart in, the assessment out.

Every `plausible-max-*` entry of thresholds.json is tested on both sides of its limit, in its own
unit, with the LOINC code of its value set; zero, negative and non-finite values are tested for
every analyte (a non-finite value cannot travel in FHIR JSON; one produced by a unit conversion
is tested in test_kidney_and_plausibility). A PTHrP of 1e308 with a lab range once named hypercalcemia of malignancy with no
implausible value counted.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from calcinosis.assessment import Assessment, MetabolicCause
from calcinosis.context import ZERO_IS_A_READING, unit_key
from calcinosis.findings import CANONICAL_UNITS, Analyte
from calcinosis.knowledge_base import default_knowledge
from tests.charts import Chart
from tests.fhir_chart import LOINC

KB = default_knowledge()
VALUESETS = Path(__file__).resolve().parent.parent / "fhir_mapping" / "valuesets"
PREFIX = "plausible-max-"
MAXIMA = sorted(key for key in KB.thresholds if key.startswith(PREFIX))


@cache
def loinc(analyte: Analyte) -> str:
    """The first LOINC code of the analyte's value set that the mapping uses (not one marked
    unconfirmed): the code an EHR sends."""
    valueset = json.loads((VALUESETS / f"{analyte.value}.json").read_text(encoding="utf-8"))
    for include in valueset["compose"]["include"]:
        if include.get("system") != LOINC:
            continue
        for concept in include.get("concept", []):
            status = {e["url"].rsplit(":", 1)[-1]: e.get("valueCode") for e in concept.get("extension", [])}
            if status.get("code-status") != "unconfirmed":
                return str(concept["code"])
    raise AssertionError(f"no LOINC code in the value set of {analyte.value}")


def implausible(analyte: Analyte, value: float, unit: str | None) -> int:
    chart = Chart()
    chart.calcinosis()
    chart.lab(loinc(analyte), value, unit)
    assessment = chart.assess()
    assert assessment is not None
    return assessment.data_quality.implausible_values


def test_every_quantitative_analyte_the_rules_read_has_a_plausible_maximum() -> None:
    read_by_value = {a for a, unit in CANONICAL_UNITS.items() if unit is not None}
    listed = {Analyte(key.removeprefix(PREFIX)) for key in MAXIMA}
    assert read_by_value <= listed
    assert {
        Analyte.PTHRP,
        Analyte.CRP,
        Analyte.ESR,
        Analyte.URINE_OXALATE_24H,
        Analyte.URINE_PHOSPHATE_24H,
    } <= listed
    for key in MAXIMA:  # tagged as design choices, with the source convention of the others
        threshold = KB.threshold(key)
        assert threshold.evidence == "GK" and threshold.sources == ("Design-GK",), key
        canonical = CANONICAL_UNITS[Analyte(key.removeprefix(PREFIX))]
        if canonical is not None:
            assert threshold.unit == canonical, key  # compared with the normalised value


@pytest.mark.parametrize("key", MAXIMA)
def test_plausible_maximum_on_both_sides(key: str) -> None:
    analyte = Analyte(key.removeprefix(PREFIX))
    threshold = KB.threshold(key)
    assert implausible(analyte, threshold.value, threshold.unit) == 0
    assert implausible(analyte, threshold.value * 1.01, threshold.unit) == 1
    assert implausible(analyte, 1e308, threshold.unit) == 1


@pytest.mark.parametrize("key", MAXIMA)
def test_zero_and_negative_values_on_both_sides(key: str) -> None:
    analyte = Analyte(key.removeprefix(PREFIX))
    unit = KB.threshold(key).unit
    assert implausible(analyte, -1.0, unit) == 1
    assert implausible(analyte, 0.0, unit) == (0 if analyte in ZERO_IS_A_READING else 1)
    assert implausible(analyte, 0.1, unit) == 0


def _coded(analyte: Analyte) -> bool:
    """True when a lab can send the analyte under a LOINC code of its value set (some analytes are
    recognised by name only and cannot be sent as a coded result)."""
    try:
        loinc(analyte)
    except AssertionError:
        return False
    return True


WITHOUT_MAXIMUM = sorted(
    a
    for a in set(Analyte) - {Analyte(k.removeprefix(PREFIX)) for k in MAXIMA}
    if (VALUESETS / f"{a.value}.json").exists() and _coded(a)
)


def test_some_analytes_have_no_maximum_and_are_still_checked() -> None:
    assert WITHOUT_MAXIMUM, "every analyte has a maximum: the next test would check nothing"


@pytest.mark.parametrize("analyte", WITHOUT_MAXIMUM)
def test_an_analyte_without_a_maximum_still_rejects_negative_values(analyte: Analyte) -> None:
    assert implausible(analyte, -3.0, "1") == 1
    assert implausible(analyte, 5.0, "1") == 0


def test_the_maximum_of_a_result_kept_as_reported_applies_in_its_own_unit_only() -> None:
    # A CRP in mg/dL is not compared with a limit in mg/L; a 24-hour spelling "mg/d" is the same unit.
    limit = KB.value("plausible-max-crp")
    assert implausible(Analyte.CRP, limit * 2, "mg/L") == 1
    assert implausible(Analyte.CRP, limit * 2, "mg/dL") == 0
    oxalate = KB.value("plausible-max-urine-oxalate-24h")
    assert implausible(Analyte.URINE_OXALATE_24H, oxalate * 2, "mg/d") == 1
    assert unit_key("mg/(24.h)") == unit_key("mg/24 h") == unit_key("MG/D")


def malignancy_by_pthrp(pthrp: float) -> Assessment | None:
    """Hypercalcemia with an unsuppressed PTH and no malignancy coded: only a raised PTHrP (with
    the lab's range) can name hypercalcemia of malignancy."""
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(11.9, 4.1, 3.4)
    chart.lab("2731-8", 45, "pg/mL")
    chart.lab(loinc(Analyte.PTHRP), pthrp, "pg/mL", low=0.0, high=20.0)
    return chart.assess()


@pytest.mark.parametrize("pthrp", [1e308, KB.value("plausible-max-pthrp") * 1.01, -5.0, 0.0])
def test_an_impossible_pthrp_is_counted_and_names_no_malignancy(pthrp: float) -> None:
    assessment = malignancy_by_pthrp(pthrp)
    assert assessment is not None
    assert assessment.data_quality.implausible_values == 1
    assert MetabolicCause.MALIGNANCY not in {c.cause for c in assessment.causes}


def test_a_raised_pthrp_within_limits_names_hypercalcemia_of_malignancy() -> None:
    assessment = malignancy_by_pthrp(48.0)
    assert assessment is not None
    assert assessment.data_quality.implausible_values == 0
    assert MetabolicCause.MALIGNANCY in {c.cause for c in assessment.causes}
