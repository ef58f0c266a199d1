"""FHIR R4 resources (as decoded JSON) to `calcinosis` findings.

Works on plain dicts rather than typed models because most of a chart is irrelevant: resources are
selected by code first, and only what the assessment finally cites is validated with
`fhir.resources` (see `fhir_mapping.pipeline`). Every field read here is type-checked, so a
malformed resource is skipped and counted, never raised.

Status rules (which records count):
- Observation: only final, amended and corrected results; registered, preliminary, cancelled,
  entered-in-error and unknown are skipped.
- Condition: refuted and entered-in-error are skipped; inactive, resolved and remission are kept
  with their status (the rules decide where that matters, e.g. no assessment for a resolved
  calcinosis, but a past gout still raises the gout differential).
- Medications: entered-in-error, cancelled, draft, not-taken and not-done are skipped.
- Procedure: not-done, entered-in-error and preparation are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from calcinosis.findings import (
    Analyte,
    ClinicalConcept,
    ConditionFinding,
    DataIssue,
    DrugClass,
    Interpretation,
    LabResult,
    MedicationExposure,
    PatientFindings,
    ProcedureFinding,
    ProcedureKind,
    Sex,
    SourceRef,
)
from fhir_mapping.assertion import Assertion, assertion_of
from fhir_mapping.terminology import SNOMED, Finding, Terminology, normalise_system
from fhir_mapping.units import normalise

OBSERVATION_COUNTS = frozenset({"final", "amended", "corrected"})
CONDITION_SKIP = frozenset({"refuted", "entered-in-error"})
MEDICATION_SKIP = frozenset({"entered-in-error", "cancelled", "draft", "not-taken", "not-done"})
PROCEDURE_SKIP = frozenset({"not-done", "entered-in-error", "preparation"})
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration"})
ENTRY_CONCEPTS = frozenset(
    {
        ClinicalConcept.CALCINOSIS_CUTIS,
        ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA,
        ClinicalConcept.CALCINOSIS_UNIVERSALIS,
        ClinicalConcept.CALCIPHYLAXIS,
    }
)
"""Concepts that open an assessment (clinical-knowledge.md 4): their words must document them."""
CURRENT_ONLY = ENTRY_CONCEPTS | {ClinicalConcept.ISCHEMIC_SKIN_LESION, ClinicalConcept.ACUTE_KIDNEY_INJURY}
"""Concepts that matter only while present: a past or resolved one is not documentation."""

_INTERPRETATION = {
    "H": Interpretation.HIGH,
    "HH": Interpretation.HIGH,
    "HU": Interpretation.HIGH,
    ">": Interpretation.HIGH,
    "L": Interpretation.LOW,
    "LL": Interpretation.LOW,
    "LU": Interpretation.LOW,
    "<": Interpretation.LOW,
    "N": Interpretation.NORMAL,
    "A": Interpretation.ABNORMAL,
    "AA": Interpretation.ABNORMAL,
}
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PLAUSIBLE_YEARS = (1800, 2200)
_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*(-?\d+(?:\.\d+)?)\s*$")
_MASS_PER_DAY = {"ug": 1.0, "mcg": 1.0, "µg": 1.0, "μg": 1.0, "mg": 1000.0, "ng": 0.001}
_PERIOD_DAYS = {"h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4, "a": 365.25}


Coding = tuple[str | None, str | None, str | None]
"""(system, code, display) of one coding, each None when absent or not a string."""
F = TypeVar("F", ClinicalConcept, DrugClass, ProcedureKind)


@dataclass(slots=True)
class _LabCandidate:
    """A matching, countable Observation (or component) not yet read in detail."""

    effective: datetime
    analyte: Analyte
    coding: Coding
    element: dict[str, Any]
    resource: dict[str, Any]
    reference: str
    from_issued: bool


DEFAULT_LAB_RETENTION_DAYS = 730


class MalformedResourceError(ValueError):
    """A resource is structurally unusable; the message is safe to show (no patient data)."""


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware UTC datetime; partial dates take the first
    day of their period. Anything else is None (never an exception)."""
    if not isinstance(value, str):
        return None
    # Fast path for the common full forms (C parser); the regex below handles partial dates and
    # rejects what FHIR does not allow.
    if len(value) >= 19 and value[10] == "T" and value[4] == "-":
        try:
            moment: datetime | None = datetime.fromisoformat(value)
            if moment is not None:
                moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            moment = None
        if moment is not None:
            return moment if _PLAUSIBLE_YEARS[0] <= moment.year <= _PLAUSIBLE_YEARS[1] else None
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=UTC
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        try:
            moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        except OverflowError:
            return None
    # Valid FHIR, but not a date in a patient's record: "0001-01-01" placeholders and the like
    # would otherwise push look-back arithmetic out of the calendar.
    return moment if _PLAUSIBLE_YEARS[0] <= moment.year <= _PLAUSIBLE_YEARS[1] else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _codings(concept: Any) -> list[tuple[str | None, str | None, str | None]]:
    codings = []
    for coding in _list(_dict(concept).get("coding")):
        if isinstance(coding, dict):
            system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
            codings.append(
                (
                    system if isinstance(system, str) else None,
                    code if isinstance(code, str) else None,
                    display if isinstance(display, str) else None,
                )
            )
    return codings


