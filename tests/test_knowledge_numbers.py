"""Every number a card states comes from the knowledge base.

The test moves every threshold and look-back window of thresholds.json to a new value, runs the
whole scenario library, and reads everything a clinician or the EHR sees (summaries, details,
suggestion labels, draft orders). No statement may still state an old value as a limit or a window
("above 70", "older than 90 days", "(> 5)"). Patient values are not limits: they are written as
"Phosphate 4.5 mg/dL", never after a comparison word, so they do not trip the check.

The check is shown to bite: with the packaged knowledge base the same patterns find the current
values in the same statements, and with the moved one they find the new values.
"""

from __future__ import annotations

import ast
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, time
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from calcinosis.knowledge_base import KnowledgeBase, default_knowledge, format_number
from calcinosis.orders import EncounterSetting, OrderKnowledge, load_order_knowledge
from calcinosis_tools.scenarios import ANCHOR, load_order_scenarios, load_scenarios
from fhir_mapping import assess_resources
from fhir_mapping.orders import check_draft_orders, read_draft_orders
from hooks.models import HookResponse
from hooks.order_cards import render_order_cards
from hooks.service import CalcinosisService
from hooks.settings import Settings
from tests.charts import AS_OF, Chart
from tests.fhir_chart import ICD10, LOINC
from tests.scenario_library import library

COMPARISON = r"(?:above|below|over|under|than|least|within|in|after|up to|from|to|>|<|≥|≤|>=|<=|or)"  # a limit follows
WINDOW_UNITS = {"d": r"days?", "a": r"years?", "h": r"(?:h|hours?)"}


def moved_value(threshold_id: str, kb: KnowledgeBase) -> float:
    """A new value no current threshold has, of the same kind (whole days stay whole)."""
    threshold = kb.threshold(threshold_id)
    olds = {format_number(t.value) for t in kb.thresholds.values()}
    whole = threshold.unit in ("d", "a", "h", "factors")
    candidate = threshold.value + 17 if whole else round(threshold.value * 1.37 + 0.013, 3)
    while format_number(candidate) in olds:  # never land on another threshold's current value
        candidate = candidate + 1 if whole else round(candidate * 1.01 + 0.001, 3)
    return candidate


def moved_knowledge() -> KnowledgeBase:
    kb = default_knowledge()
    return kb.with_thresholds({key: moved_value(key, kb) for key in kb.thresholds})


@cache
def _service(moved: bool) -> CalcinosisService:
    base = CalcinosisService(Settings(feedback_database_url="memory://", auth_disabled=True))
    if not moved:
        return base
    return CalcinosisService(base.settings, knowledge=moved_knowledge(), terminology=base.terminology)


def seen_text(response: dict[str, Any]) -> list[str]:
    """Every string of the response a clinician or the EHR shows, except the extension (data)."""
    texts: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if key == "extension":
            return
        if isinstance(node, dict):
            for child_key, child in node.items():
                walk(child, child_key)
        elif isinstance(node, list):
            for child in node:
                walk(child, key)
        elif isinstance(node, str) and key not in ("uuid", "url", "system", "code", "reference", "id", "display"):
            texts.append(node)

    walk(response)
    return texts


@cache
def library_text(moved: bool) -> str:
    service = _service(moved)
    texts: list[str] = []
    for chart in library():
        response = service.respond(chart.resources, chart.patient_id, uuid.UUID(int=7), chart.as_of)
        texts.extend(seen_text(response.wire()))
    return "\n".join(texts)


def limit_pattern(number: str, unit: str) -> re.Pattern[str]:
    """The number stated as a limit ("above 70") or, for a window or duration, with its unit
    ("90 days"); never part of a longer number or a date."""
    escaped = re.escape(number)
    alone = r"(?![0-9]|[.,][0-9]| (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4})"  # not '12 Oct 2026'
    pattern = rf"(?:\b{COMPARISON} \(?{escaped}{alone})"
    if unit in WINDOW_UNITS:
        pattern += rf"|(?:(?<![0-9.,-]){escaped} {WINDOW_UNITS[unit]}\b)"
    return re.compile(pattern)


