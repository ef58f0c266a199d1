"""Section 15.5 on patient-view for the imaging items of the workup: a radiograph or bone scan
ordered and not yet done is "on file" within the item's look-back, as a lab order is
(tests/test_pending_workup.py). The order is recognised by the same value sets as a performed
Procedure (`plain-radiography`, `bone-scintigraphy`: code or name), so a chest radiograph, which the
value set excludes by name, does not count. Scenarios: a FHIR Bundle in, the workup out."""

from __future__ import annotations

from typing import Any

import pytest

from calcinosis.knowledge_base import default_knowledge
from tests.charts import ICD10, SNOMED, Chart, codeable, coding, when
from tests.test_pending_workup import INTERNAL, assessed, day
from tests.test_pending_workup import workup_card as any_workup_card

KB = default_knowledge()
ANNUAL_DAYS = KB.days("annual-lookback-days")
RADIOGRAPHY = "363680008"  # in the plain-radiography value set
CHEST_XRAY = "399208008"  # Plain chest X-ray: not in it
RADIOGRAPH_LABEL = "Plain radiograph of the affected area"


def calcinosis_chart() -> Chart:
    """Calcinosis cutis, a current mineral panel, no imaging ever: a plain radiograph is a gap."""
    chart = Chart("pend-img-1")
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6, days_ago=5)
    return chart