def _label(concept: Any) -> str | None:
    text = _dict(concept).get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for _, _, display in _codings(concept):
        if display:
            return display
    return None


def _reported_range(element: dict[str, Any]) -> str | None:
    """The normal range as the lab wrote it ("2.51-4.49 mmol/L", "<65 pg/mL"), for the card to show
    beside the value in the same unit; None when the range has no number."""
    for entry in _list(element.get("referenceRange")):
        if not isinstance(entry, dict):
            continue
        range_type = entry.get("type")
        if range_type is not None:
            kind = [code for _, code, _ in _codings(range_type)]
            if kind and "normal" not in kind:
                continue
        ends: list[tuple[float, str | None]] = []
        for key in ("low", "high"):
            quantity = entry.get(key)
            number = _number(quantity.get("value")) if isinstance(quantity, dict) else None
            if number is not None and isinstance(quantity, dict):
                unit = quantity.get("unit") if isinstance(quantity.get("unit"), str) else quantity.get("code")
                ends.append((number, unit if isinstance(unit, str) and unit.strip() else None))
            else:
                ends.append((float("nan"), None))
        (low, low_unit), (high, high_unit) = ends
        unit = high_unit or low_unit
        suffix = f" {unit}" if unit else ""
        if low == low and high == high:
            return f"{low:g}-{high:g}{suffix}"
        if high == high:
            return f"<{high:g}{suffix}"
        if low == low:
            return f">{low:g}{suffix}"
    return None


def _period_point(period: Any, prefer_end: bool = True) -> datetime | None:
    period = _dict(period)
    first, second = ("end", "start") if prefer_end else ("start", "end")
    return parse_datetime(period.get(first)) or parse_datetime(period.get(second))


