"""The knowledge base as data: citations, thresholds, workup catalogue and differentials.

Loaded once (at start-up, never per request) from the JSON files beside this module and checked
then: every threshold, workup item and differential must cite sources that exist, so that a typo
in a file fails start-up with a clear message instead of producing an uncited card. Clinicians
review the JSON; the rules in this package refer to entries by their stable ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

EVIDENCE_TAGS = frozenset({"S", "S-abs", "S-2nd", "GK"})

#: How each unit of thresholds.json is written for a clinician: one spelling per unit, never
#: raw UCUM annotations such as `{1.73_m2}`.
UNIT_DISPLAY = {
    "mg2/dL2": "mg²/dL²",
    "mL/min/{1.73_m2}": "mL/min/1.73 m²",
    "ug/d": "µg/day",
    "kg/m2": "kg/m²",
    "d": "days",
    "a": "years",
    "h": "h",
    "mo": "months",
    "%": "%",
    "1": "",
    "patients": "patients",
}

#: `{threshold-id}` in knowledge prose (workup reasons, separating tests) is replaced at load time
#: by the threshold's value and unit, `{threshold-id#}` by the value alone: the number a card states
#: is the number the rule compares with, and an edit to thresholds.json changes both.
_PLACEHOLDER = re.compile(r"\{([a-z0-9-]+)(#?)\}")


def display_unit(unit: str) -> str:
    """A unit as a clinician reads it (`mg²/dL²`, `mL/min/1.73 m²`); unknown units unchanged."""
    return UNIT_DISPLAY.get(unit, unit)


def format_number(value: float) -> str:
    """A knowledge-base number without spurious digits: 70, 4.5, 0.5, 1,000."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,g}"


class KnowledgeBaseError(ValueError):
    """A knowledge file is missing, malformed or refers to something that does not exist."""


@dataclass(frozen=True, slots=True)
class Source:
    """A citation. `link` marks free pages suitable for card links."""

    key: str
    citation: str
    url: str | None
    link: bool


@dataclass(frozen=True, slots=True)
class Threshold:
    """A fixed cut-off or window with its meaning and citation."""

    id: str
    value: float
    unit: str
    meaning: str
    sources: tuple[str, ...]
    evidence: str


@dataclass(frozen=True, slots=True)
class Code:
    """A terminology code as plain data (the clinical core knows codes, not FHIR)."""

    system: str
    code: str
    display: str


@dataclass(frozen=True, slots=True)
class WorkupItem:
    """One orderable test or procedure from the workup catalogue."""

    id: str
    label: str
    kind: str
    code: Code | None
    satisfied_by: tuple[str, ...]
    lookback_days: int | None
    lookback_days_dialysis: int | None
    trigger: str
    reason: str
    sources: tuple[str, ...]
    evidence: str
    code_note: str | None
    never_when: str | None
    caution: str | None
    lookback: str | None = None
    lookback_dialysis: str | None = None


@dataclass(frozen=True, slots=True)
class Differential:
    """A differential diagnosis with the test that separates it."""

    id: str
    label: str
    separating_test: str
    test_code: Code | None
    sources: tuple[str, ...]
    evidence: str


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """Everything the rules look up, validated and immutable."""

    version: str
    sources: dict[str, Source]
    thresholds: dict[str, Threshold]
    workup: tuple[WorkupItem, ...]
    differentials: tuple[Differential, ...]
    raw_workup: tuple[WorkupItem, ...] = ()
    raw_differentials: tuple[Differential, ...] = ()

    def threshold(self, threshold_id: str) -> Threshold:
        """The threshold with this id; a missing one is a programming error caught by tests."""
        return self.thresholds[threshold_id]

    def value(self, threshold_id: str) -> float:
        """The numeric value of a threshold."""
        return self.thresholds[threshold_id].value

    def number(self, threshold_id: str) -> str:
        """The value as card prose writes it ("70", "4.5", "1,000")."""
        return format_number(self.thresholds[threshold_id].value)

    def quantity(self, threshold_id: str) -> str:
        """Value and unit as card prose writes them ("70 mg²/dL²", "90 days")."""
        threshold = self.thresholds[threshold_id]
        unit = display_unit(threshold.unit)
        if threshold.value == 1 and unit in ("years", "days", "hours"):
            unit = unit[:-1]  # "1 year", not "1 years"
        return f"{format_number(threshold.value)} {unit}".strip()

    def days(self, threshold_id: str) -> int:
        """A look-back window or duration in whole days (thresholds with unit `d`)."""
        threshold = self.thresholds[threshold_id]
        if threshold.unit != "d":
            raise KeyError(f"{threshold_id} is not a window in days")
        return int(threshold.value)

    def phrase(self, text: str) -> str:
        """Knowledge prose with its `{threshold-id}` placeholders filled from the thresholds."""
        return fill_placeholders(text, self.thresholds)

    def with_thresholds(self, values: dict[str, float]) -> KnowledgeBase:
        """A copy with some threshold values changed (what-if reviews and tests). Prose that cites
        a threshold is filled again from the raw text, so it states the new values."""
        thresholds = {
            key: replace(threshold, value=float(values[key])) if key in values else threshold
            for key, threshold in self.thresholds.items()
        }
        unknown = set(values) - set(self.thresholds)
        if unknown:
            raise KnowledgeBaseError(f"unknown thresholds: {sorted(unknown)}")
        return _assemble(self.version, self.sources, thresholds, self.raw_workup, self.raw_differentials)

    def differential(self, differential_id: str) -> Differential:
        """The differential with this id."""
        for differential in self.differentials:
            if differential.id == differential_id:
                return differential
        raise KeyError(differential_id)


