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

import re
import uuid
from functools import cache
from typing import Any

import pytest

from calcinosis.knowledge_base import KnowledgeBase, default_knowledge, format_number
from hooks.service import CalcinosisService
from hooks.settings import Settings
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
    alone = r"(?![0-9]|[.,][0-9])"
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
