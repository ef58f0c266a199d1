"""The public function the service calls per request: FHIR resources in, assessment out.

Validation with `fhir.resources` costs a fraction of a millisecond per resource, too much to spend
on every Observation of a decade of dialysis labs. So resources are mapped from plain JSON, the
assessment is computed, and then exactly the resources it cites are validated against the FHIR R4
models. A cited resource that fails is dropped (and counted) and the assessment recomputed, until
everything cited is valid; each round removes at least one resource, so this terminates, and in
the normal case it is a single round.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from calcinosis.assessment import Assessment
from calcinosis.engine import ENTRY_CONCEPTS, assess, entry_evidence
from calcinosis.findings import DataIssue, PatientFindings
from calcinosis.knowledge_base import KnowledgeBase, default_knowledge
from fhir_mapping.mapping import map_resources
from fhir_mapping.terminology import Terminology, load_terminology


@dataclass(frozen=True, slots=True)
class AssessmentResult:
    """The assessment (None in the silent case) and the findings it was computed from."""

    assessment: Assessment | None
    findings: PatientFindings
    unreadable_documentation: tuple[str, ...] = ()
    """Resources naming calcinosis or calciphylaxis that could not be read (malformed, no id, or
    failing FHIR validation). When the assessment is None because of them, the response must say
    that data could not be read rather than fall silent."""


@lru_cache(maxsize=1)
def default_terminology() -> Terminology:
    """The packaged value sets without local additions (tests and the command line)."""
    return load_terminology()


#: The elements the mapping reads, per resource type, plus what R4 requires of each type. Only
#: these are validated: a defect elsewhere in a resource (a malformed `meta` or `encounter`) does
#: not change what the service concluded from it, and validating whole resources would cost more
#: than the rest of the request. They are also all that is decoded of a resource in a request or
#: a FHIR answer (`fhir_mapping.wire`), so an element read here must be listed here.
USED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": (
        "status", "code", "subject", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued",
        "valueQuantity", "valueString", "valueCodeableConcept", "valueInteger", "dataAbsentReason",
        "referenceRange", "interpretation", "component",
    ),
    "Condition": (
        "code", "subject", "clinicalStatus", "verificationStatus", "onsetDateTime", "onsetPeriod",
        "recordedDate", "abatementDateTime", "abatementPeriod", "bodySite",
    ),
    "MedicationRequest": (
        "status", "intent", "subject", "medicationCodeableConcept", "medicationReference", "contained",
        "authoredOn", "dosageInstruction", "dispenseRequest",
    ),
    "MedicationStatement": (
        "status", "subject", "medicationCodeableConcept", "medicationReference", "contained",
        "effectiveDateTime", "effectivePeriod", "dateAsserted", "dosage",
    ),
    "MedicationAdministration": (
        "status", "subject", "medicationCodeableConcept", "medicationReference", "contained",
        "effectiveDateTime", "effectivePeriod", "dosage",
    ),
    "Procedure": ("status", "code", "subject", "performedDateTime", "performedPeriod", "bodySite"),
}  # fmt: skip


class ValidationCache:
    """Validation outcomes keyed by a digest of exactly the content validated.

    The same content always validates the same way, so this is exact, and an EHR resends the same
    resources every time a chart is opened. Only 16-byte digests and the field-name diagnostics
    are kept (no patient content), in a bounded LRU shared by the requests of a process.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[bytes, str | None] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[bool, str | None]:
        with self._lock:
            if key not in self._entries:
                return False, None
            self._entries.move_to_end(key)
            return True, self._entries[key]

    def put(self, key: bytes, problem: str | None) -> None:
        with self._lock:
            self._entries[key] = problem
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)


VALIDATION_CACHE = ValidationCache()