def _number(value: Any) -> float | None:
    """A finite number as float; None for anything else, an integer too large for a float
    included (JSON allows it, and `fhir_mapping.wire` keeps it as int)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


@dataclass(slots=True)
class MappingResult:
    """Findings plus an index from `Type/id` to the raw resource (for targeted validation)."""

    findings: PatientFindings
    index: dict[str, dict[str, Any]] = field(default_factory=dict)


class FindingsBuilder:
    """Accumulates findings from resources of one patient."""

    def __init__(
        self,
        terminology: Terminology,
        as_of: datetime,
        patient_id: str | None = None,
        lab_retention_days: int = DEFAULT_LAB_RETENTION_DAYS,
    ) -> None:
        self.terminology = terminology
        self.lab_retention = timedelta(days=lab_retention_days)
        self._lab_candidates: list[_LabCandidate] = []
        self.as_of = as_of
        self.patient_id = patient_id
        self.labs: list[LabResult] = []
        self.conditions: list[ConditionFinding] = []
        self.medications: list[MedicationExposure] = []
        self.procedures: list[ProcedureFinding] = []
        self.issues: list[DataIssue] = []
        self.index: dict[str, dict[str, Any]] = {}
        self._all: list[Any] = []
        self._medications_indexed: dict[str, dict[str, Any]] | None = None
        self.sex = Sex.UNKNOWN
        self.birth_date: date | None = None
        self.seen = 0
        self.skipped = 0
        self.has_medication_data = False
        self.has_procedure_data = False
        # A chart names the same concepts over and over (a decade of "Hemodialysis" procedures,
        # the same drug on every refill): the value-set look-ups of one request are remembered
        # for that request only, so no patient text outlives it.
        self._text_findings: dict[tuple[str, str], list[Finding]] = {}
        self._text_spans: dict[tuple[str, str], list[tuple[Finding, Assertion]]] = {}
        self.unreadable_entries: list[str] = []
        self._code_findings: dict[tuple[str | None, str | None], list[Finding]] = {}
        self._analytes_by_code: dict[tuple[str | None, str], tuple[Analyte, ...]] = {}
        # The draws of a panel share one timestamp, and every resource names the same subject.
        self._moments: dict[str, datetime | None] = {}
        self._own_subjects: set[str] = set()
        self._conversions: dict[tuple[Any, ...], tuple[float | None, str | None, str | None]] = {}

    # ----- entry point ---------------------------------------------------------------------

    def add_all(self, resources: Iterable[Any]) -> None:
        """Map every resource. Medication resources are indexed, on the first reference to one,
        from all of `resources`, so a reference resolves wherever the Medication stands."""
        self._all = list(resources)
        for resource in self._all:
            self.add(resource)

    def _medication_index(self) -> dict[str, dict[str, Any]]:
        """`Medication/id` -> Medication among the resources of `add_all` (built once, when an
        order first names a Medication by reference: most charts code the drug in the order)."""
        if self._medications_indexed is None:
            self._medications_indexed = {}
            for resource in self._all:
                if (
                    isinstance(resource, dict)
                    and resource.get("resourceType") == "Medication"
                    and isinstance(resource.get("id"), str)
                ):
                    self._medications_indexed[f"Medication/{resource['id']}"] = resource
        return self._medications_indexed

    def add(self, resource: Any) -> None:
        """Map one resource, skipping and counting it if it is malformed."""
        self.seen += 1
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self._skip("(unnamed resource)", "not a FHIR resource object")
            return
        kind = resource["resourceType"]
        handler = _HANDLER_FUNCTIONS.get(kind)
        if handler is None:
            return
        resource_id = resource.get("id")
        if not isinstance(resource_id, str) or not resource_id:
            self._skip(f"{kind}/(no id)", "resource has no id")
            if kind == "Condition" and any(
                finding in ENTRY_CONCEPTS
                for finding, _ in self._classify(resource.get("code"), "condition", ClinicalConcept)
            ):
                self.unreadable_entries.append(f"{kind}/(no id)")
            return
        reference = f"{kind}/{resource_id}"
        try:
            handler(self, resource, reference)
        except MalformedResourceError as problem:
            self._skip(reference, str(problem))

    def _read_labs(self) -> None:
        """Read the lab candidates the rules can use: every result within the retention window,
        and the newest older one of each analyte (cited as "last result, outside the window")."""
        cutoff = self.as_of - self.lab_retention
        newest_old: dict[Analyte, _LabCandidate] = {}
        selected: list[_LabCandidate] = []
        for candidate in self._lab_candidates:
            if candidate.effective >= cutoff:
                selected.append(candidate)
            elif candidate.analyte not in newest_old or candidate.effective > newest_old[candidate.analyte].effective:
                newest_old[candidate.analyte] = candidate
        selected.extend(newest_old.values())
        interpretations: dict[int, Interpretation | None] = {}
        for candidate in selected:
            element = candidate.element
            key = id(element)
            if key not in interpretations:
                interpretations[key] = self._interpretation(element)
            system, code, display = candidate.coding
            self.index[candidate.reference] = candidate.resource
            self.labs.append(
                self._lab(
                    candidate.analyte,
                    element,
                    candidate.resource["id"],
                    system,
                    code,
                    display,
                    candidate.effective,
                    candidate.from_issued,
                    interpretations[key],
                    candidate.reference,
                )
            )
        self._lab_candidates = []

    def build(self) -> MappingResult:
        """The accumulated findings."""
        self._read_labs()
        findings = PatientFindings(
            as_of=self.as_of,
            sex=self.sex,
            birth_date=self.birth_date,
            labs=tuple(self.labs),
            conditions=tuple(self.conditions),
            medications=tuple(self.medications),
            procedures=tuple(self.procedures),
            has_medication_data=self.has_medication_data,
            has_procedure_data=self.has_procedure_data,
            issues=tuple(self.issues),
            resources_seen=self.seen,
            resources_skipped=self.skipped,
            unreadable_entries=tuple(self.unreadable_entries),
        )
        return MappingResult(findings, self.index)

    # ----- helpers -------------------------------------------------------------------------

    def _skip(self, reference: str, reason: str) -> None:
        self.skipped += 1
        self.issues.append(DataIssue(reference, f"skipped: {reason}"))

    def _check_patient(self, resource: dict[str, Any]) -> None:
        """Reject a resource about another patient (an over-broad prefetch must not leak in).
        Called by each handler once a resource is known to matter, not for every resource."""
        if self.patient_id is None:
            return
        subject = resource.get("subject") or resource.get("patient")
        reference = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(reference, str) or reference in self._own_subjects:
            return
        if reference.startswith("Patient/") and reference.split("/", 2)[1] != self.patient_id:
            raise MalformedResourceError("subject is another patient")
        self._own_subjects.add(reference)

    def _status(self, resource: dict[str, Any]) -> str:
        status = resource.get("status")
        if not isinstance(status, str):
            raise MalformedResourceError("status missing")
        return status

    def _source(
        self, kind: str, resource_id: str, system: str | None, code: str | None, display: str | None
    ) -> SourceRef:
        return SourceRef(kind, resource_id, normalise_system(system), code, display)

    # ----- Patient -------------------------------------------------------------------------

    def _patient(self, resource: dict[str, Any], reference: str) -> None:
        gender = resource.get("gender")
        if isinstance(gender, str) and gender in Sex.__members__.values():
            self.sex = Sex(gender)
        birth = parse_datetime(resource.get("birthDate"))
        if birth is not None:
            self.birth_date = birth.date()

    # ----- Observation ---------------------------------------------------------------------

    def _observation(self, resource: dict[str, Any], reference: str) -> None:
        # The hottest path of a request (every Observation of a chart): in the usual case, a
        # countable result whose effectiveDateTime was seen before (the draws of a panel share
        # one), the date is a dictionary look-up and no candidate is read in detail here.
        matches = self._lab_matches(resource.get("code"))
        components = resource.get("component")
        component_matches = self._component_matches(components) if components else []
        if not matches and not component_matches:
            return
        self._check_patient(resource)
        status = self._status(resource)
        if status not in OBSERVATION_COUNTS:
            self._skip(reference, f"status '{status}' does not count")
            return
        effective_text = resource.get("effectiveDateTime")
        effective = self._moments.get(effective_text) if isinstance(effective_text, str) else None
        from_issued = False
        if effective is None:
            effective, from_issued = self._observation_date(resource)
            if effective is None:
                raise MalformedResourceError("no effective date or issued time")
        # Only remembered here; values, units and ranges are read in `build` for the results
        # the rules can use (see `lab_retention_days`), which for a decade of dialysis labs is
        # a small fraction of them.
        candidates = self._lab_candidates
        for analyte, coding in matches:
            candidates.append(_LabCandidate(effective, analyte, coding, resource, resource, reference, from_issued))
        for component, found in component_matches:
            for analyte, coding in found:
                candidates.append(
                    _LabCandidate(effective, analyte, coding, component, resource, reference, from_issued)
                )

    def _component_matches(self, components: Any) -> list[tuple[dict[str, Any], list[tuple[Analyte, Coding]]]]:
        """The components (of a panel Observation) whose codes map to analytes."""
        found = []
        for component in _list(components):
            if isinstance(component, dict):
                analytes = self._lab_matches(component.get("code"))
                if analytes:
                    found.append((component, analytes))
        return found

    def _lab_matches(self, concept: Any) -> list[tuple[Analyte, Coding]]:
        """Analytes a code maps to. Called for every Observation of a chart (thousands in a decade
        of dialysis labs), so each distinct code is looked up once per request and the usual case
        costs a dictionary look-up per coding."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return []
        found: list[tuple[Analyte, Coding]] = []
        known = self._analytes_by_code
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(code, str) or not code:
                continue
            key = (system if isinstance(system, str) else None, code)
            analytes = known.get(key)
            if analytes is None:
                analytes = known[key] = tuple(
                    finding for finding in self.terminology.match_code(*key) if isinstance(finding, Analyte)
                )
            for analyte in analytes:
                if not found or all(analyte is not f for f, _ in found):
                    display = coding.get("display")
                    found.append((analyte, (system, code, display if isinstance(display, str) else None)))
        return found

    def _observation_date(self, resource: dict[str, Any]) -> tuple[datetime | None, bool]:
        effective = resource.get("effectiveDateTime")
        if isinstance(effective, str):
            if effective in self._moments:
                moment = self._moments[effective]
            else:
                moment = self._moments[effective] = parse_datetime(effective)
            if moment is not None:
                return moment, False
        moment = _period_point(resource.get("effectivePeriod")) or parse_datetime(resource.get("effectiveInstant"))
        if moment is not None:
            return moment, False
        issued = parse_datetime(resource.get("issued"))
        return issued, issued is not None

    def _interpretation(self, element: dict[str, Any]) -> Interpretation | None:
        for concept in _list(element.get("interpretation")):
            for _, code, _ in _codings(concept):
                if code in _INTERPRETATION:
                    return _INTERPRETATION[code]
        return None

    def _lab(
        self,
        analyte: Analyte,
        element: dict[str, Any],
        resource_id: str,
        system: str | None,
        code: str | None,
        display: str | None,
        effective: datetime,
        from_issued: bool,
        interpretation: Interpretation | None,
        reference: str,
    ) -> LabResult:
        source = self._source("Observation", resource_id, system, code, display)
        quantity = element.get("valueQuantity")
        value: float | None = None
        comparator: str | None = None
        units: list[str] = []
        qualitative: str | None = None
        reason: str | None = None
        if isinstance(quantity, dict):
            value = _number(quantity.get("value"))
            raw_comparator = quantity.get("comparator")
            comparator = raw_comparator if raw_comparator in ("<", "<=", ">", ">=") else None
            for key in ("code", "unit"):
                spelled = quantity.get(key)
                if isinstance(spelled, str) and spelled.strip() and spelled not in units:
                    units.append(spelled)
            if value is None:
                reason = "valueQuantity has no numeric value"
        elif isinstance(element.get("valueString"), str):
            match = _NUMBER.match(element["valueString"])
            if match:
                comparator, value = match.group(1), float(match.group(2))
                reason = "numeric result given as text without a unit"
            else:
                qualitative = element["valueString"][:40]
        elif isinstance(element.get("valueCodeableConcept"), dict):
            qualitative = _label(element["valueCodeableConcept"])
        elif _number(element.get("valueInteger")) is not None:
            value = _number(element.get("valueInteger"))
            reason = "numeric result without a unit"
        else:
            reason = "no value" + (" (data absent)" if "dataAbsentReason" in element else "")
        reported = "no value"
        if value is not None:
            reported = f"{comparator or ''}{value:g} {units[0] if units else ''}".strip()
        elif qualitative is not None:
            reported = qualitative
        normalised_value: float | None = None
        unit: str | None = None
        if value is not None and reason is None:
            normalised_value, unit, reason = self._convert(analyte, value, units)
        elif value is not None and reason is not None and not units:
            converted, bare_unit, refused = self._convert(analyte, value, units)
            if refused is None and converted is not None:
                # Analytes with no canonical unit (titres, assay units) accept a bare number.
                normalised_value, unit, reason = converted, bare_unit, None
        low, high = self._reference_range(analyte, element) if normalised_value is not None else (None, None)
        reported_range = _reported_range(element) if normalised_value is not None else None
        if reason is not None:
            self.issues.append(DataIssue(reference, f"{analyte.value} not usable: {reason}"))
        return LabResult(
            analyte=analyte,
            source=source,
            effective=effective,
            value=normalised_value if reason is None else None,
            unit=unit,
            reported=reported,
            comparator=comparator,
            reference_low=low,
            reference_high=high,
            interpretation=interpretation,
            qualitative=qualitative,
            date_from_issued=from_issued,
            unusable_reason=reason,
            reported_unit=units[0] if units else None,
            reported_range=reported_range,
        )

    def _reference_range(self, analyte: Analyte, element: dict[str, Any]) -> tuple[float | None, float | None]:
        for entry in _list(element.get("referenceRange")):
            if not isinstance(entry, dict):
                continue
            range_type = entry.get("type")
            if range_type is not None:
                kind = [code for _, code, _ in _codings(range_type)]
                if kind and "normal" not in kind:
                    continue
            low, high = self._limit(analyte, entry.get("low")), self._limit(analyte, entry.get("high"))
            if low is not None or high is not None:
                return low, high
        return None, None

    def _limit(self, analyte: Analyte, quantity: Any) -> float | None:
        """One end of a reference range in the analyte's canonical unit, or None."""
        if not isinstance(quantity, dict):
            return None
        number = _number(quantity.get("value"))
        if number is None:
            return None
        units = [u for u in (quantity.get("code"), quantity.get("unit")) if isinstance(u, str) and u.strip()]
        converted, _, reason = self._convert(analyte, number, units)
        return converted if reason is None else None

    def _convert(self, analyte: Analyte, value: float, units: list[str]) -> tuple[float | None, str | None, str | None]:
        """`units.normalise`, with each (analyte, spellings) looked up once per request: a chart
        writes its few units on every result and on both ends of every reference range. The
        factor is remembered as the conversion of 1.0, and `value * factor` is what `normalise`
        computes (exactly `value` where the factor is 1)."""
        key = (analyte, *units)
        known = self._conversions.get(key)
        if known is None:
            unit_of_one = normalise(analyte, 1.0, units)
            known = self._conversions[key] = (unit_of_one.value, unit_of_one.unit, unit_of_one.reason)
        factor, unit, reason = known
        return (value * factor if factor is not None else None), unit, reason

    # ----- Condition -----------------------------------------------------------------------

    def _condition(self, resource: dict[str, Any], reference: str) -> None:
        concept = resource.get("code")
        found = self._classify(concept, "condition", ClinicalConcept)
        label = _label(concept)
        if not found:
            return
        self._check_patient(resource)
        try:
            self._read_condition(resource, reference, concept, found, label)
        except MalformedResourceError:
            if any(finding in ENTRY_CONCEPTS for finding, _ in found):
                self.unreadable_entries.append(reference)
            raise

    def _read_condition(
        self,
        resource: dict[str, Any],
        reference: str,
        concept: Any,
        found: list[tuple[ClinicalConcept, Coding]],
        label: str | None,
    ) -> None:
        found, suspected_by_text = self._asserted(concept, found)
        if not found:
            return
        verification = self._status_code(resource.get("verificationStatus"))
        if verification in CONDITION_SKIP:
            self._skip(reference, f"verification status '{verification}'")
            return
        clinical = self._status_code(resource.get("clinicalStatus"))
        if clinical == "entered-in-error":
            self._skip(reference, "clinical status 'entered-in-error'")
            return
        onset = parse_datetime(resource.get("onsetDateTime")) or _period_point(
            resource.get("onsetPeriod"), prefer_end=False
        )
        recorded = parse_datetime(resource.get("recordedDate"))
        abatement = parse_datetime(resource.get("abatementDateTime")) or _period_point(resource.get("abatementPeriod"))
        sites = _list(resource.get("bodySite"))
        body_sites = tuple(site for site in (_label(s) for s in sites) if site)
        site_codes = tuple(
            code for s in sites for system, code, _ in _codings(s) if code and normalise_system(system) == SNOMED
        )
        suspected = suspected_by_text or verification in ("provisional", "differential")
        text = _dict(concept).get("text")
        self.index[reference] = resource
        for finding, (system, code, display) in found:
            self.conditions.append(
                ConditionFinding(
                    concept=finding,
                    source=self._source("Condition", resource["id"], system, code, display or label),
                    onset=onset,
                    recorded=recorded,
                    abatement=abatement,
                    clinical_status=clinical,
                    verification_status=verification,
                    body_sites=body_sites,
                    matched_by_text=code is None,
                    suspected=suspected,
                    body_site_codes=site_codes,
                    text=text if isinstance(text, str) and text.strip() else None,
                )
            )

    def _classify(self, concept: Any, kind: str, finding_type: type[F]) -> list[tuple[F, Coding]]:
        """Findings of one type a CodeableConcept maps to: by code first, then by the value sets'
        phrases on its text and displays (for concepts without confirmed codes)."""
        found: list[tuple[F, Coding]] = []
        codings = _codings(concept)
        for coding in codings:
            key = (coding[0], coding[1])
            by_code = self._code_findings.get(key)
            if by_code is None:
                by_code = self._code_findings[key] = self.terminology.match_code(coding[0], coding[1])
            for finding in by_code:
                if isinstance(finding, finding_type) and all(finding is not f for f, _ in found):
                    found.append((finding, coding))
        label: str | None = None
        texts = [display for _, _, display in codings if display]
        text = _dict(concept).get("text")
        if isinstance(text, str):
            texts.append(text)
        for text in texts:
            by_text = self._text_findings.get((kind, text))
            if by_text is None:
                by_text = self._text_findings[(kind, text)] = self.terminology.match_text(kind, text)
            for finding in by_text:
                if isinstance(finding, finding_type) and all(finding is not f for f, _ in found):
                    label = label or _label(concept)
                    found.append((finding, (None, None, label)))
        return found

    def _asserted(
        self, concept: Any, found: list[tuple[ClinicalConcept, Coding]]
    ) -> tuple[list[tuple[ClinicalConcept, Coding]], bool]:
        """The findings a Condition's words actually document (clinical-knowledge.md 4), and
        whether they state a suspicion. The words are the entry's `text` (what the problem list
        shows), else its displays. Negated, family and risk statements document nothing, and a
        past or resolved calcinosis, ischemic lesion or AKI is not current; the codes of those
        concepts are held to the same words, so "Calcinosis cutis - resolved" on an active L94.2
        entry stays silent. Other codes stand whatever the words (a coded gout is gout)."""
        if all(coding[1] is not None and finding not in CURRENT_ONLY for finding, coding in found):
            return found, False  # codes that stand whatever the words: nothing to read
        text = _dict(concept).get("text")
        texts = [text] if isinstance(text, str) and text.strip() else [d for _, _, d in _codings(concept) if d]
        verdicts: dict[Finding, set[Assertion]] = {}
        for piece in texts:
            key = ("condition", piece)
            spans = self._text_spans.get(key)
            if spans is None:
                spans = self._text_spans[key] = [
                    (finding, assertion_of(piece, start, end))
                    for finding, start, end in self.terminology.match_text_spans("condition", piece)
                ]
            for finding, verdict in spans:
                verdicts.setdefault(finding, set()).add(verdict)
        kept: list[tuple[ClinicalConcept, Coding]] = []
        suspected = False
        for finding, coding in found:
            said = verdicts.get(finding)
            if said is None or Assertion.AFFIRMED in said or (coding[1] is not None and finding not in CURRENT_ONLY):
                kept.append((finding, coding))
            elif Assertion.SUSPECTED in said:
                kept.append((finding, coding))
                suspected = suspected or finding in ENTRY_CONCEPTS
            elif said == {Assertion.HISTORICAL} and finding not in CURRENT_ONLY:
                kept.append((finding, coding))
        return kept, suspected

    def _status_code(self, concept: Any) -> str | None:
        for _, code, _ in _codings(concept):
            if code:
                return code
        return None

    # ----- Medications ---------------------------------------------------------------------

    def _medication_concept(self, resource: dict[str, Any]) -> Any:
        if "medicationCodeableConcept" in resource:
            return resource["medicationCodeableConcept"]
        reference = _dict(resource.get("medicationReference")).get("reference")
        if not isinstance(reference, str):
            raise MalformedResourceError("no medication given")
        if reference.startswith("#"):
            for contained in _list(resource.get("contained")):
                if (
                    isinstance(contained, dict)
                    and contained.get("id") == reference[1:]
                    and contained.get("resourceType") == "Medication"
                ):
                    return contained.get("code")
            raise MalformedResourceError("contained Medication not found")
        medication = self._medication_index().get(
            reference if reference.startswith("Medication/") else f"Medication/{reference.rsplit('/', 1)[-1]}"
        )
        if medication is None:
            # The referenced Medication was not supplied: the display on the reference may name it.
            display = _dict(resource.get("medicationReference")).get("display")
            return {"text": display} if isinstance(display, str) else None
        return medication.get("code")

    def _medication(self, resource: dict[str, Any], reference: str) -> None:
        kind = resource["resourceType"]
        self.has_medication_data = True
        concept = self._medication_concept(resource)
        found = self._classify(concept, "medication", DrugClass)
        label = _label(concept)
        if not found:
            return
        self._check_patient(resource)
        status = self._status(resource)
        if status in MEDICATION_SKIP:
            self._skip(reference, f"status '{status}'")
            return
        start, end, route, dose, site, site_code = self._medication_timing(resource, kind, status)
        self.index[reference] = resource
        for drug_class, (system, code, display) in found:
            self.medications.append(
                MedicationExposure(
                    drug_class=drug_class,
                    source=self._source(kind, resource["id"], system, code, display or label),
                    start=start,
                    end=end,
                    status=status,
                    route=route,
                    daily_dose_mcg=dose,
                    name=label,
                    site=site,
                    site_code=site_code,
                )
            )

    def _medication_timing(
        self, resource: dict[str, Any], kind: str, status: str
    ) -> tuple[datetime | None, datetime | None, str | None, float | None, str | None, str | None]:
        dosages: list[Any]
        if kind == "MedicationAdministration":
            dosages = [resource.get("dosage")] if isinstance(resource.get("dosage"), dict) else []
            start = parse_datetime(resource.get("effectiveDateTime")) or _period_point(
                resource.get("effectivePeriod"), prefer_end=False
            )
            end = _period_point(resource.get("effectivePeriod")) or start
        elif kind == "MedicationStatement":
            dosages = _list(resource.get("dosage"))
            start = (
                parse_datetime(resource.get("effectiveDateTime"))
                or _period_point(resource.get("effectivePeriod"), prefer_end=False)
                or parse_datetime(resource.get("dateAsserted"))
            )
            end = parse_datetime(_dict(resource.get("effectivePeriod")).get("end"))
        else:
            dosages = _list(resource.get("dosageInstruction"))
            start = parse_datetime(resource.get("authoredOn"))
            end = parse_datetime(_dict(_dict(resource.get("dispenseRequest")).get("validityPeriod")).get("end"))
            for dosage in dosages:
                bounds = _dict(_dict(_dict(dosage).get("timing")).get("repeat")).get("boundsPeriod")
                start = start or _period_point(bounds, prefer_end=False)
                end = end or parse_datetime(_dict(bounds).get("end"))
        if end is None and status in ("completed", "stopped") and kind != "MedicationStatement":
            end = start
        route: str | None = None
        dose: float | None = None
        site: str | None = None
        site_code: str | None = None
        for dosage in dosages:
            dosage = _dict(dosage)
            route = route or _label(dosage.get("route"))
            dose = dose if dose is not None else self._daily_dose(dosage)
            if site is None and site_code is None and "site" in dosage:
                site = _label(dosage.get("site"))
                site_code = next(
                    (c for sys, c, _ in _codings(dosage.get("site")) if c and normalise_system(sys) == SNOMED), None
                )
        return start, end, route, dose, site, site_code

    def _daily_dose(self, dosage: dict[str, Any]) -> float | None:
        """Micrograms a day from a dose quantity and timing, or None when not derivable."""
        quantity: dict[str, Any] = {}
        for dose_and_rate in _list(dosage.get("doseAndRate")):
            quantity = _dict(_dict(dose_and_rate).get("doseQuantity"))
            if quantity:
                break
        if not quantity:
            quantity = _dict(dosage.get("dose"))
        amount = _number(quantity.get("value"))
        unit = quantity.get("code") or quantity.get("unit")
        if amount is None or not isinstance(unit, str) or unit.strip().lower() not in _MASS_PER_DAY:
            return None
        repeat = _dict(_dict(dosage.get("timing")).get("repeat"))
        frequency = _number(repeat.get("frequency")) or 1.0
        period = _number(repeat.get("period"))
        period_unit = repeat.get("periodUnit")
        if period is None or period <= 0 or period_unit not in _PERIOD_DAYS:
            return None
        return amount * _MASS_PER_DAY[unit.strip().lower()] * frequency / (period * _PERIOD_DAYS[period_unit])

    # ----- Procedure -----------------------------------------------------------------------

    def _procedure(self, resource: dict[str, Any], reference: str) -> None:
        self.has_procedure_data = True
        concept = resource.get("code")
        found = self._classify(concept, "procedure", ProcedureKind)
        label = _label(concept)
        if not found:
            return
        self._check_patient(resource)
        status = self._status(resource)
        if status in PROCEDURE_SKIP:
            self._skip(reference, f"status '{status}'")
            return
        start = parse_datetime(resource.get("performedDateTime")) or _period_point(
            resource.get("performedPeriod"), prefer_end=False
        )
        end = _period_point(resource.get("performedPeriod")) or start
        sites = _list(resource.get("bodySite"))
        body_sites: tuple[str, ...] = ()
        site_codes: tuple[str, ...] = ()
        if sites:
            body_sites = tuple(site for site in (_label(s) for s in sites) if site)
            site_codes = tuple(c for s in sites for sys, c, _ in _codings(s) if c and normalise_system(sys) == SNOMED)
        self.index[reference] = resource
        for kind, (system, code, display) in found:
            self.procedures.append(
                ProcedureFinding(
                    kind,
                    self._source("Procedure", resource["id"], system, code, display or label),
                    start,
                    end,
                    status,
                    body_sites,
                    site_codes,
                )
            )