def test_every_threshold_moves() -> None:
    kb = default_knowledge()
    moved = moved_knowledge()
    olds = {format_number(t.value) for t in kb.thresholds.values()}
    for key in kb.thresholds:
        assert format_number(moved.value(key)) not in olds, key


def test_no_card_statement_keeps_an_old_threshold_or_window() -> None:
    kb = default_knowledge()
    moved_kb = moved_knowledge()
    original, moved = library_text(False), library_text(True)
    stated_before = []
    stale = []
    for key, threshold in kb.thresholds.items():
        old = format_number(threshold.value)
        if limit_pattern(old, threshold.unit).search(original):
            stated_before.append(key)
        for match in limit_pattern(old, threshold.unit).finditer(moved):
            start = max(0, match.start() - 60)
            stale.append(f"{key}={old} [{match.group(0)}]: ...{moved[start : match.end() + 20]}...")
    assert not stale, "statements still carry old knowledge-base numbers:\n" + "\n".join(stale)
    # The check can fail: the packaged values are stated in the same kinds of statement, and the
    # moved ones are stated after the move.
    assert len(stated_before) >= 8, stated_before
    shown_after = [
        key for key in stated_before if limit_pattern(moved_kb.number(key), kb.threshold(key).unit).search(moved)
    ]
    assert len(shown_after) >= 8, shown_after


@pytest.mark.parametrize("key", ["caxp-metastatic", "gate-lookback-days", "vitamin-d-25oh-toxic"])
def test_a_reviewer_edit_changes_the_statement(key: str) -> None:
    """The issue's example: moving Ca x P from 70 to 60 must not leave "above 70" on a card."""
    kb = default_knowledge()
    edited = kb.with_thresholds({key: moved_value(key, kb)})
    assert edited.number(key) != kb.number(key)
    assert edited.quantity(key).startswith(edited.number(key))
    for item in edited.workup:
        assert f"above {kb.quantity(key)}" not in item.reason


# ----- order-sign: the same, for its prose and the re-test intervals of orders.json ---------------

ORDER_PATIENT = "order-numbers"
DRAFT_LABS = {
    "17861-6": "Calcium [Mass/volume] in Serum or Plasma",
    "2777-1": "Phosphate [Mass/volume] in Serum or Plasma",
    "2731-8": "Parathyrin.intact [Mass/volume] in Serum or Plasma",
    "62292-8": "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
    "1649-3": "1,25-Dihydroxyvitamin D [Mass/volume] in Serum or Plasma",
    "6768-6": "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
}
INTERVAL_LINE = re.compile(r"Usual interval here: ([0-9,]+) (days|hours) \(([^)]*)\)")


def order_windows(knowledge: OrderKnowledge) -> dict[str, tuple[float, str]]:
    """Every re-test interval of orders.json as (value, unit): 'pth/G5' in days, 'pth/inpatient' in hours."""
    windows: dict[str, tuple[float, str]] = {}
    for window in knowledge.repeat_windows:
        for band, days in window.outpatient_days.items():
            windows[f"{window.id}/{band}"] = (days, "d")
        if window.inpatient_hours is not None:
            windows[f"{window.id}/inpatient"] = (window.inpatient_hours, "h")
    return windows


