"""Whether a problem-list text that names calcinosis actually documents it (clinical-knowledge.md 4).

Free text is the fallback for calcinosis cutis (no SNOMED CT code for it is confirmed), and EHRs
send problem-list entries such as "No calcinosis cutis on examination", "Family history of
calcinosis cutis", "History of tumoral calcinosis, excised 2010" or "Calciphylaxis risk -
monitor". Naming the disorder is not documenting it. This is a small rule set in the style of
NegEx (Chapman et al. 2001): trigger phrases within a few words before or after the matched term,
inside the same clause, decide the assertion.

Limits, on purpose (the rules serve short problem-list entries, not notes):
- a negative value written after the term as a field ("Calcinosis cutis: none", "- absent",
  ": no", ": nil.", ": denied") negates only when the separator follows the term directly and the
  negative word is the whole value up to the end of the clause: "Calcinosis cutis: no change in
  size" and "Calcinosis cutis of left elbow: none" stay affirmed (the second on purpose: what the
  value answers is no longer certain once other words stand between the term and the colon);
- the scope is a window of `WINDOW` words each side, ended by a clause boundary (".", ";", a new
  line, or "but", "however", "although", "though", "except"); a comma or a dash does not end it,
  because problem lists write "Calcinosis cutis - resolved";
- double negation, hedges beyond the listed phrases, and misspellings are not understood;
- "history of" makes a calcinosis entry historical unless the same clause says it recurred; for
  life-long conditions (systemic sclerosis) the caller ignores the historical assertion;
- one entry naming two conditions is judged per term, but a trigger between them applies to both
  when it lies in both windows.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Assertion(StrEnum):
    """What a text says about a condition it names."""

    AFFIRMED = "affirmed"
    NEGATED = "negated"
    FAMILY = "family"
    HISTORICAL = "historical"
    RISK = "risk"
    SUSPECTED = "suspected"


WINDOW = 6
"""Words each side of the term that a trigger may stand in (NegEx uses five or six)."""

_CLAUSE_END = re.compile(r"[.;\n]|\b(?:but|however|although|though|except)\b")
_TOKEN = re.compile(r"[a-z0-9]+(?:['/][a-z0-9]+)*|\?")

_FAMILY = (
    "family history",
    "fh",
    "fhx",
    "family",
    "mother",
    "mother's",
    "father",
    "father's",
    "sister",
    "brother",
    "sibling",
    "siblings",
    "parent",
    "parents",
    "aunt",
    "uncle",
    "grandmother",
    "grandfather",
    "grandparent",
    "cousin",
    "daughter",
    "son",
    "maternal",
    "paternal",
    "relative",
    "relatives",
)
_SUSPECTED_BEFORE_NEGATION = (
    "to be ruled out",
    "to rule out",
    "not excluded",
    "not ruled out",
    "cannot be excluded",
    "cannot exclude",
    "can not exclude",
    "not yet excluded",
)
_NEGATED_BEFORE = (
    "no",
    "not",
    "denies",
    "denied",
    "without",
    "negative for",
    "no evidence of",
    "no sign of",
    "no signs of",
    "absence of",
    "absent",
    "free of",
    "never had",
    "ruled out",
    "excluded",
)
_NEGATED_AFTER = (
    "ruled out",
    "excluded",
    "negative",
    "not present",
    "not seen",
    "not found",
    "not confirmed",
    "absent",
    "unlikely",
)
_NEGATIVE_VALUE = re.compile(r"\s*[:\-\u2013\u2014]\s*(?:none|no|nil|absent|negative|not\s+present|denied)\s*\.?\s*")
"""A field-style negative value right after the term ("Calcinosis cutis: none"): the negative word is
the whole value, so "Calcinosis cutis: no change in size" is not matched. Full-matched against the
rest of the clause (which ends before a period, a semicolon or a new line)."""
_RISK_BEFORE = (
    "at risk",
    "risk of",
    "risk for",
    "high risk",
    "monitor for",
    "monitoring for",
    "screening for",
    "screen for",
    "prevention of",
    "prophylaxis",
)
_RISK_AFTER = ("risk", "risks", "monitor", "monitoring", "screening", "prophylaxis", "prevention")
_HISTORICAL_BEFORE = (
    "history of",
    "h/o",
    "hx of",
    "hx",
    "past",
    "previous",
    "previously",
    "prior",
    "former",
    "resolved",
    "healed",
    "excised",
    "status post",
    "s/p",
)
_HISTORICAL_AFTER = ("resolved", "healed", "excised", "removed", "in remission", "previously", "in the past", "history")
_RECURRED = ("recurrent", "recurrence", "recurred", "relapse", "relapsed", "returned", "new lesion", "new lesions")
_SUSPECTED_BEFORE = (
    "suspected",
    "suspect",
    "suspicion of",
    "possible",
    "possibly",
    "probable",
    "presumed",
    "query",
    "questionable",
    "rule out",
    "r/o",
    "?",
    "concern for",
    "differential",
)
_SUSPECTED_AFTER = ("suspected", "?", "versus", "vs", "query", "questionable")


_TRIGGER_WORDS = frozenset(
    word
    for phrases in (
        _FAMILY,
        _SUSPECTED_BEFORE_NEGATION,
        _NEGATED_BEFORE,
        _NEGATED_AFTER,
        _RISK_BEFORE,
        _RISK_AFTER,
        _HISTORICAL_BEFORE,
        _HISTORICAL_AFTER,
        _SUSPECTED_BEFORE,
        _SUSPECTED_AFTER,
    )
    for phrase in phrases
    for word in phrase.split()
)
"""Every word of every trigger: a window with none of them affirms without trying the phrases."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _has(window: list[str], phrases: tuple[str, ...]) -> bool:
    """Whether any phrase occurs in the window as whole tokens."""
    joined = f" {' '.join(window)} "
    return any(f" {phrase} " in joined for phrase in phrases)


def assertion_of(text: str, start: int, end: int) -> Assertion:
    """The assertion a text makes about the term at `text[start:end]` (lower-cased text)."""
    text = text.lower()
    clause_start = 0
    for boundary in _CLAUSE_END.finditer(text, 0, start):
        clause_start = boundary.end()
    following = _CLAUSE_END.search(text, end)
    clause_end = following.start() if following else len(text)
    before = _tokens(text[clause_start:start])[-WINDOW:]
    after = _tokens(text[end:clause_end])[:WINDOW]
    both = before + after
    negative_value = _NEGATIVE_VALUE.fullmatch(text, end, clause_end) is not None
    if not negative_value and _TRIGGER_WORDS.isdisjoint(both):
        return Assertion.AFFIRMED
    if _has(both, _FAMILY):
        return Assertion.FAMILY
    if _has(after, _SUSPECTED_BEFORE_NEGATION) or _has(before, _SUSPECTED_BEFORE_NEGATION):
        return Assertion.SUSPECTED
    if negative_value or _has(before, _NEGATED_BEFORE) or _has(after, _NEGATED_AFTER):
        return Assertion.NEGATED
    if _has(before, _RISK_BEFORE) or _has(after, _RISK_AFTER):
        return Assertion.RISK
    if _has(before, _HISTORICAL_BEFORE) or _has(after, _HISTORICAL_AFTER):
        clause = _tokens(text[clause_start:clause_end])
        return Assertion.AFFIRMED if _has(clause, _RECURRED) else Assertion.HISTORICAL
    if _has(before, _SUSPECTED_BEFORE) or _has(after, _SUSPECTED_AFTER):
        return Assertion.SUSPECTED
    return Assertion.AFFIRMED