_HANDLER_FUNCTIONS: dict[str, Callable[[FindingsBuilder, dict[str, Any], str], None]] = {
    "Observation": FindingsBuilder._observation,
    "Condition": FindingsBuilder._condition,
    "Procedure": FindingsBuilder._procedure,
    "Patient": FindingsBuilder._patient,
    "MedicationRequest": FindingsBuilder._medication,
    "MedicationStatement": FindingsBuilder._medication,
    "MedicationAdministration": FindingsBuilder._medication,
}
"""The handler of each resource type the mapping reads, as plain functions: bound methods kept on
the builder would make it a reference cycle, and a request's whole chart would then wait for the
cyclic collector instead of being freed when the request ends."""


def bundle_resources(bundle: Any) -> Iterator[Any]:
    """The resources of a Bundle's entries (any Bundle type); nested Bundles are flattened and
    OperationOutcome entries (search warnings) are dropped."""
    for entry in _list(_dict(bundle).get("entry")):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            kind = resource.get("resourceType")
            if kind == "Bundle":
                yield from bundle_resources(resource)
            elif kind != "OperationOutcome":
                yield resource
        elif resource is not None:
            yield resource
        else:
            yield entry


def map_resources(
    resources: Iterable[Any],
    terminology: Terminology,
    as_of: datetime,
    patient_id: str | None = None,
    lab_retention_days: int = DEFAULT_LAB_RETENTION_DAYS,
) -> MappingResult:
    """Map resources of one patient to findings. Lab results older than `lab_retention_days`
    are not read in detail, except the newest of each analyte: no rule looks back that far."""
    builder = FindingsBuilder(terminology, as_of, patient_id, lab_retention_days)
    builder.add_all(resources)
    return builder.build()
