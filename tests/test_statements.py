"""The clinical statements (calcinosis/statements.py): wording helpers and the decisions they make."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calcinosis.assessment import DifferentialAssessment, Evidence, RuleFinding
from calcinosis.knowledge_base import default_knowledge
from calcinosis.statements import (
    EVIDENCE_LINE_LIMIT,
    _differential_line,
    as_reported,
    card_statements,
    converted,
    day,
    differentials_statement,
    lower_first,
    shorten,
)
from fhir_mapping import assess_resources
from hooks.cards import render_cards
from tests.charts import AS_OF, Chart


@given(st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=15), min_size=1, max_size=40))
def test_shorten_cuts_at_a_word_boundary_with_an_ellipsis(words: list[str]) -> None:
    text = " ".join(words)
    cut = shorten(text, 60)
    assert len(cut) <= 60
    if cut != text:
        assert cut.endswith("…")
        kept = cut[:-1].split(" ")
        assert all(word in words for word in kept), "no word is cut in the middle"


def test_values_keep_the_labs_unit_and_precision() -> None:
    phosphate = Evidence(
        "Observation/x", None, None, value=7.897, unit="mg/dL", reported="2.55 mmol/L", reported_unit="mmol/L"
    )
    assert as_reported(phosphate) == "2.55 mmol/L (7.9 mg/dL)"
    same_unit = Evidence(
        "Observation/y", None, None, value=10.2204, unit="mg/dL", reported="10.2 mg/dL", reported_unit="mg/dL"
    )
    assert as_reported(same_unit) == "10.2 mg/dL"
    egfr = Evidence(
        "Observation/z",
        None,
        None,
        value=12,
        unit="mL/min/{1.73_m2}",
        reported="12 mL/min/{1.73_m2}",
        reported_unit="mL/min/{1.73_m2}",
    )
    assert as_reported(egfr) == "12 mL/min/1.73 m²"
    assert converted(1240.4) == "1,240" and converted(9.62) == "9.6" and converted(0.853) == "0.85"
    assert day(datetime(2026, 11, 28, tzinfo=UTC)) == "28 Nov 2026"


def severe_chart() -> Chart:
    chart = Chart("stmt-severe")
    chart.calcinosis()
    chart.lab("17861-6", 14.6, "mg/dL", 3, low=8.5, high=10.2)
    chart.lab("17861-6", 14.2, "mg/dL", 10, low=8.5, high=10.2)
    chart.lab("1751-7", 4.1, "g/dL", 3)
    chart.lab("2777-1", 3.1, "mg/dL", 3, low=2.5, high=4.5)
    chart.lab("98979-8", 72, "mL/min/{1.73_m2}", 3)
    return chart


def test_severe_hypercalcemia_leads_as_a_warning_with_the_number_from_the_knowledge_base() -> None:
    assessment = severe_chart().assess()
    assert assessment is not None
    kb = default_knowledge()
    statement = card_statements(assessment, kb).subtype
    assert statement.indicator == "warning"
    assert statement.summary.startswith(f"Severe hypercalcemia (calcium at or above {kb.quantity('calcium-severe')})")
    moved = kb.with_thresholds({"calcium-severe": 15.0})
    assert card_statements(assessment, moved).subtype.summary.startswith(
        "Severe hypercalcemia (calcium at or above 15 mg/dL)"
    )


def test_the_workup_cap_is_configurable_and_the_rest_is_listed_without_buttons() -> None:
    chart = Chart("stmt-cap")
    chart.calcinosis()
    assessment = chart.assess()
    assert assessment is not None and len(assessment.workup) > 2
    cards = render_cards(assessment, default_knowledge(), uuid.uuid4(), chart.patient_id, workup_cap=2)
    workup = next(card for card in cards if card.source.topic and card.source.topic.code == "workup")
    assert len(workup.suggestions or []) == 2
    assert "Also worth considering later, without a button:" in (workup.detail or "")


def test_an_unclassified_subtype_lists_the_differentials_to_consider() -> None:
    chart = Chart("stmt-unclassified")
    chart.calcinosis()
    assessment = chart.assess()
    assert assessment is not None
    statements = card_statements(assessment, default_knowledge())
    assert statements.subtype.summary.startswith("Calcinosis cutis: cannot classify the subtype")
    assert statements.differentials is not None and statements.differentials_shown


def test_every_rule_id_the_statements_read_is_one_the_rules_produce() -> None:
    """The statements pick findings by rule id; an id no rule emits any more (a rule renamed)
    would silently drop a line from every card. Each id named in statements.py must be emitted by
    a rule module. (Causes are read from `assessment.causes`, not by id: see the card-wording
    test that every supported cause reaches the first screen.)"""
    package = Path(__file__).resolve().parents[1] / "calcinosis"
    read = set(re.findall(r'"((?:CC|DX)-[A-Z0-9-]+)"', (package / "statements.py").read_text(encoding="utf-8")))
    emitted = "\n".join(
        p.read_text(encoding="utf-8") for p in package.glob("*.py") if p.name not in ("statements.py", "__init__.py")
    )
    assert read
    assert not [rule for rule in read if f'"{rule}"' not in emitted]


def _ssc_with_pth(days_ago: float) -> Chart:
    chart = Chart("stmt-pth-age")
    chart.calcinosis(body_sites=["right index finger"])
    chart.condition("M34.1", display="CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6, 8)
    chart.lab("2731-8", 40, "pg/mL", days_ago, low=15, high=65)
    return chart


@pytest.mark.parametrize("moved", [False, True], ids=["packaged-window", "edited-window"])
def test_an_old_result_is_out_of_date_with_its_window_from_the_knowledge_base(moved: bool) -> None:
    """A PTH older than its look-back is 'out of date (last <date>)', not 'not on file', and the
    workup card states the window: the knowledge base's, so an edit changes the card."""
    kb = default_knowledge()
    window = kb.days("annual-lookback-days")
    if moved:
        kb = kb.with_thresholds({"annual-lookback-days": window + 60})
    chart = _ssc_with_pth(window + 30)  # outside the packaged window, inside the edited one
    assessment = assess_resources(chart.resources, AS_OF, chart.patient_id, knowledge=kb).assessment
    assert assessment is not None
    statements = card_statements(assessment, kb)
    has_gap = "pth-intact" in {g.item_id for g in assessment.workup}
    assert has_gap is not moved
    if not moved:
        assert statements.subtype.missing is not None
        assert re.search(
            r"[Oo]ut of date: Intact PTH \(last [0-9]+ [A-Z][a-z]{2} [0-9]{4}\)", statements.subtype.missing
        )
        assert "PTH" not in statements.subtype.missing.split("out of date")[0]
        assert statements.workup is not None
        why = next(line for line in statements.workup.statement.further if line.startswith("Why Intact PTH"))
        assert why.endswith(f"more than {window} days ago.")
    recent = _ssc_with_pth(window - 30).assess()
    assert recent is not None and "pth-intact" not in {g.item_id for g in recent.workup}