def calciphylaxis_chart() -> Chart:
    """Necrotic ulcers on hemodialysis with warfarin and a high phosphate: calciphylaxis suspected,
    so bone scintigraphy is a workup item (and biopsy is withheld)."""
    chart = Chart("pend-img-2")
    chart.calcinosis()
    chart.condition(None, text="Necrotic ulcer with black eschar, left thigh", body_sites=["Left thigh"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=6 * 365)
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")
    chart.mineral_panel(9.5, 3.2, 6.2, egfr=None)
    return chart


def imaging_ordered(
    chart: Chart, text: str, days_ago: float, *, code: str | None = None, status: str = "active"
) -> dict[str, Any]:
    """An imaging ServiceRequest placed `days_ago`: coded in SNOMED CT when `code`, else by name only."""
    concept = codeable(text, *((coding(SNOMED, code, text),) if code else ()))
    return chart.add_service_request(chart._id("sr"), concept, status=status, authored=when(days_ago))


def gaps_and_pending(chart: Chart) -> tuple[set[str], set[str]]:
    assessment = assessed(chart)
    return {g.item_id for g in assessment.workup}, {p.item_id for p in assessment.pending_workup}


def workup_card(chart: Chart) -> dict[str, Any]:
    """The chart's workup card, which these charts always have."""
    card = any_workup_card(chart)
    assert card is not None
    return card


def suggested_tests(card: dict[str, Any]) -> set[str]:
    """The names of the tests the card's suggestions would order (imaging orders carry the name,
    not a code: the catalogue has no confirmed code for them)."""
    return {str(action["resource"]["code"].get("text")) for s in card.get("suggestions", []) for action in s["actions"]}


def test_without_an_order_the_radiograph_is_suggested() -> None:
    """The baseline the other scenarios differ from."""
    chart = calcinosis_chart()
    assert "plain-radiograph" in gaps_and_pending(chart)[0]
    assert RADIOGRAPH_LABEL in suggested_tests(workup_card(chart))


@pytest.mark.parametrize(
    ("status", "pending"),
    [("active", True), ("completed", False), ("revoked", False), ("on-hold", False), ("draft", False)],
)
def test_an_active_radiograph_order_is_not_suggested_again(status: str, pending: bool) -> None:
    """An active order for a hand radiograph (coded) from 10 days ago: not suggested, and the card
    says it is ordered with its result pending, on the first screen, without internal words."""
    chart = calcinosis_chart()
    imaging_ordered(chart, "X-ray of left hand", 10, code=RADIOGRAPHY, status=status)
    card = workup_card(chart)
    assert (RADIOGRAPH_LABEL in suggested_tests(card)) is not pending
    line = f"{RADIOGRAPH_LABEL} ordered {day(10)}, result pending."
    assert (line in card["detail"].split("\n\n")[0]) is pending
    if pending:
        assert not INTERNAL.search(card["detail"]), card["detail"]
        entry = next(e for e in card["extension"]["org.calcinosis-cds.workup"] if e["item"] == "plain-radiograph")
        assert entry["suggested"] is False and entry["resultPending"] is True
        assert entry["orderedOn"] == when(10)[:10]


def test_a_radiograph_ordered_by_name_only_counts() -> None:
    """The value set recognises a radiograph by name too ("x-ray"), as it does a Procedure on file."""
    chart = calcinosis_chart()
    imaging_ordered(chart, "XR hand 2 views (x-ray)", 3)
    gaps, pending = gaps_and_pending(chart)
    assert "plain-radiograph" in pending and "plain-radiograph" not in gaps


@pytest.mark.parametrize(("days_ago", "pending"), [(ANNUAL_DAYS - 1, True), (ANNUAL_DAYS + 1, False)])
def test_a_radiograph_order_counts_within_the_look_back_only(days_ago: float, pending: bool) -> None:
    """The radiograph's look-back is a year: an order placed before it is stale."""
    chart = calcinosis_chart()
    imaging_ordered(chart, "X-ray of left hand", days_ago, code=RADIOGRAPHY)
    gaps, pendings = gaps_and_pending(chart)
    assert ("plain-radiograph" in pendings) is pending
    assert ("plain-radiograph" in gaps) is not pending


@pytest.mark.parametrize(
    ("text", "code"),
    [("Chest X-ray", None), ("Plain chest X-ray", CHEST_XRAY)],
)
def test_a_chest_radiograph_order_does_not_count(text: str, code: str | None) -> None:
    """The value set excludes chest radiographs by name (they do not image the skin), and the
    chest code is not in it: the hand radiograph is still suggested."""
    chart = calcinosis_chart()
    imaging_ordered(chart, text, 5, code=code)
    gaps, pending = gaps_and_pending(chart)
    assert "plain-radiograph" in gaps and "plain-radiograph" not in pending
    assert RADIOGRAPH_LABEL in suggested_tests(workup_card(chart))


def test_a_radiograph_order_for_another_patient_does_not_count() -> None:
    chart = calcinosis_chart()
    placed = imaging_ordered(chart, "X-ray of left hand", 10, code=RADIOGRAPHY)
    placed["subject"] = {"reference": "Patient/someone-else"}
    assert "plain-radiograph" in gaps_and_pending(chart)[0]


def test_a_lab_order_does_not_take_the_radiograph_out() -> None:
    """A pending lab order is on file for its own item only."""
    chart = calcinosis_chart()
    chart.lab_ordered("2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma", 10)
    gaps, pending = gaps_and_pending(chart)
    assert "plain-radiograph" in gaps and "pth-intact" in pending


@pytest.mark.parametrize(
    ("status", "days_ago", "pending"),
    [
        ("active", 7, True),
        ("completed", 7, False),
        ("active", ANNUAL_DAYS - 1, True),
        ("active", ANNUAL_DAYS + 1, False),
    ],
)
def test_a_bone_scan_ordered_is_on_file_while_calciphylaxis_is_suspected(
    status: str, days_ago: float, pending: bool
) -> None:
    """Bone scintigraphy has no code; the value set knows it by name ("bone scan"). An active
    order inside the yearly look-back keeps it out of the suggestions; completed (without a
    Procedure on file) or placed before the look-back, it is suggested."""
    chart = calciphylaxis_chart()
    imaging_ordered(chart, "NM bone scan, whole body", days_ago, status=status)
    gaps, pendings = gaps_and_pending(chart)
    assert ("bone-scintigraphy" in pendings) is pending
    assert ("bone-scintigraphy" in gaps) is not pending
    assert "skin-biopsy" not in gaps  # still withheld while calciphylaxis is suspected


def test_an_open_skin_biopsy_order_does_not_hide_the_biopsy_for_good() -> None:
    """A biopsy done counts 'ever' (no look-back), so an order nobody closed would hide the
    suggestion for good: only items with a look-back read pending orders."""
    chart = calcinosis_chart()
    gaps, _ = gaps_and_pending(chart)
    assert "skin-biopsy" in gaps  # the picture is uncertain: a biopsy is suggested
    imaging_ordered(chart, "Skin biopsy", 3000)
    gaps, pending = gaps_and_pending(chart)
    assert "skin-biopsy" in gaps and "skin-biopsy" not in pending