def moved_order_knowledge(kb: KnowledgeBase) -> OrderKnowledge:
    """orders.json with every re-test interval and threshold moved to a value nothing else has."""
    base = load_order_knowledge(kb)
    olds = {format_number(t.value) for t in default_knowledge().thresholds.values()}
    olds |= {format_number(v) for v, _ in order_windows(base).values()}
    olds |= {format_number(v) for v in base.thresholds.values()}

    def whole(value: float) -> int:
        moved = int(value) + 17
        while format_number(moved) in olds:
            moved += 1
        return moved

    windows = tuple(
        replace(
            window,
            inpatient_hours=whole(window.inpatient_hours) if window.inpatient_hours is not None else None,
            outpatient_days={band: whole(days) for band, days in window.outpatient_days.items()},
        )
        for window in base.repeat_windows
    )
    thresholds = {key: round(value * 1.37 + 0.013, 3) for key, value in base.thresholds.items()}
    retention = max(base.lab_retention_days, *(whole(d) for w in windows for d in w.outpatient_days.values())) + 1
    return replace(base, repeat_windows=windows, thresholds=thresholds, lab_retention_days=retention)


def _draft_labs() -> dict[str, Any]:
    orders = [
        {
            "resourceType": "ServiceRequest",
            "id": f"draft-{index}",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": f"Patient/{ORDER_PATIENT}"},
            "code": {"coding": [{"system": LOINC, "code": code, "display": text}], "text": text},
        }
        for index, (code, text) in enumerate(DRAFT_LABS.items())
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}


def _repeat_charts() -> list[tuple[str, Chart, EncounterSetting]]:
    """Charts whose every draft lab has a recent result: on dialysis, in CKD G3 and G4, without
    CKD, as an out-patient and in hospital, so each band of each interval is stated somewhere."""

    def labs(chart: Chart, days_ago: float) -> Chart:
        chart.lab("17861-6", 9.4, "mg/dL", days_ago, low=8.5, high=10.2)
        chart.lab("1751-7", 4.0, "g/dL", days_ago)
        chart.lab("2777-1", 4.0, "mg/dL", days_ago, low=2.5, high=4.5)
        chart.lab("2731-8", 40, "pg/mL", days_ago, low=15, high=65)
        chart.lab("62292-8", 32, "ng/mL", days_ago, low=30, high=100)
        chart.lab("1649-3", 40, "pg/mL", days_ago, low=18, high=72)
        chart.lab("6768-6", 80, "U/L", days_ago, low=40, high=130)
        return chart

    charts: list[tuple[str, Chart, EncounterSetting]] = []
    for encounter, days_ago in ((EncounterSetting.AMBULATORY, 20), (EncounterSetting.INPATIENT, 1)):
        dialysis = Chart(ORDER_PATIENT)
        dialysis.calcinosis()
        dialysis.condition("Z99.2", ICD10, "Dependence on renal dialysis")
        dialysis.dialysis(since_days=400, sessions_every=200)
        charts.append((f"dialysis-{encounter.value}", labs(dialysis, days_ago), encounter))
    for name, egfr in (("g3", 50), ("g4", 22), ("none", 95)):
        chart = Chart(ORDER_PATIENT)
        chart.calcinosis()
        chart.lab("98979-8", egfr, "mL/min/{1.73_m2}", 200)
        chart.lab("98979-8", egfr, "mL/min/{1.73_m2}", 20)
        charts.append((f"ckd-{name}", labs(chart, 20), EncounterSetting.AMBULATORY))
    return charts


@cache
def order_text(moved: bool) -> str:
    """Everything the order-sign cards of the sandbox draft-order scenarios and the repeat-lab
    charts say (extension excluded), under the packaged or the moved knowledge base."""
    kb = moved_knowledge() if moved else default_knowledge()
    knowledge = moved_order_knowledge(kb) if moved else load_order_knowledge(kb)
    terminology = _service(False).terminology
    calls: list[tuple[list[dict[str, Any]], dict[str, Any], str, datetime, EncounterSetting]] = []
    patients = {s.patient_id: s for s in load_scenarios()}
    anchor = datetime.combine(ANCHOR, time(12), tzinfo=UTC)
    for scenario in load_order_scenarios(patients=list(patients.values())):
        resources = [e["resource"] for e in patients[scenario.patient_id].bundle.get("entry", [])]
        calls.append((resources, scenario.draft_orders, scenario.patient_id, anchor, EncounterSetting.UNKNOWN))
    for _, chart, encounter in _repeat_charts():
        calls.append((chart.resources, _draft_labs(), ORDER_PATIENT, AS_OF, encounter))
    texts: list[str] = []
    for resources, draft_bundle, patient_id, as_of, encounter in calls:
        drafts = read_draft_orders(draft_bundle, terminology, resources)
        result = check_draft_orders(
            resources, drafts, as_of, patient_id, terminology, kb, knowledge, encounter=encounter
        )
        cards = render_order_cards(result.check, kb, knowledge, uuid.UUID(int=7))
        texts.extend(seen_text(HookResponse(cards=cards).wire()))
    return "\n".join(texts)