def test_an_edited_look_back_is_the_window_the_workup_card_states() -> None:
    kb = default_knowledge()
    window = kb.days("annual-lookback-days")
    edited = kb.with_thresholds({"annual-lookback-days": window + 60})
    chart = _ssc_with_pth(window + 90)  # outside both windows
    assessment = assess_resources(chart.resources, AS_OF, chart.patient_id, knowledge=edited).assessment
    assert assessment is not None
    workup = card_statements(assessment, edited).workup
    assert workup is not None
    why = next(line for line in workup.statement.further if line.startswith("Why Intact PTH"))
    assert why.endswith(f"more than {window + 60} days ago.") and f" {window} days" not in why


def test_continuing_a_statement_keeps_acronyms() -> None:
    """'raised by iV calcium in an infant' was seen on the differentials card."""
    assert lower_first("IV calcium in an infant") == "IV calcium in an infant"
    assert lower_first("PTH 1240 pg/mL") == "PTH 1240 pg/mL"
    assert lower_first("Gout recorded") == "gout recorded"
    assert lower_first("") == ""
    chart = Chart("stmt-infant-iv", birth_date="2026-07-01")
    chart.calcinosis(onset_days_ago=10, body_sites=["Left forearm"])
    chart.mineral_panel(9.6, 3.9, 5.0)
    chart.medication(
        "Calcium Gluconate 100 MG/ML Injectable Solution", 25, kind="MedicationAdministration", route="Intravenous"
    )
    assessment = chart.assess()
    assert assessment is not None
    differentials = card_statements(assessment, default_knowledge()).differentials
    assert differentials is not None
    text = " ".join(differentials.evidence + differentials.further)
    assert "iV " not in text


_WORDS = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=12), min_size=1, max_size=30).map(" ".join)


@given(label=_WORDS, reasons=st.lists(_WORDS, max_size=2), against=st.lists(_WORDS, max_size=1), test=_WORDS)
def test_a_differential_line_keeps_its_separating_test_within_the_limit(
    label: str, reasons: list[str], against: list[str], test: str
) -> None:
    """The separating test is what the clinician acts on: a long label or reason is cut, the test's
    first clause always survives ('Separating test…' with nothing after it was seen)."""
    test = test + "; " + test  # a test with an elaboration after its first clause
    differential = DifferentialAssessment(
        "x",
        label,
        tuple(RuleFinding("DX-X", r, (), ()) for r in reasons),
        tuple(RuleFinding("DX-Y", a, (), (), supports=False) for a in against),
        test,
        None,
        (),
    )
    line = _differential_line(differential)
    assert len(line) <= EVIDENCE_LINE_LIMIT
    first_clause = test.split("; ")[0]
    if len(first_clause) < EVIDENCE_LINE_LIMIT - 100:
        assert f"Separating test: {first_clause}" in line, line


def test_library_differentials_keep_their_tests_and_cautions() -> None:
    """In the library, every shown differential states its separating test, and the calciphylaxis
    mimics keep 'biopsy only with caution'."""
    from tests.scenario_library import library

    for chart in library(synthea=False):
        assessment = assess_resources(chart.resources, chart.as_of, chart.patient_id).assessment
        if assessment is None:
            continue
        statement, shown = differentials_statement(assessment)
        if statement is None:
            continue
        # One line per differential; the kidney function an estimate rests on has a line of its own.
        lines = [line for line in statement.evidence + statement.further if not line.startswith("Kidney function:")]
        for differential, line in zip(shown, lines, strict=True):
            assert f"Separating test: {differential.separating_test.split('; ')[0]}" in line, line
            if differential.differential_id == "calciphylaxis-mimics":
                assert "biopsy only with caution" in line
