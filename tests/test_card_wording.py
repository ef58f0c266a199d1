"""What a clinician or the EHR sees carries nothing internal, and the cards follow 11.4.

Every response of the scenario library (sandbox patients, test charts, Synthea backgrounds) is
scanned whole, extension included: no record ids, rule ids, evidence tags, "unconfirmed", "design
choice", file names, knowledge-base source keys or another patient's ids. Then the noise rules:
summary length, detail budget, word-boundary cuts, the workup cap, the differentials card only
when raised, risk factors only where they apply.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from calcinosis.knowledge_base import default_knowledge
from calcinosis.statements import DETAIL_BUDGET, SUMMARY_LIMIT, card_statements, suspected_calciphylaxis
from fhir_mapping import assess_resources
from hooks.service import CalcinosisService
from hooks.settings import Settings
from tests.charts import Chart
from tests.fhir_chart import ICD10
from tests.scenario_library import LibraryChart, library

INTERNAL = re.compile(
    r"(?-i:\b(?:CC|DX)-[A-Z]{2,}|\bGK\b)|unconfirmed|design choice|\.(?:json|py|md)\b|Design-|\bS-(?:2nd|abs)\b|"
    r"clinical-knowledge|terminology\.|disputed",
    re.IGNORECASE,
)
SERVICE = CalcinosisService(Settings(feedback_database_url="memory://", auth_disabled=True))
LIBRARY = library()


@cache
def response(name: str) -> dict[str, Any]:
    chart = next(c for c in LIBRARY if c.name == name)
    wire: dict[str, Any] = SERVICE.respond(chart.resources, chart.patient_id, uuid.UUID(int=11), chart.as_of).wire()
    return wire


def record_ids(chart: LibraryChart) -> set[str]:
    """Ids of the chart's resources other than the patient (whose id the orders must name)."""
    return {r["id"] for r in chart.resources if r.get("id") and r.get("resourceType") != "Patient"}


@pytest.mark.parametrize("name", [c.name for c in LIBRARY])
def test_no_internal_vocabulary_anywhere_in_the_response(name: str) -> None:
    chart = next(c for c in LIBRARY if c.name == name)
    text = json.dumps(response(name), ensure_ascii=False)
    found = INTERNAL.findall(text)
    assert not found, f"{name}: internal words {sorted(set(found))}"
    for resource_id in record_ids(chart):
        assert not re.search(rf"(?<![A-Za-z0-9-]){re.escape(resource_id)}(?![A-Za-z0-9-])", text), (
            f"{name}: record id {resource_id} in the response"
        )
    # The patient's id appears only as the subject of a draft order.
    without_subjects = text.replace(f'"Patient/{chart.patient_id}"', "")
    assert chart.patient_id not in without_subjects


def test_another_patients_resources_are_counted_not_named() -> None:
    chart = Chart("pat-own")
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    stray = chart.lab("2777-1", 9.9, "mg/dL", 3)
    stray["id"] = "stray-observation-of-someone-else"
    stray["subject"] = {"reference": "Patient/someone-else-42"}
    wire = SERVICE.respond(chart.resources, chart.patient_id, uuid.UUID(int=3), None).wire()
    text = json.dumps(wire)
    assert "someone-else-42" not in text and "stray-observation" not in text
    quality = wire["cards"][0]["extension"]["org.calcinosis-cds.assessment"]["dataQuality"]
    assert quality["resourcesSkipped"] >= 1


@pytest.mark.parametrize("name", [c.name for c in LIBRARY])
def test_summary_detail_and_labels_fit_the_panel(name: str) -> None:
    for card in response(name)["cards"]:
        assert len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning")
        assert len(card.get("detail", "")) <= DETAIL_BUDGET, (name, card["summary"])
        for label in [s["label"] for s in card.get("suggestions", [])] + [
            link["label"] for link in card.get("links", [])
        ]:
            # Cut only at a word boundary, and then marked.
            assert not label.endswith(("-", ",")), label
            if label.endswith("…"):
                assert label[-2] != " " and re.search(r"\w…$", label), label
        if card["summary"].endswith("…"):
            assert re.search(r"\w[)]?…$", card["summary"]), card["summary"]
        assert len(card.get("suggestions", [])) <= 5


