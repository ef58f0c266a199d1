"""The sandbox test patients (deploy/fhir-sandbox/patients): load them and move their dates.

Tooling of a source checkout, not of the installed service: this package is not in the wheel or
the image, and finds the patients beside itself in the repository (or in the folder it is given).

Each scenario file is a FHIR R4 transaction Bundle of `PUT {Type}/{id}` entries whose dates are
written relative to one fixed anchor day (`ANCHOR`, also recorded in the Bundle's `meta`). The
clinical rules look back over windows counted in days (90 days for the lab gate, a year for PTH,
5 years of dialysis), so a chart written for 2026-11-01 would drift out of its windows as the
calendar moves on. `shift_dates` moves every date in a Bundle by the same number of days, so that
"5 days before the anchor" becomes "5 days before today" and the scenario gives the same outcome
on any day it is loaded into a sandbox.

`expected.json` beside the Bundles records what each scenario should produce at the anchor; the
test suite holds the service to it, and a demo can show it next to the cards.

This module reads files and transforms JSON only: no FastAPI, no HTTP client, so the test suite,
a loader script or the command line can use it without the service's runtime.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from calcinosis.assessment import Likelihood, Subtype
from fhir_mapping.anchor import ANCHOR_TAG_SYSTEM, bundle_anchor

__all__ = [
    "ANCHOR",
    "ANCHOR_TAG_SYSTEM",
    "EXPECTED_FILE",
    "ExpectedOutcome",
    "OrderScenario",
    "Scenario",
    "ScenarioError",
    "bundle_anchor",
    "draft_orders_dir",
    "load_order_scenarios",
    "load_scenarios",
    "patients_dir",
    "shift_date_string",
    "shift_dates",
]

#: The day every scenario's dates are written against (recorded in each Bundle's meta too).
ANCHOR = date(2026, 11, 1)
EXPECTED_FILE = "expected.json"

# A FHIR date, dateTime or instant with at least a full day: YYYY-MM-DD, optionally followed by a
# time (seconds and fractions optional) and an optional zone. Digits are ASCII only ([0-9], not
# \d, which also matches other scripts' digits) and the pattern is used with fullmatch (so a
# trailing newline or any surrounding text means "not a date"). Partial dates (YYYY, YYYY-MM)
# are deliberately not matched: a bare "2024" is as likely a code or a count as a year.
_FHIR_DATE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:\.[0-9]+)?)?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?"
)


class ScenarioError(ValueError):
    """The scenario files disagree with each other or with expected.json."""


@dataclass(frozen=True, slots=True)
class ExpectedOutcome:
    """What the assessment of a scenario should be at the anchor day.

    `subtypes` maps every subtype (`dystrophic`, ...) to its likelihood (`likely`, ...);
    `raised_differentials` lists the differential ids the record should raise (sorted). The
    differentials only listed for consideration are not part of the expectation, because they
    are the same fixed list for every chart.
    """

    subtypes: dict[str, str]
    raised_differentials: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One sandbox patient: its transaction Bundle and the outcome expected at the anchor.

    `expected` is None for a silent scenario (no calcinosis documented: no assessment, no cards).
    """

    name: str
    patient_id: str
    description: str
    bundle: dict[str, Any]
    expected: ExpectedOutcome | None


def patients_dir() -> Path:
    """deploy/fhir-sandbox/patients in the source tree this module lives in.

    Found from this file's location (calcinosis_tools/ sits at the repository root), not the
    working directory, so tests and scripts work from anywhere in a checkout. The patients are
    test data, not package data: neither they nor this package are in the wheel or the image.
    """
    return Path(__file__).resolve().parents[1] / "deploy" / "fhir-sandbox" / "patients"