def test_order_sign_states_the_moved_intervals_never_the_old_ones() -> None:
    """A clinician who edits a re-test interval of orders.json (or a look-back of thresholds.json
    that caps it) sees the new number on the repeat-lab card, and no card keeps the old one."""
    kb = default_knowledge()
    original, moved = order_text(False), order_text(True)
    old_windows = order_windows(load_order_knowledge(kb))
    new_windows = order_windows(moved_order_knowledge(moved_knowledge()))
    stated_before = {int(m.group(1).replace(",", "")) for m in INTERVAL_LINE.finditer(original)}
    stated_after = {int(m.group(1).replace(",", "")) for m in INTERVAL_LINE.finditer(moved)}
    caps = {k: t for k, t in kb.thresholds.items() if t.unit in ("d", "h")}
    old_numbers = {v for v, _ in old_windows.values()} | {t.value for t in caps.values()}
    new_numbers = {v for v, _ in new_windows.values()} | {moved_value(k, kb) for k in caps}
    # The check bites: several distinct intervals are stated with the packaged tables ...
    assert len(stated_before) >= 4 and stated_before <= old_numbers, stated_before
    # ... and after the move every stated interval is a moved number, none an old one.
    assert len(stated_after) >= 4 and stated_after <= new_numbers, (stated_after, new_numbers)
    assert not stated_after & old_numbers
    stale = []
    for key, (value, unit) in old_windows.items():
        for match in limit_pattern(format_number(value), unit).finditer(moved):
            stale.append(f"{key}={format_number(value)}: ...{moved[max(0, match.start() - 60) : match.end() + 20]}...")
    for key, threshold in kb.thresholds.items():
        for match in limit_pattern(format_number(threshold.value), threshold.unit).finditer(moved):
            stale.append(f"{key}: ...{moved[max(0, match.start() - 60) : match.end() + 20]}...")
    assert not stale, "order-sign statements still carry old numbers:\n" + "\n".join(stale)


def test_order_sign_prose_carries_no_window_of_its_own() -> None:
    """The reason given for an interval names no number (the number is the interval's, from the
    data), and no order-sign text spells a window in weeks, months or years typed into prose."""
    for text in (order_text(False), order_text(True)):
        bases = [m.group(3) for m in INTERVAL_LINE.finditer(text)]
        assert bases
        assert not [b for b in bases if re.search(r"(?<!G)[0-9]", b)], bases  # CKD stage names aside
        assert not re.search(r"\b[0-9]+(?:[-–][0-9]+)? (?:weeks?|months?)\b", text), text


# ----- figures reported by a source are data too ----------------------------------------------------

SOURCE_FIGURES = (
    "female-sex-calciphylaxis-odds-ratio",
    "tophi-normal-urate-count",
    "tophi-series-size",
    "heel-stick-onset-months-from",
    "heel-stick-onset-months-to",
    "heel-stick-resolution-months-from",
    "heel-stick-resolution-months-to",
    "bone-scintigraphy-sensitivity",
)