@pytest.mark.parametrize("name", [c.name for c in LIBRARY])
def test_differentials_card_only_when_raised_or_unclassified(name: str) -> None:
    cards = response(name)["cards"]
    differentials = [c for c in cards if c["source"]["topic"]["code"] == "differentials"]
    if differentials:
        detail = differentials[0]["detail"]
        assert "nothing recorded for or against" not in detail
        unclassified = "cannot classify" in cards[0]["summary"]
        assert "raised by" in detail or unclassified, (name, detail)


def test_no_risk_factors_for_a_child_without_kidney_disease() -> None:
    cards = response("chart-child-eyelid-nodule")["cards"]
    assert "risk factor" not in json.dumps([c.get("detail", "") for c in cards]).lower()
    workup = next(c for c in cards if c["source"]["topic"]["code"] == "workup")
    assert len(workup["suggestions"]) <= 5


def test_suspected_calciphylaxis_leads_as_a_warning_with_the_biopsy_caution() -> None:
    subtype = response("chart-dialysis-necrotic-ulcer")["cards"][0]
    assert subtype["indicator"] == "warning"
    assert subtype["summary"].startswith("Consider calciphylaxis: dialysis patient")
    assert "necrotic ulcer" in subtype["summary"]
    assert "Avoid skin biopsy" in subtype["detail"]
    first_screen = subtype["detail"].split("\n\n")[0]
    assert "Suspected calciphylaxis" in first_screen and "risk factors" in first_screen


def test_values_in_the_labs_own_unit_with_the_conversion_in_brackets() -> None:
    detail = response("metastatic-esrd-si-units")["cards"][0]["detail"]
    assert re.search(r"Phosphate 2\.55 mmol/L \(7\.9 mg/dL\), above the lab's range [0-9.]+-[0-9.]+ mmol/L", detail), (
        detail
    )
    assert "mg2/dL2" not in detail and "{1.73_m2}" not in detail


def test_a_risk_pattern_without_skin_findings_is_elevated_risk_not_a_warning() -> None:
    subtype = response("calciphylaxis-risk-pattern")["cards"][0]
    assert subtype["indicator"] == "info"
    assert "Elevated calciphylaxis risk" in subtype["detail"]
    assert "calciphylaxis" not in subtype["summary"].lower()


def test_draft_orders_carry_no_note() -> None:
    for chart in LIBRARY:
        for card in response(chart.name)["cards"]:
            for suggestion in card.get("suggestions", []):
                resource = suggestion["actions"][0]["resource"]
                assert "note" not in resource
                assert resource["code"]["text"]


# ----- the summary leads with the pattern, so no cut removes it ----------------------------------


@pytest.mark.parametrize("name", [c.name for c in LIBRARY])
def test_every_summary_names_its_pattern_within_the_limit(name: str) -> None:
    """Each subtype summary carries the pattern it is about, inside the 140-character limit; a
    suspected calciphylaxis card says "calciphylaxis" before anything that could be cut."""
    chart = next(c for c in LIBRARY if c.name == name)
    assessment = assess_resources(chart.resources, chart.as_of, chart.patient_id).assessment
    if assessment is None:
        return
    statement = card_statements(assessment, default_knowledge()).subtype
    assert statement.pattern, name
    assert len(statement.summary) <= SUMMARY_LIMIT
    assert statement.pattern.lower() in statement.summary.lower(), (statement.pattern, statement.summary)
    assert response(name)["cards"][0]["summary"] == statement.summary
    if suspected_calciphylaxis(assessment):
        assert "calciphylaxis" in statement.summary.split(":")[0].lower(), statement.summary


LONG_TAIL = (
    ", surrounding violaceous retiform purpura extending from the left medial thigh over the buttock and"
    " flank, exquisitely painful, enlarging over three weeks despite dressings"
)