def validation_problem(resource: dict[str, Any], cache: ValidationCache | None = VALIDATION_CACHE) -> str | None:
    """Why the elements of a resource the service used fail FHIR R4 validation, naming fields
    only (never their values)."""
    from fhir.resources.R4B import get_fhir_model_class

    resource_type = str(resource.get("resourceType"))
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return "unknown resource type"
    used = USED_ELEMENTS.get(resource_type)
    if used is not None:
        # The id is not validated: it only names the resource in the card's evidence, and an id that
        # breaks FHIR's rule (an underscore, say) must not discard the diagnosis it carries.
        resource = {key: resource[key] for key in ("resourceType", *used) if key in resource}
    key = b""
    if cache is not None:
        try:
            key = hashlib.blake2b(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        except (TypeError, orjson.JSONEncodeError):
            key = b""
        if key:
            hit, problem = cache.get(key)
            if hit:
                return problem
    problem = _validate(model, resource)
    if cache is not None and key:
        cache.put(key, problem)
    return problem


def _validate(model: Any, resource: dict[str, Any]) -> str | None:
    try:
        model.model_validate(resource)
    except ValidationError as error:
        fields = sorted({".".join(str(part) for part in item["loc"]) for item in error.errors()})
        return "fails FHIR R4 validation at " + ", ".join(fields[:5])
    except (TypeError, ValueError):
        return "fails FHIR R4 validation"
    return None


def warm_up_validation() -> None:
    """Build the FHIR model validators once at start-up: the first validation of each resource
    type, and of each element type inside it (fhir.resources imports and builds those models on
    first use), otherwise costs a first request a hundred milliseconds or more."""
    for sample in warm_up_samples():
        validation_problem(sample, cache=None)


def warm_up_samples() -> list[dict[str, Any]]:
    """Valid resources using the elements the service validates (`USED_ELEMENTS`), each in the
    shapes EHRs send."""
    concept = {"coding": [{"system": "http://loinc.org", "code": "w", "display": "w"}], "text": "w"}
    subject = {"reference": "Patient/w"}
    quantity = {"value": 1.0, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}
    period = {"start": "2026-01-01", "end": "2026-01-02"}
    dosage = {
        "text": "w",
        "route": concept,
        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": period}},
        "doseAndRate": [{"doseQuantity": quantity}],
    }
    medication = {"medicationCodeableConcept": concept, "subject": subject}
    samples: list[dict[str, Any]] = [
        {
            "resourceType": "Observation",
            "id": "w",
            "status": "final",
            "code": concept,
            "subject": subject,
            "effectiveDateTime": "2026-01-01T00:00:00Z",
            "issued": "2026-01-01T00:00:00Z",
            "valueQuantity": quantity,
            "interpretation": [concept],
            "referenceRange": [{"low": quantity, "high": quantity, "type": concept}],
            "component": [{"code": concept, "valueQuantity": quantity, "dataAbsentReason": concept}],
        },
        {"resourceType": "Observation", "id": "w", "status": "final", "code": concept, "valueString": "w"},
        {"resourceType": "Observation", "id": "w", "status": "final", "code": concept, "valueCodeableConcept": concept},
        {"resourceType": "Observation", "id": "w", "status": "final", "code": concept, "effectivePeriod": period},
        {
            "resourceType": "Observation",
            "id": "w",
            "status": "final",
            "code": concept,
            "effectiveInstant": "2026-01-01T00:00:00Z",
            "valueInteger": 1,
        },
        {"resourceType": "Observation", "id": "w", "status": "final", "code": concept, "dataAbsentReason": concept},
        {
            "resourceType": "Condition",
            "id": "w",
            "subject": subject,
            "code": concept,
            "clinicalStatus": concept,
            "verificationStatus": concept,
            "onsetDateTime": "2026-01-01",
            "abatementDateTime": "2026-01-02",
            "recordedDate": "2026-01-01",
            "bodySite": [concept],
        },
        {"resourceType": "Condition", "id": "w", "subject": subject, "onsetPeriod": period, "abatementPeriod": period},
        {
            "resourceType": "MedicationRequest",
            "id": "w",
            "status": "active",
            "intent": "order",
            **medication,
            "authoredOn": "2026-01-01",
            "dosageInstruction": [dosage],
            "dispenseRequest": {"validityPeriod": period},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "w",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationReference": {"reference": "#m"},
            "contained": [{"resourceType": "Medication", "id": "m", "code": concept}],
        },
        {
            "resourceType": "MedicationStatement",
            "id": "w",
            "status": "active",
            **medication,
            "effectiveDateTime": "2026-01-01",
            "dateAsserted": "2026-01-01",
            "dosage": [dosage],
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "w",
            "status": "completed",
            **medication,
            "effectivePeriod": period,
            "dosage": {"route": concept, "dose": quantity},
        },
        {
            "resourceType": "Procedure",
            "id": "w",
            "status": "completed",
            "subject": subject,
            "code": concept,
            "performedPeriod": period,
            "bodySite": [concept],
        },
        {
            "resourceType": "Procedure",
            "id": "w",
            "status": "completed",
            "subject": subject,
            "performedDateTime": "2026",
        },
    ]
    return samples


def _without(findings: PatientFindings, invalid: dict[str, str]) -> PatientFindings:
    def keep(reference: str) -> bool:
        return reference not in invalid

    return replace(
        findings,
        labs=tuple(f for f in findings.labs if keep(f.source.reference)),
        conditions=tuple(f for f in findings.conditions if keep(f.source.reference)),
        medications=tuple(f for f in findings.medications if keep(f.source.reference)),
        procedures=tuple(f for f in findings.procedures if keep(f.source.reference)),
        issues=findings.issues + tuple(DataIssue(ref, f"skipped: {why}") for ref, why in invalid.items()),
        resources_skipped=findings.resources_skipped + len(invalid),
    )


def assess_resources(
    resources: Iterable[Any],
    as_of: datetime,
    patient_id: str | None = None,
    terminology: Terminology | None = None,
    knowledge: KnowledgeBase | None = None,
    validate: bool = True,
) -> AssessmentResult:
    """Assess one patient's resources as of a moment (timezone-aware). The chart's active test
    orders not yet resulted (ServiceRequests) are "on file" for the workup (15.5), read exactly as
    the order-sign service reads them."""
    from fhir_mapping.orders import pending_tests  # imports this module: resolved at call time

    kb = knowledge or default_knowledge()
    terminology = terminology or default_terminology()
    resources = resources if isinstance(resources, list) else list(resources)
    mapped = map_resources(resources, terminology, as_of, patient_id, int(kb.value("lab-retention-days")))
    # Only a chart that documents calcinosis is assessed: the silent majority skips the order scan.
    orders = pending_tests(resources, terminology, patient_id) if entry_evidence(mapped.findings) else ()
    findings = mapped.findings
    checked: set[str] = set()
    invalid: dict[str, str] = {}
    entry_references = {c.source.reference for c in findings.conditions if c.concept in ENTRY_CONCEPTS}
    while True:
        assessment = assess(findings, kb, orders)
        if assessment is None or not validate:
            unreadable = findings.unreadable_entries + tuple(sorted(set(invalid) & entry_references))
            return AssessmentResult(assessment, findings, unreadable)
        newly: dict[str, str] = {}
        for reference in assessment.evidence_references - checked:
            checked.add(reference)
            resource = mapped.index.get(reference)
            problem = validation_problem(resource) if resource is not None else None
            if problem is not None:
                newly[reference] = problem
        if not newly:
            unreadable = findings.unreadable_entries + tuple(sorted(set(invalid) & entry_references))
            return AssessmentResult(assessment, findings, unreadable)
        invalid.update(newly)
        findings = _without(findings, newly)


def documents_calcinosis(resources: Iterable[Any], terminology: Terminology | None = None) -> bool:
    """Whether the Conditions among `resources` document calcinosis cutis or calciphylaxis.

    Cheap (Conditions only): the service uses it to stop fetching for the many charts it will be
    silent on.
    """
    conditions = [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Condition"]
    mapped = map_resources(conditions, terminology or default_terminology(), datetime.now(UTC))
    # An entry naming calcinosis that cannot be read still needs an answer ("could not be read").
    return bool(entry_evidence(mapped.findings)) or bool(mapped.findings.unreadable_entries)
