"""The one FHIR chart builder of the test tooling: scenario tests (`tests.charts`), the sandbox
patients (`deploy/fhir-sandbox/patients/generate.py`), the sandbox's draft orders
(`deploy/fhir-sandbox/draft-orders/generate.py`) and the benchmark workloads (`bench/workloads.py`)
all write their FHIR R4 resources, Bundles and prefetch through it. A `draftOrders` Bundle of
order-sign is a `FhirChart` holding only unsigned orders (`add_draft_medication`,
`add_draft_test`), written with `bundle()`.

It lives outside the runtime packages (an installed wheel or the container image carries only what
serves). Each user keeps its own way of counting time ("5 days ago", "N days before the anchor")
and of naming ids, and passes the builder finished dateTimes and ids; the shape of every resource,
and the table of prefetch keys, are written once here. The prefetch keys are read from the
service's own templates (`hooks.prefetch.prefetch_keys`), so a key added to the service reaches
every chart's prefetch without a second table to keep in step.
"""

from __future__ import annotations

import uuid
from collections import Counter
from functools import cache
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CATEGORY_DISPLAY = {"laboratory": "Laboratory", "vital-signs": "Vital Signs"}
FLAG_DISPLAY = {"H": "High", "L": "Low", "N": "Normal"}


@cache
def prefetch_resource_types() -> dict[str, str]:
    """Prefetch key -> resource type, from the service's own templates ("patient" is the Patient)."""
    from fhir_mapping.pipeline import default_terminology
    from hooks.prefetch import prefetch_keys

    return {key.key: key.resource_type for key in prefetch_keys(default_terminology())}


def search_keys() -> dict[str, str]:
    """The prefetch keys that are searches (all but the Patient read)."""
    return {key: kind for key, kind in prefetch_resource_types().items() if kind != "Patient"}


@cache
def order_sign_search_keys() -> dict[str, str]:
    """The order-sign service's search keys: patient-view's (the active test orders among them),
    and its own searches, if any. Its encounter read depends on the call's `encounterId`, so a chart's prefetch leaves it out."""
    from hooks.order_sign import ORDER_SIGN_KEYS

    return {**search_keys(), **{key.key: key.resource_type for key in ORDER_SIGN_KEYS if not key.is_read}}


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    result = {"system": system, "code": code}
    if display is not None:
        result["display"] = display
    return result


def codeable(text: str | None, *codings: dict[str, str]) -> dict[str, Any]:
    """A CodeableConcept: the codings, then the text as the EHR shows it."""
    result: dict[str, Any] = {}
    if codings:
        result["coding"] = list(codings)
    if text is not None:
        result["text"] = text
    return result


def status_concept(system_suffix: str, code: str) -> dict[str, Any]:
    """A status CodeableConcept of an HL7 terminology code system (condition-clinical, ...)."""
    return {"coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system_suffix}", "code": code}]}


def quantity(value: float, unit: str, *, ucum: bool = True, display: str | None = None) -> dict[str, Any]:
    """A Quantity; `display` is the unit as the lab prints it (the UCUM code stays in `code`)."""
    result: dict[str, Any] = {"value": value, "unit": display or unit}
    if ucum:
        result.update({"system": UCUM, "code": unit})
    return result