@pytest.mark.parametrize("tail", ["", LONG_TAIL], ids=["short-lesion-name", "long-lesion-name"])
def test_a_long_lesion_name_does_not_push_calciphylaxis_out_of_the_summary(tail: str) -> None:
    """The scenario that was cut before "consider calciphylaxis": a necrotic ulcer recorded as text
    with a long description. Short, the whole lesion is in the summary; long, the lesion words are
    cut at a word boundary and the pattern still leads."""
    chart = Chart("long-lesion", birth_date="1955-09-09")
    chart.calcinosis(body_sites=["left thigh"])
    chart.condition(None, text="Necrotic ulcer with black eschar" + tail, body_sites=["Left thigh"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=6 * 365)
    chart.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")
    chart.mineral_panel(9.5, 3.2, 6.2, egfr=None)
    assessment = chart.assess()
    assert assessment is not None and suspected_calciphylaxis(assessment)
    summary = card_statements(assessment, default_knowledge()).subtype.summary
    assert len(summary) <= SUMMARY_LIMIT
    assert summary.startswith("Consider calciphylaxis: dialysis patient with ")
    if tail:
        assert len("Consider calciphylaxis: " + tail) > SUMMARY_LIMIT, "the lesion name really is long"
        assert summary.endswith("…") and "necrotic ulcer with black eschar" in summary
    else:
        assert summary.endswith("necrotic ulcer with black eschar")


@pytest.mark.parametrize("long_name", [False, True], ids=["short-name", "long-name"])
def test_long_medication_or_condition_names_cut_only_the_supporting_words(long_name: bool) -> None:
    """An IV calcium product or a connective tissue disease with a long name: the pattern survives."""
    extra = (
        " in Sodium Chloride 0.9 % premixed infusion bag for peripheral administration, 1000 ML" if long_name else ""
    )
    iv = Chart("long-iv", birth_date="2026-02-01")
    iv.calcinosis(onset_days_ago=10, body_sites=["Left forearm"])
    iv.mineral_panel(9.6, 3.9, 5.0)
    iv.medication(
        "Calcium Gluconate 100 MG/ML Injectable Solution" + extra,
        30,
        kind="MedicationAdministration",
        route="Intravenous",
    )
    ctd = Chart("long-ctd")
    ctd.calcinosis(body_sites=["right index finger"])
    disease = "Systemic sclerosis, CR(E)ST syndrome"
    tail = " with digital ulcers, Raynaud phenomenon, sclerodactyly and telangiectasia of the face and hands"
    ctd.condition("M34.1", ICD10, disease + (tail if long_name else ""))
    ctd.mineral_panel(9.4, 4.1, 3.6)
    for chart, pattern in (
        (iv, "Pattern consistent with iatrogenic calcinosis: "),
        (ctd, "Pattern consistent with dystrophic calcinosis: "),
    ):
        assessment = chart.assess()
        assert assessment is not None
        summary = card_statements(assessment, default_knowledge()).subtype.summary
        assert summary.startswith(pattern) and len(summary) <= SUMMARY_LIMIT, summary
        assert summary.endswith("…") is long_name, summary


# ----- the knowledge files' clinician-facing text -------------------------------------------------

KNOWLEDGE = Path(__file__).resolve().parents[1] / "calcinosis" / "knowledge"
#: Per knowledge file, the fields whose text can reach a card, a suggestion, a draft order, a link
#: label or the card's extension (provenance a reviewer reads there): every string beneath them.
CLINICIAN_FACING = {
    "workup.json": {"label", "reason", "caution", "code_note", "display"},
    "differentials.json": {"label", "separating_test", "display"},
    "orders.json": {"summary", "why", "alternative", "basis", "suggestion", "label", "override_reasons"},
}


def facing_strings(node: Any, fields: set[str], inside: bool = False, path: str = "") -> list[tuple[str, str]]:
    """(where, text) of every string under a clinician-facing field."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, child in node.items():
            found += facing_strings(child, fields, inside or key in fields, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += facing_strings(child, fields, inside, f"{path}[{index}]")
    elif isinstance(node, str) and inside:
        found.append((path, node))
    return found


@pytest.mark.parametrize("name", sorted(CLINICIAN_FACING))
def test_no_internal_vocabulary_in_the_knowledge_files_clinician_facing_text(name: str) -> None:
    """Not only the responses of the library: any text of the knowledge base that a card, a
    suggestion or a draft ServiceRequest can carry is free of internal words, including text no
    library chart happens to reach today (a code's provenance, a rarely fired rule's wording)."""
    data = json.loads((KNOWLEDGE / name).read_text(encoding="utf-8"))
    strings = facing_strings(data, CLINICIAN_FACING[name])
    assert len(strings) > 10, "the fields exist in the file"
    found = [f"{where}: {text!r}" for where, text in strings if INTERNAL.search(text)]
    assert not found, "\n".join(found)


def test_link_labels_of_free_sources_carry_no_internal_words() -> None:
    """Card links are labelled with the citation of sources marked as free links."""
    sources = json.loads((KNOWLEDGE / "sources.json").read_text(encoding="utf-8"))["sources"]
    linked = {key: entry["citation"] for key, entry in sources.items() if entry.get("link")}
    assert linked
    found = {key: citation for key, citation in linked.items() if INTERNAL.search(citation)}
    assert not found, found


# ----- the cause the data support is named (5.2, issue 12 item 2) ---------------------------------


def _hypercalcemia_chart(carbonate: bool) -> Chart:
    chart = Chart("cause-chart", gender="female", birth_date="1958-05-05")
    chart.calcinosis(body_sites=["left forearm"])
    chart.lab("17861-6", 12.6, "mg/dL", 4, low=8.5, high=10.2)
    chart.lab("1751-7", 4.1, "g/dL", 4)
    chart.lab("2777-1", 4.1, "mg/dL", 4, low=2.5, high=4.5)
    chart.lab("98979-8", 75, "mL/min/{1.73_m2}", 4)
    chart.lab("1963-8", 34, "mmol/L", 4, low=22, high=29)
    if carbonate:
        chart.medication("Calcium Carbonate 500 MG Chewable Tablet", 200, kind="MedicationStatement")
    return chart


@pytest.mark.parametrize("carbonate", [True, False], ids=["antacid-intake", "no-intake"])
def test_milk_alkali_is_named_on_the_card_only_with_calcium_intake(carbonate: bool) -> None:
    """Hypercalcemia with alkalosis: with calcium carbonate intake the summary says "possibly from
    milk-alkali syndrome" and the first screen gives the reason; without intake it does not."""
    assessment = _hypercalcemia_chart(carbonate).assess()
    assert assessment is not None
    statement = card_statements(assessment, default_knowledge()).subtype
    assert statement.summary.split(": ", 1)[1].startswith("corrected calcium 12.6 mg/dL above range")
    assert "metastatic calcification" in statement.summary.split(":")[0]
    assert ("possibly from milk-alkali syndrome" in statement.summary) is carbonate
    assert any("milk-alkali syndrome" in line for line in statement.evidence) is carbonate


@pytest.mark.parametrize("name", [c.name for c in LIBRARY])
def test_the_supported_cause_reaches_the_first_screen(name: str) -> None:
    """Every cause the assessment supports (malignancy, hypoparathyroidism, milk-alkali, CKD-MBD,
    ...) is stated on the metastatic or severe-hypercalcemia card's first screen."""
    chart = next(c for c in LIBRARY if c.name == name)
    assessment = assess_resources(chart.resources, chart.as_of, chart.patient_id).assessment
    if assessment is None or not assessment.causes:
        return
    statement = card_statements(assessment, default_knowledge()).subtype
    if statement.headline.startswith(("Pattern consistent with metastatic", "Possible metastatic", "Severe")):
        assert assessment.causes[0].finding.statement in statement.evidence, (name, statement.evidence)
