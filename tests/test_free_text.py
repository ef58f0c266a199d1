"""Free text on the problem list (issue 12 item 11; clinical-knowledge.md 4): entries that name
calcinosis without documenting it stay silent, synonyms are recognised, suspicions are worded as
suspected, and an entry that cannot be read is reported rather than dropped in silence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calcinosis import Subtype
from fhir_mapping import assess_resources, bundle_resources
from fhir_mapping.assertion import Assertion, assertion_of
from hooks.cli import main
from hooks.models import HookResponse
from tests.charts import AS_OF, ICD10, Chart


def text_chart(text: str, **kwargs: object) -> Chart:
    chart = Chart()
    chart.condition(None, text=text, **kwargs)  # type: ignore[arg-type]
    chart.mineral_panel(9.4, 4.1, 3.6)
    return chart


@pytest.mark.parametrize(
    "text",
    [
        "No calcinosis cutis on examination",
        "Calcinosis cutis ruled out",
        "Family history of calcinosis cutis",
        "History of tumoral calcinosis, excised 2010",
        "Calcinosis cutis - resolved",
        "Calciphylaxis risk - monitor",
        "At risk for calciphylaxis",
        "Mother had calcinosis cutis",
        "Denies calcinosis cutis",
        "Negative for calcinosis cutis",
        "CREST syndrome (calcinosis, Raynaud, esophageal dysmotility, sclerodactyly, telangiectasia)",
        "Calcinosis",
        "Vascular calcification",
        "Calcinosis cutis: none",
        "Calcinosis cutis - absent",
        "calcinosis cutis: no",
        "Calcinosis cutis: negative",
        "Calcinosis cutis: not present",
        "Calcinosis cutis: Nil.",
        "Cutaneous calcification: denied",
    ],
)
def test_entries_that_do_not_document_calcinosis_stay_silent(text: str) -> None:
    chart = text_chart(text)
    assert chart.assess() is None


@pytest.mark.parametrize(
    "text",
    [
        "Calcinosis cutis of fingers",
        "Cutaneous calcification of the elbow",
        "Calcification of the skin",
        "Calcinosis of the skin, both hands",
        "Subcutaneous calcifications of the thighs",
        "History of tumoral calcinosis, excised 2010, now recurrent",
        "Calcinosis cutis, no ulceration",
        "Calcinosis cutis: left elbow",
        "Calcinosis cutis: no change in size",
        "Calcinosis cutis: nodules on both elbows",
        "Calcinosis cutis - not progressing",
        "Calcinosis cutis: none of the nodules ulcerated",
    ],
)
def test_entries_that_document_calcinosis_open_an_assessment(text: str) -> None:
    assessment = text_chart(text).assess()
    assert assessment is not None and not assessment.suspected_only


def test_a_coded_entry_is_held_to_its_words() -> None:
    chart = Chart()
    chart.calcinosis(text="Calcinosis cutis - resolved")
    assert chart.assess() is None
    still = Chart()
    still.calcinosis(text="Calcinosis cutis of left elbow")
    assert still.assess() is not None


@pytest.mark.parametrize(
    ("verification", "text", "suspected"),
    [
        ("provisional", "Calcinosis cutis", True),
        ("differential", "Calcinosis cutis", True),
        ("confirmed", "Suspected calcinosis cutis", True),
        ("confirmed", "Calcinosis cutis vs gouty tophus", True),
        ("confirmed", "Rule out calciphylaxis", True),
        ("confirmed", "Calcinosis cutis", False),
        (None, "Calcinosis cutis", False),
    ],
)
def test_suspicions_open_the_assessment_worded_as_suspected(
    verification: str | None, text: str, suspected: bool
) -> None:
    assessment = text_chart(text, verification=verification).assess()
    assert assessment is not None
    assert assessment.suspected_only is suspected


def test_negated_family_and_risk_mentions_do_not_raise_other_findings() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition(None, text="Family history of gout")
    chart.condition(None, text="No xanthoma")
    assessment = chart.assess()
    assert assessment is not None
    raised = {d.differential_id for d in assessment.differentials if d.raised_by}
    assert not {"gouty-tophus", "xanthoma"} & raised


def test_a_past_systemic_sclerosis_is_still_a_cause() -> None:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "Systemic sclerosis, CR(E)ST syndrome", text="History of CREST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    assessment = chart.assess()
    assert assessment is not None
    assert assessment.subtype(Subtype.DYSTROPHIC).likelihood.value == "likely"


@pytest.mark.parametrize(
    ("text", "term", "expected"),
    [
        ("No calcinosis cutis", "calcinosis cutis", Assertion.NEGATED),
        ("calcinosis cutis was ruled out", "calcinosis cutis", Assertion.NEGATED),
        ("calcinosis cutis, to be ruled out", "calcinosis cutis", Assertion.SUSPECTED),
        ("Calcinosis cutis; no evidence of calciphylaxis", "calcinosis cutis", Assertion.AFFIRMED),
        ("Calcinosis cutis; no evidence of calciphylaxis", "calciphylaxis", Assertion.NEGATED),
        ("No ulcer but calcinosis cutis of thumb", "calcinosis cutis", Assertion.AFFIRMED),
        ("FH: calciphylaxis in father", "calciphylaxis", Assertion.FAMILY),
        ("h/o calcinosis cutis", "calcinosis cutis", Assertion.HISTORICAL),
        ("calciphylaxis - at risk, monitor", "calciphylaxis", Assertion.RISK),
        ("calcinosis cutis?", "calcinosis cutis", Assertion.SUSPECTED),
        ("Calcinosis cutis, likely dystrophic", "calcinosis cutis", Assertion.AFFIRMED),
        ("Calcinosis cutis: none", "calcinosis cutis", Assertion.NEGATED),
        ("Calcinosis cutis \u2013 absent", "calcinosis cutis", Assertion.NEGATED),
        ("Calcinosis cutis:No. Raynaud phenomenon", "calcinosis cutis", Assertion.NEGATED),
        ("Calcinosis cutis: no change in size", "calcinosis cutis", Assertion.AFFIRMED),
        ("Calcinosis cutis: none; calciphylaxis of thigh", "calciphylaxis", Assertion.AFFIRMED),
        ("Calcinosis cutis of left elbow: none", "calcinosis cutis", Assertion.AFFIRMED),
    ],
)
def test_the_negex_style_rules(text: str, term: str, expected: Assertion) -> None:
    start = text.lower().index(term)
    assert assertion_of(text, start, start + len(term)) is expected


def test_an_invalid_id_does_not_discard_the_diagnosis() -> None:
    chart = Chart()
    entry = chart.calcinosis()
    entry["id"] = "calcinosis_entry_1"  # an underscore breaks FHIR's id rule
    chart.mineral_panel(9.4, 4.1, 3.6)
    result = chart.result()
    assert result.assessment is not None
    assert result.assessment.entry[0].reference == "Condition/calcinosis_entry_1"


def test_a_calcinosis_entry_that_cannot_be_read_is_reported_not_silent() -> None:
    chart = Chart()
    entry = chart.calcinosis()
    entry["clinicalStatus"] = "active"  # a string where FHIR wants a CodeableConcept: fails validation
    chart.mineral_panel(9.4, 4.1, 3.6)
    result = chart.result()
    assert result.assessment is None
    assert result.unreadable_documentation == (f"Condition/{entry['id']}",)
    no_id = Chart()
    nameless = no_id.calcinosis()
    del nameless["id"]
    result = assess_resources(bundle_resources(no_id.bundle()), AS_OF, no_id.patient_id)
    assert result.assessment is None and result.unreadable_documentation == ("Condition/(no id)",)


def test_an_unreadable_non_calcinosis_resource_is_not_reported() -> None:
    chart = Chart()
    gout = chart.condition("M10.9", ICD10, "Gout, unspecified")
    gout["clinicalStatus"] = "active"
    result = chart.result()
    assert result.assessment is None and result.unreadable_documentation == ()


def test_the_response_says_the_entry_could_not_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = Chart()
    entry = chart.calcinosis()
    entry["clinicalStatus"] = "active"
    chart.mineral_panel(9.4, 4.1, 3.6)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(chart.bundle()))
    assert main(["evaluate", str(path)]) == 0
    response = json.loads(capsys.readouterr().out)
    HookResponse.model_validate(response)
    assert len(response["cards"]) == 1
    card = response["cards"][0]
    assert "could not be read" in card["summary"] and card["indicator"] == "info"
    assert entry["id"] not in json.dumps(card)


def test_a_suspected_calcinosis_entry_is_worded_suspected_on_the_card() -> None:
    from hooks.cards import subtype_summary

    chart = Chart()
    chart.calcinosis(verification="provisional")
    chart.condition("M34.1", ICD10, "Systemic sclerosis, CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    assessment = chart.assess()
    assert assessment is not None and assessment.suspected_only
    assert subtype_summary(assessment).startswith("Suspected calcinosis cutis")


def test_over_http_a_calcinosis_entry_without_an_id_is_reported() -> None:
    from tests.hookclient import cards_of, hook_request, make_app, post

    chart = Chart()
    entry = chart.calcinosis()
    del entry["id"]
    chart.mineral_panel(9.4, 4.1, 3.6)
    cards = cards_of(post(make_app(), "/cds-services/calcinosis", hook_request(chart)))
    assert len(cards) == 1 and "could not be read" in cards[0]["summary"]
    silent = Chart()
    silent.condition(None, text="No calcinosis cutis on examination")
    assert cards_of(post(make_app(), "/cds-services/calcinosis", hook_request(silent))) == []