def dosage(
    *, route: str | None = None, text: str | None = None, dose_ug: float | None = None, per_day: int = 1
) -> dict[str, Any]:
    """One dosage instruction: the route and the instruction as the EHR shows them, and a daily
    dose in micrograms (`per_day` times a day)."""
    result: dict[str, Any] = {}
    if route:
        result["route"] = {"text": route}
    if text:
        result["text"] = text
    if dose_ug is not None:
        result["doseAndRate"] = [{"doseQuantity": quantity(dose_ug, "ug")}]
        result["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    return result


def searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


class FhirChart:
    """One patient's resources under construction, and the Bundles and prefetch made of them."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self.resources: list[dict[str, Any]] = []

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id}"}

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == resource_type]

    def counts(self) -> dict[str, int]:
        return dict(Counter(r["resourceType"] for r in self.resources))

    # ----- resources ----------------------------------------------------------------------------

    def add_patient(self, gender: str, birth_date: str, **extra: Any) -> dict[str, Any]:
        return self.add(
            {"resourceType": "Patient", "id": self.patient_id, **extra, "gender": gender, "birthDate": birth_date}
        )

    def add_condition(
        self,
        resource_id: str,
        code: dict[str, Any],
        *,
        clinical: str | None = "active",
        verification: str | None = "confirmed",
        onset: str | None = None,
        recorded: str | None = None,
        abated: str | None = None,
        body_sites: list[str] | None = None,
        category: str | None = None,
        note: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A Condition (problem-list entry when `category` is given). `extra`: fields this builder
        does not model, as an EHR sends them (meta, encounter...)."""
        resource: dict[str, Any] = {"resourceType": "Condition", "id": resource_id}
        if clinical is not None:
            resource["clinicalStatus"] = status_concept("condition-clinical", clinical)
        if verification is not None:
            resource["verificationStatus"] = status_concept("condition-ver-status", verification)
        if category is not None:
            resource["category"] = [status_concept("condition-category", category)]
        resource.update({"code": code, "subject": self.subject})
        if onset is not None:
            resource["onsetDateTime"] = onset
        if recorded is not None:
            resource["recordedDate"] = recorded
        if body_sites:
            resource["bodySite"] = [{"text": site} for site in body_sites]
        if abated is not None:
            resource["abatementDateTime"] = abated
        if note:
            resource["note"] = [{"text": note}]
        return self.add({**resource, **(extra or {})})

    def add_observation(
        self,
        resource_id: str,
        code: dict[str, Any],
        *,
        effective: str | None = None,
        effective_period: tuple[str, str] | None = None,
        issued: str | None = None,
        value: dict[str, Any] | None = None,
        value_concept: dict[str, Any] | None = None,
        low: dict[str, Any] | None = None,
        high: dict[str, Any] | None = None,
        interpretation: str | None = None,
        interpretation_display: bool = False,
        category: str | None = "laboratory",
        category_display: bool = False,
        status: str = "final",
        absent: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An Observation: `value` a Quantity (or `value_concept`), an optional reference range
        and interpretation flag (H, L, N); `extra` as for `add_condition`."""
        resource: dict[str, Any] = {"resourceType": "Observation", "id": resource_id, "status": status}
        if category is not None:
            cat = coding(OBSERVATION_CATEGORY, category, CATEGORY_DISPLAY[category] if category_display else None)
            resource["category"] = [{"coding": [cat]}]
        resource.update({"code": code, "subject": self.subject})
        if effective is not None:
            resource["effectiveDateTime"] = effective
        if effective_period is not None:
            resource["effectivePeriod"] = {"start": effective_period[0], "end": effective_period[1]}
        if issued is not None:
            resource["issued"] = issued
        if value is not None:
            resource["valueQuantity"] = value
        if value_concept is not None:
            resource["valueCodeableConcept"] = value_concept
        if absent:
            resource["dataAbsentReason"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}
                ]
            }
        if low is not None or high is not None:
            reference: dict[str, Any] = {}
            if low is not None:
                reference["low"] = low
            if high is not None:
                reference["high"] = high
            resource["referenceRange"] = [reference]
        if interpretation:
            flag = coding(
                INTERPRETATION, interpretation, FLAG_DISPLAY.get(interpretation) if interpretation_display else None
            )
            resource["interpretation"] = [{"coding": [flag]}]
        return self.add({**resource, **(extra or {})})

    def add_medication(
        self,
        kind: str,
        resource_id: str,
        medication: dict[str, Any],
        *,
        status: str = "active",
        when: str | None = None,
        period: tuple[str, str | None] | None = None,
        dosage: dict[str, Any] | None = None,
        validity_end: str | None = None,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A MedicationRequest (`when` = authoredOn, `reason` as text), MedicationStatement
        (`period`) or MedicationAdministration (`when` or `period`) with one dosage; `extra` as
        for `add_condition`."""
        resource: dict[str, Any] = {"resourceType": kind, "id": resource_id, "status": status}
        if kind == "MedicationRequest":
            resource["intent"] = "order"
        resource.update({"medicationCodeableConcept": medication, "subject": self.subject})
        if kind == "MedicationRequest":
            if when is not None:
                resource["authoredOn"] = when
            if dosage:
                resource["dosageInstruction"] = [dosage]
            if validity_end is not None:
                resource["dispenseRequest"] = {"validityPeriod": {"start": when, "end": validity_end}}
            if reason:
                resource["reasonCode"] = [{"text": reason}]
        elif kind == "MedicationStatement":
            if period is not None:
                resource["effectivePeriod"] = {"start": period[0], **({"end": period[1]} if period[1] else {})}
            elif when is not None:
                resource["effectiveDateTime"] = when
            if dosage:
                resource["dosage"] = [dosage]
        else:
            if period is not None and period[1] is not None:
                resource["effectivePeriod"] = {"start": period[0], "end": period[1]}
            elif when is not None:
                resource["effectiveDateTime"] = when
            if dosage:
                resource["dosage"] = dosage
        return self.add({**resource, **(extra or {})})

    def add_procedure(
        self,
        resource_id: str,
        code: dict[str, Any],
        performed: str,
        *,
        status: str = "completed",
        body_site: str | None = None,
        performed_end: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A Procedure performed at a moment, or over a period when `performed_end` is given;
        `extra` as for `add_condition`."""
        resource: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": resource_id,
            "status": status,
            "code": code,
            "subject": self.subject,
        }
        if performed_end is None:
            resource["performedDateTime"] = performed
        else:
            resource["performedPeriod"] = {"start": performed, "end": performed_end}
        if body_site:
            resource["bodySite"] = [{"text": body_site}]
        return self.add({**resource, **(extra or {})})

    def add_encounter(
        self,
        resource_id: str,
        class_code: str,
        kind: dict[str, Any],
        start: str,
        end: str,
        *,
        status: str = "finished",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An Encounter: its class (HL7 v3 ActCode: AMB, IMP, EMER...), type and period; `extra`
        as for `add_condition`."""
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": resource_id,
            "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code},
            "type": [kind],
            "subject": self.subject,
            "period": {"start": start, "end": end},
        }
        return self.add({**resource, **(extra or {})})

    def add_service_request(
        self,
        resource_id: str,
        code: dict[str, Any],
        *,
        status: str = "active",
        intent: str = "order",
        authored: str | None = None,
    ) -> dict[str, Any]:
        """A ServiceRequest: a lab test or procedure ordered (`status` active until resulted; a
        draft order of order-sign is `draft`)."""
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": resource_id,
            "status": status,
            "intent": intent,
            "code": code,
            "subject": self.subject,
        }
        if authored is not None:
            resource["authoredOn"] = authored
        return self.add(resource)

    # ----- draft orders (order-sign's draftOrders) --------------------------------------------------

    def add_draft_medication(
        self,
        resource_id: str,
        text: str,
        *,
        rxnorm: str | None = None,
        route: str | None = None,
        dosage_text: str | None = None,
        dose_ug: float | None = None,
        reason: str | None = None,
        status: str = "draft",
    ) -> dict[str, Any]:
        """An unsigned MedicationRequest: the product as the EHR names it (with its RxNorm code
        when given), and the dosage and reason the prescriber wrote."""
        instruction = dosage(route=route, text=dosage_text, dose_ug=dose_ug)
        return self.add_medication(
            "MedicationRequest",
            resource_id,
            codeable(text, *((coding(RXNORM, rxnorm, text),) if rxnorm else ())),
            status=status,
            dosage=instruction or None,
            reason=reason,
        )

    def add_draft_test(
        self, resource_id: str, text: str, *, loinc: str | None = None, status: str = "draft"
    ) -> dict[str, Any]:
        """An unsigned ServiceRequest for a lab test (LOINC-coded when given) or a procedure."""
        concept = codeable(text, *((coding(LOINC, loinc, text),) if loinc else ()))
        return self.add_service_request(resource_id, concept, status=status)

    # ----- Bundles and prefetch -------------------------------------------------------------------

    def bundle(self, bundle_type: str = "collection") -> dict[str, Any]:
        """The chart as a Bundle of `bundle_type`."""
        return {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": r} for r in self.resources]}

    def transaction(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """A transaction Bundle of `PUT Type/id` entries (keeps the ids; loading is idempotent)."""
        bundle: dict[str, Any] = {"resourceType": "Bundle"}
        if meta is not None:
            bundle["meta"] = meta
        bundle["type"] = "transaction"
        bundle["entry"] = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in self.resources
        ]
        return bundle

    def prefetch(
        self, ehr_base: str | None = None, name: str | None = None, order_sign: bool = False
    ) -> dict[str, Any]:
        """EHR-style prefetch: the Patient, and one searchset Bundle per search key of the
        service's templates (the order-sign service's with `order_sign`). With `ehr_base`, each
        Bundle is written as an EHR's search answer (id, total, self link, fullUrl and search mode
        per entry)."""
        prefetch: dict[str, Any] = {"patient": self.of_type("Patient")[0]}
        keys = order_sign_search_keys() if order_sign else search_keys()
        for key, resource_type in keys.items():
            matches = self.of_type(resource_type)
            if key == "serviceRequests":  # the template asks for active orders only
                matches = [r for r in matches if r.get("status") == "active"]
            if ehr_base is None:
                prefetch[key] = searchset(matches)
                continue
            prefetch[key] = {
                "resourceType": "Bundle",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name or self.patient_id}/{key}")),
                "meta": {"lastUpdated": "2026-01-01T00:00:00+00:00"},
                "type": "searchset",
                "total": len(matches),
                "link": [{"relation": "self", "url": f"{ehr_base}/{resource_type}?patient={self.patient_id}"}],
                "entry": [
                    {"fullUrl": f"{ehr_base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                    for r in matches
                ],
            }
        return prefetch