def _figure_statements(kb: KnowledgeBase) -> str:
    """The statements that quote a source's figure: the female-sex risk factor, a normal uric
    acid against gouty tophi, the course of heel-stick calcinosis, the bone scan's sensitivity."""
    dialysis = Chart("figures-dialysis", gender="female", birth_date="1950-01-01")
    dialysis.calcinosis()
    dialysis.condition(None, text="Necrotic ulcer with black eschar, left thigh")
    dialysis.condition("N18.6", ICD10, "End stage renal disease")
    dialysis.dialysis(since_days=6 * 365)
    dialysis.medication("Warfarin Sodium 5 MG Oral Tablet", 400, rxnorm="855332")
    dialysis.mineral_panel(9.5, 3.2, 6.2, egfr=None)
    gout = Chart("figures-gout", gender="male", birth_date="1960-01-01")
    gout.calcinosis(body_sites=["left elbow"])
    gout.condition("M10.9", ICD10, "Gout, unspecified")
    gout.lab("3084-1", 5.1, "mg/dL", 20, low=3.5, high=7.2)
    gout.mineral_panel(9.2, 4.2, 3.4, 20)
    infant = Chart("figures-heel", gender="female", birth_date="2025-09-01")
    infant.calcinosis(onset_days_ago=20, body_sites=["left heel"])
    infant.procedure("Heel stick capillary blood sampling", 200)
    infant.mineral_panel(9.9, 4.0, 5.6, 20, egfr=None)
    texts: list[str] = []
    for chart in (dialysis, gout, infant):
        assessment = assess_resources(chart.resources, AS_OF, chart.patient_id, knowledge=kb).assessment
        assert assessment is not None
        texts += [f.statement for s in assessment.subtypes for f in s.findings]
        texts += [f.statement for d in assessment.differentials for f in d.raised_by + d.lowered_by]
        texts += [factor.label for factor in assessment.calciphylaxis_risk.additional]
    texts += [item.reason for item in kb.workup if item.id == "bone-scintigraphy"]
    return "\n".join(texts)


@pytest.mark.parametrize("key", SOURCE_FIGURES)
def test_a_figure_quoted_from_a_source_is_read_from_the_knowledge_base(key: str) -> None:
    """'OR 6.04', '3 of 7', '4-12 months', '89%' are a source's figures: they live in
    thresholds.json with that source, and the statement quoting them follows an edit."""
    kb = default_knowledge()
    assert kb.threshold(key).sources, key
    before = _figure_statements(kb)
    old = kb.number(key)
    figure = re.compile(rf"(?<![0-9.,]){re.escape(old)}(?![0-9]|[.,][0-9])")
    assert figure.search(before), f"{key}={old} is quoted somewhere"
    edited = kb.with_thresholds({key: moved_value(key, kb)})
    after = _figure_statements(edited)
    assert edited.number(key) in after, (key, after)
    assert len(figure.findall(after)) < len(figure.findall(before)), f"{key}: the old figure is still quoted"


def test_no_source_figure_is_typed_into_rule_or_card_prose() -> None:
    """Odds ratios, 'n of m', percentages and month ranges in the rules' and cards' string
    literals would escape an edit of the knowledge base: there are none."""
    shapes = re.compile(r"\bOR [0-9]|\b[0-9]+ of [0-9]+\b|[0-9] ?%|\b[0-9]+(?:-[0-9]+)? (?:weeks?|months?)\b")
    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [
        *sorted((root / "calcinosis").glob("*.py")),
        root / "hooks" / "cards.py",
        root / "hooks" / "order_cards.py",
    ]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            if literal and shapes.search(str(node.value)):  # type: ignore[attr-defined]
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_no_look_back_window_is_typed_into_the_rules() -> None:
    """Windows live in thresholds.json (one source per window): the rules build no timedelta from a
    literal number of days or hours, except the one-day charting grace around a draw."""
    root = Path(__file__).resolve().parents[1] / "calcinosis"
    typed = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "timedelta":
                for value in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(value, ast.Constant) and isinstance(value.value, int | float) and value.value > 1:
                        typed.append(f"{path.name}:{node.lineno}")
    assert not typed, typed