def _expected_outcome(name: str, raw: Any) -> ExpectedOutcome | None:
    """Parse one `expected` entry, rejecting unknown subtypes or likelihoods (typos would
    otherwise make a scenario test pass or fail for the wrong reason)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{name}: 'expected' must be an object or null")
    subtypes = raw.get("subtypes")
    raised = raw.get("raised_differentials")
    if not isinstance(subtypes, Mapping) or not isinstance(raised, list):
        raise ScenarioError(f"{name}: 'expected' needs 'subtypes' (object) and 'raised_differentials' (list)")
    known_subtypes = {s.value for s in Subtype}
    known_likelihoods = {item.value for item in Likelihood}
    if set(subtypes) != known_subtypes:
        raise ScenarioError(f"{name}: 'subtypes' must name exactly {sorted(known_subtypes)}")
    if not all(isinstance(v, str) and v in known_likelihoods for v in subtypes.values()):
        raise ScenarioError(f"{name}: each likelihood must be one of {sorted(known_likelihoods)}")
    if not all(isinstance(d, str) for d in raised):
        raise ScenarioError(f"{name}: 'raised_differentials' must be a list of ids")
    return ExpectedOutcome(dict(subtypes), tuple(sorted(raised)))


def _patient_id(name: str, bundle: Any) -> str:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        raise ScenarioError(f"{name}: not a FHIR transaction Bundle")
    entries = bundle.get("entry")
    entries = entries if isinstance(entries, list) else []
    patients = [
        entry["resource"]["id"]
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1 or not isinstance(patients[0], str):
        raise ScenarioError(f"{name}: a scenario Bundle holds exactly one Patient")
    patient_id: str = patients[0]
    return patient_id


def load_scenarios(directory: Path | None = None) -> list[Scenario]:
    """Every scenario in `directory` (default `patients_dir()`), sorted by file name.

    Every `*.json` Bundle must have an entry in expected.json and the other way round, with the
    same patient id and anchor: a scenario added without its expectation, or an expectation left
    behind by a renamed file, fails here instead of silently going untested.
    """
    directory = directory or patients_dir()
    if not directory.is_dir():
        raise ScenarioError(f"no folder {directory}: give the folder of scenario Bundles (with {EXPECTED_FILE})")
    try:
        index = json.loads((directory / EXPECTED_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(f"cannot read {directory / EXPECTED_FILE}: {error}") from error
    scenarios_raw = index.get("scenarios") if isinstance(index, dict) else None
    if not isinstance(scenarios_raw, dict):
        raise ScenarioError(f"{EXPECTED_FILE}: needs a 'scenarios' object keyed by file name")
    try:
        anchor = date.fromisoformat(str(index.get("anchor")))
    except ValueError as error:
        raise ScenarioError(f"{EXPECTED_FILE}: 'anchor' must be a YYYY-MM-DD date") from error
    files = sorted(p for p in directory.glob("*.json") if p.name != EXPECTED_FILE)
    names = {p.name for p in files}
    if names != set(scenarios_raw):
        missing = sorted(names - set(scenarios_raw))
        extra = sorted(set(scenarios_raw) - names)
        raise ScenarioError(f"{EXPECTED_FILE} and the Bundles disagree: no entry for {missing}, no file for {extra}")
    scenarios: list[Scenario] = []
    for path in files:
        entry = scenarios_raw[path.name]
        if not isinstance(entry, dict):
            raise ScenarioError(f"{EXPECTED_FILE}: entry for {path.name} must be an object")
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ScenarioError(f"cannot read {path}: {error}") from error
        patient_id = _patient_id(path.name, bundle)
        if entry.get("patient_id") != patient_id:
            raise ScenarioError(
                f"{path.name}: Patient id {patient_id!r} but {EXPECTED_FILE} says {entry.get('patient_id')!r}"
            )
        if bundle_anchor(bundle) != anchor:
            raise ScenarioError(f"{path.name}: meta.tag anchor differs from the anchor {anchor} of {EXPECTED_FILE}")
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip():
            raise ScenarioError(f"{EXPECTED_FILE}: entry for {path.name} needs a description")
        scenarios.append(
            Scenario(
                name=path.stem,
                patient_id=patient_id,
                description=description,
                bundle=bundle,
                expected=_expected_outcome(path.name, entry.get("expected")),
            )
        )
    return scenarios


def shift_date_string(value: str, days: int) -> str:
    """`value` moved by `days` if it is a FHIR date/dateTime/instant with a full day, else `value`.

    Only the YYYY-MM-DD part changes: the time of day and the zone are kept exactly as written
    (so a moment keeps its offset and an all-day date stays a date). A value that looks like a
    date but is not a calendar day (2026-02-30) is left alone, like any other text.

    Raises ValueError if the shifted day falls outside years 1-9999.
    """
    match = _FHIR_DATE.fullmatch(value)
    if match is None:
        return value
    try:
        day = date.fromisoformat(match.group("date"))
    except ValueError:
        return value
    try:
        moved = day + timedelta(days=days)
    except OverflowError as error:
        raise ValueError(f"cannot shift {value!r} by {days} days: outside years 1-9999") from error
    return moved.isoformat() + value[10:]


def _shift(node: Any, days: int) -> Any:
    if isinstance(node, str):
        return shift_date_string(node, days)
    if isinstance(node, Mapping):
        return {key: _shift(value, days) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_shift(value, days) for value in node]
    return node


def shift_dates(bundle: Mapping[str, Any], anchor: date, today: date) -> dict[str, Any]:
    """A deep copy of `bundle` with every date moved by `today - anchor` days.

    Dates are found by their value, in any field (effectiveDateTime, onsetDateTime, authoredOn,
    period.start/end, issued, meta.lastUpdated, extensions...), because a list of date fields
    would miss some and FHIR has dozens. That includes `Patient.birthDate`: moving it by the same
    number of days keeps every age at every event exactly what it was (an infant stays an
    infant), which matters more here than keeping real birthdays. It also includes the anchor
    tag in `Bundle.meta.tag`, which therefore names the new day afterwards. Partial dates
    (YYYY, YYYY-MM) and text that merely contains a date are not changed. Keys and non-string
    values are never changed; the input is not modified.
    """
    days = (today - anchor).days
    shifted = _shift(bundle, days)
    assert isinstance(shifted, dict)
    return shifted


@dataclass(frozen=True, slots=True)
class OrderScenario:
    """A draft-order scenario of the order-sign service: a `draftOrders` Bundle for one sandbox
    patient, and the cards expected (indicator, topic, rule), in response order; () is silence."""

    name: str
    patient_id: str
    description: str
    draft_orders: dict[str, Any]
    expected_cards: tuple[tuple[str, str, str], ...]


def draft_orders_dir() -> Path:
    """deploy/fhir-sandbox/draft-orders in the source tree (test data, like the patients)."""
    return Path(__file__).resolve().parents[1] / "deploy" / "fhir-sandbox" / "draft-orders"


def load_order_scenarios(directory: Path | None = None, patients: list[Scenario] | None = None) -> list[OrderScenario]:
    """Every draft-order scenario, checked against its expected.json and against the patients it
    names (a scenario for a patient that is not loaded would test nothing)."""
    directory = directory or draft_orders_dir()
    try:
        index = json.loads((directory / EXPECTED_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(f"cannot read {directory / EXPECTED_FILE}: {error}") from error
    raw = index.get("scenarios") if isinstance(index, dict) else None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{EXPECTED_FILE}: needs a 'scenarios' object keyed by file name")
    files = sorted(p for p in directory.glob("*.json") if p.name != EXPECTED_FILE)
    if {p.name for p in files} != set(raw):
        raise ScenarioError(f"{directory.name}/{EXPECTED_FILE} and the draft-order files disagree")
    known = {s.patient_id for s in (patients if patients is not None else load_scenarios())}
    scenarios: list[OrderScenario] = []
    for path in files:
        entry = raw[path.name]
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
            cards = tuple((str(a), str(b), str(c)) for a, b, c in entry["cards"])
            patient_id, description = str(entry["patient_id"]), str(entry["description"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ScenarioError(f"{path.name}: {error}") from error
        if patient_id not in known:
            raise ScenarioError(f"{path.name}: no sandbox patient {patient_id!r}")
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise ScenarioError(f"{path.name}: must be a draftOrders Bundle")
        scenarios.append(OrderScenario(path.stem, patient_id, description, bundle, cards))
    return scenarios