KNOWLEDGE_VERSION = "2026.11.0"

WORKUP_TRIGGERS = frozenset(
    {
        "always",
        "metabolic",
        "hypercalcemia",
        "hypercalcemia-or-hyperphosphatemia",
        "hypercalcemia-low-pth",
        "hypercalcemia-pth-not-low",
        "suspected-ctd",
        "calciphylaxis-suspected",
        "gout-raised",
        "xanthoma-raised",
        "diagnosis-uncertain",
        "corrected-calcium-unreliable",
        "urine-not-informative",
        "oxalosis-raised",
        "hftc-raised",
    }
)


def _read(name: str, directory: Path | None = None) -> dict[str, Any]:
    try:
        if directory is not None:
            text = (directory / name).read_text(encoding="utf-8")
        else:
            text = resources.files("calcinosis").joinpath("knowledge").joinpath(name).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise KnowledgeBaseError(f"knowledge file {name}: {error}") from error
    if not isinstance(data, dict):
        raise KnowledgeBaseError(f"knowledge file {name}: top level must be an object")
    return data


def _require(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise KnowledgeBaseError(f"{where}: '{key}' must be {kind.__name__}")
    return value


def _sources(entry: dict[str, Any], where: str, known: dict[str, Source]) -> tuple[str, ...]:
    keys = _require(entry, "sources", list, where)
    if not keys:
        raise KnowledgeBaseError(f"{where}: cites no source")
    for key in keys:
        if key not in known:
            raise KnowledgeBaseError(f"{where}: unknown source '{key}'")
    evidence = entry.get("evidence")
    if evidence not in EVIDENCE_TAGS:
        raise KnowledgeBaseError(f"{where}: evidence must be one of {sorted(EVIDENCE_TAGS)}")
    return tuple(keys)


def _code(raw: Any, where: str) -> Code | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise KnowledgeBaseError(f"{where}: code must be an object or null")
    return Code(
        system=_require(raw, "system", str, where),
        code=_require(raw, "code", str, where),
        display=_require(raw, "display", str, where),
    )


def fill_placeholders(text: str, thresholds: dict[str, Threshold], where: str = "text") -> str:
    """Replace `{threshold-id}` by value and unit and `{threshold-id#}` by the value alone."""

    def one(match: re.Match[str]) -> str:
        threshold = thresholds.get(match.group(1))
        if threshold is None:
            raise KnowledgeBaseError(f"{where}: unknown threshold '{match.group(1)}' in text")
        number = format_number(threshold.value)
        return number if match.group(2) else f"{number} {display_unit(threshold.unit)}"

    return _PLACEHOLDER.sub(one, text)


def _window(entry: dict[str, Any], key: str, where: str, thresholds: dict[str, Threshold]) -> str | None:
    """A look-back window named by its threshold id (one source per window: thresholds.json)."""
    if f"{key}_days" in entry:
        raise KnowledgeBaseError(
            f"{where}: '{key}_days' is no longer read; name a window of thresholds.json in '{key}'"
        )
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in thresholds or thresholds[value].unit != "d":
        raise KnowledgeBaseError(f"{where}: '{key}' must name a threshold in days, or be null")
    return value


def _resolve_workup(item: WorkupItem, thresholds: dict[str, Threshold]) -> WorkupItem:
    """The item with its windows in days and its prose filled from the thresholds."""
    where = f"workup.json {item.id}"
    return replace(
        item,
        lookback_days=int(thresholds[item.lookback].value) if item.lookback else None,
        lookback_days_dialysis=int(thresholds[item.lookback_dialysis].value) if item.lookback_dialysis else None,
        reason=fill_placeholders(item.reason, thresholds, where),
        caution=fill_placeholders(item.caution, thresholds, where) if item.caution else None,
        label=fill_placeholders(item.label, thresholds, where),
    )


def _assemble(
    version: str,
    sources: dict[str, Source],
    thresholds: dict[str, Threshold],
    raw_workup: tuple[WorkupItem, ...],
    raw_differentials: tuple[Differential, ...],
) -> KnowledgeBase:
    """The knowledge base with every placeholder resolved against `thresholds`."""
    workup = tuple(_resolve_workup(item, thresholds) for item in raw_workup)
    differentials = tuple(
        replace(
            d,
            label=fill_placeholders(d.label, thresholds, f"differentials.json {d.id}"),
            separating_test=fill_placeholders(d.separating_test, thresholds, f"differentials.json {d.id}"),
        )
        for d in raw_differentials
    )
    return KnowledgeBase(version, sources, thresholds, workup, differentials, raw_workup, raw_differentials)


def load_knowledge(directory: str | Path | None = None) -> KnowledgeBase:
    """Read and validate the knowledge files (the packaged ones, or those of another folder, e.g.
    a reviewer's edited copy); raises `KnowledgeBaseError` on any defect."""
    folder = Path(directory) if directory is not None else None
    raw_sources = _read("sources.json", folder).get("sources")
    if not isinstance(raw_sources, dict):
        raise KnowledgeBaseError("sources.json: 'sources' must be an object")
    sources: dict[str, Source] = {}
    for key, entry in raw_sources.items():
        where = f"sources.json {key}"
        if not isinstance(entry, dict):
            raise KnowledgeBaseError(f"{where}: must be an object")
        url = entry.get("url")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise KnowledgeBaseError(f"{where}: url must be absolute http(s)")
        sources[key] = Source(key, _require(entry, "citation", str, where), url, bool(entry.get("link")))

    raw_thresholds = _read("thresholds.json", folder).get("thresholds")
    if not isinstance(raw_thresholds, dict):
        raise KnowledgeBaseError("thresholds.json: 'thresholds' must be an object")
    thresholds: dict[str, Threshold] = {}
    for key, entry in raw_thresholds.items():
        where = f"thresholds.json {key}"
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise KnowledgeBaseError(f"{where}: 'value' must be a number")
        thresholds[key] = Threshold(
            id=key,
            value=float(value),
            unit=_require(entry, "unit", str, where),
            meaning=_require(entry, "meaning", str, where),
            sources=_sources(entry, where, sources),
            evidence=entry["evidence"],
        )

    if folder is not None:
        # The rules read thresholds by id: a folder without one the packaged file has (a deleted
        # entry, or an older knowledge base than these rules) would fail mid-request. Say so now.
        missing = sorted(set(default_knowledge().thresholds) - set(thresholds))
        if missing:
            raise KnowledgeBaseError(
                f"thresholds.json lacks {', '.join(missing)}, which the rules of this version read"
                " (is the knowledge base older than these rules?)"
            )

    raw_items = _read("workup.json", folder).get("items")
    if not isinstance(raw_items, list):
        raise KnowledgeBaseError("workup.json: 'items' must be a list")
    workup: list[WorkupItem] = []
    for index, entry in enumerate(raw_items):
        where = f"workup.json item {index}"
        if not isinstance(entry, dict):
            raise KnowledgeBaseError(f"{where}: must be an object")
        trigger = _require(entry, "trigger", str, where)
        if trigger not in WORKUP_TRIGGERS:
            raise KnowledgeBaseError(f"{where}: unknown trigger '{trigger}'")
        never_when = entry.get("never_when")
        if never_when is not None and never_when not in WORKUP_TRIGGERS:
            raise KnowledgeBaseError(f"{where}: unknown never_when '{never_when}'")
        workup.append(
            WorkupItem(
                id=_require(entry, "id", str, where),
                label=_require(entry, "label", str, where),
                kind=_require(entry, "kind", str, where),
                code=_code(entry.get("code"), where),
                satisfied_by=tuple(_require(entry, "satisfied_by", list, where)),
                lookback_days=None,
                lookback_days_dialysis=None,
                trigger=trigger,
                reason=_require(entry, "reason", str, where),
                sources=_sources(entry, where, sources),
                evidence=entry["evidence"],
                code_note=entry.get("code_note"),
                never_when=never_when,
                caution=entry.get("caution"),
                lookback=_window(entry, "lookback", where, thresholds),
                lookback_dialysis=_window(entry, "lookback_dialysis", where, thresholds),
            )
        )
    if len({item.id for item in workup}) != len(workup):
        raise KnowledgeBaseError("workup.json: item ids must be unique")

    raw_differentials = _read("differentials.json", folder).get("differentials")
    if not isinstance(raw_differentials, list):
        raise KnowledgeBaseError("differentials.json: 'differentials' must be a list")
    differentials: list[Differential] = []
    for index, entry in enumerate(raw_differentials):
        where = f"differentials.json item {index}"
        if not isinstance(entry, dict):
            raise KnowledgeBaseError(f"{where}: must be an object")
        differentials.append(
            Differential(
                id=_require(entry, "id", str, where),
                label=_require(entry, "label", str, where),
                separating_test=_require(entry, "separating_test", str, where),
                test_code=_code(entry.get("test_code"), where),
                sources=_sources(entry, where, sources),
                evidence=entry["evidence"],
            )
        )
    return _assemble(KNOWLEDGE_VERSION, sources, thresholds, tuple(workup), tuple(differentials))


@lru_cache(maxsize=1)
def default_knowledge() -> KnowledgeBase:
    """The packaged knowledge base, loaded once per process."""
    return load_knowledge()
