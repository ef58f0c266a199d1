"""Hypercalcemia: the cause named and the workup suggested rest on one reading of the PTH (issue 12
item 4; clinical-knowledge.md 5.2 and section 3): a FHIR chart in, the assessment and cards out.

A PTH below the knowledge base's `pth-suppressed` level, with no lab range, is suppressed for the
cause (hypercalcemia of malignancy) and for the workup alike: PTHrP and electrophoresis, not a
24-hour urine calcium (which is for a PTH-dependent hypercalcemia, to exclude FHH).
"""

from __future__ import annotations

import uuid

import pytest

from calcinosis.assessment import Assessment, MetabolicCause
from calcinosis.knowledge_base import default_knowledge
from hooks.cards import render_cards
from tests.charts import ICD10, Chart

KB = default_knowledge()
SUPPRESSED = KB.value("pth-suppressed")
PTH_UPPER = KB.value("pth-upper")
PTH_INDEPENDENT = {"pthrp", "serum-protein-electrophoresis"}
PTH_DEPENDENT = "urine-calcium-24h"


def hypercalcemia_chart(pth: float, *, malignancy: bool = True) -> Chart:
    """Calcium 11.9 mg/dL (albumin 4.1) with a normal phosphate and eGFR, and an intact PTH with
    no reference range on the Observation."""
    chart = Chart(gender="female")
    chart.calcinosis()
    if malignancy:
        chart.condition("C50.911", ICD10, "Malignant neoplasm of unspecified site of right female breast")
    chart.mineral_panel(11.9, 4.1, 3.4, egfr=88)
    chart.lab("2731-8", pth, "pg/mL")
    return chart


def suggested(assessment: Assessment | None) -> set[str]:
    assert assessment is not None
    return {gap.item_id for gap in assessment.workup}


def causes(assessment: Assessment | None) -> set[MetabolicCause]:
    assert assessment is not None
    return {c.cause for c in assessment.causes}


def workup_text(assessment: Assessment | None) -> str:
    assert assessment is not None
    cards = render_cards(assessment, KB, uuid.UUID(int=9), "pat-1", workup_cap=10)
    card = next(c for c in cards if c.source.topic is not None and c.source.topic.code == "workup")
    labels = " ".join(s.label for s in card.suggestions or [])
    return f"{card.summary} {card.detail or ''} {labels}"


def test_a_pth_below_the_suppressed_level_without_a_range_asks_for_pthrp_and_electrophoresis() -> None:
    assessment = hypercalcemia_chart(SUPPRESSED * 0.6).assess()  # 12 pg/mL at the shipped level
    assert MetabolicCause.MALIGNANCY in causes(assessment)
    assert suggested(assessment) >= PTH_INDEPENDENT
    assert PTH_DEPENDENT not in suggested(assessment)
    text = workup_text(assessment)
    assert "PTHrP" in text and "electrophoresis" in text
    assert "24-hour urine calcium" not in text


def test_the_same_pth_without_a_malignancy_still_asks_for_the_pth_independent_workup() -> None:
    assessment = hypercalcemia_chart(SUPPRESSED * 0.6, malignancy=False).assess()
    assert MetabolicCause.PRIMARY_HYPERPARATHYROIDISM not in causes(assessment)
    assert suggested(assessment) >= PTH_INDEPENDENT
    assert PTH_DEPENDENT not in suggested(assessment)


@pytest.mark.parametrize("pth", [SUPPRESSED, (SUPPRESSED + PTH_UPPER) / 2, PTH_UPPER * 2])
def test_a_pth_not_suppressed_takes_the_phpt_and_fhh_branch(pth: float) -> None:
    # At the suppressed level itself (not below it), within range, or above the upper limit.
    assessment = hypercalcemia_chart(pth, malignancy=False).assess()
    assert MetabolicCause.PRIMARY_HYPERPARATHYROIDISM in causes(assessment)
    assert MetabolicCause.MALIGNANCY not in causes(assessment)
    assert PTH_DEPENDENT in suggested(assessment)
    assert not PTH_INDEPENDENT & suggested(assessment)
    assert "24-hour urine calcium" in workup_text(assessment)


def test_a_pth_below_the_labs_own_lower_limit_is_suppressed_too() -> None:
    # Above the fixed level but flagged below the lab's range: suppressed for cause and workup.
    chart = Chart(gender="female")
    chart.calcinosis()
    chart.condition("C50.911", ICD10, "Malignant neoplasm of unspecified site of right female breast")
    chart.mineral_panel(11.9, 4.1, 3.4, egfr=88)
    chart.lab("2731-8", SUPPRESSED + 2, "pg/mL", low=SUPPRESSED + 5, high=PTH_UPPER)
    assessment = chart.assess()
    assert MetabolicCause.MALIGNANCY in causes(assessment)
    assert suggested(assessment) >= PTH_INDEPENDENT
    assert PTH_DEPENDENT not in suggested(assessment)
