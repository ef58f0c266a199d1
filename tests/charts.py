"""Builders for FHIR R4 test charts: a patient's resources written the way EHRs send them.

Scenario tests describe a chart in a few lines ("calcinosis cutis, SSc, calcium 9.4 mg/dL ten days
ago") and get a FHIR Bundle; the service code then sees only FHIR JSON, never these helpers.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from calcinosis.assessment import Assessment
from fhir_mapping import assess_resources, bundle_resources
from fhir_mapping.pipeline import AssessmentResult

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"

_ids = itertools.count(1)


def when(days_ago: float) -> str:
    """An ISO dateTime `days_ago` before AS_OF."""
    return (AS_OF - timedelta(days=days_ago)).isoformat()


class Chart:
    """A patient's record under construction."""

    def __init__(self, patient_id: str = "pat-1", gender: str = "female", birth_date: str = "1962-04-12") -> None:
        self.patient_id = patient_id
        self.resources: list[dict[str, Any]] = [
            {"resourceType": "Patient", "id": patient_id, "gender": gender, "birthDate": birth_date}
        ]

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(_ids)}"

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id}"}

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def lab(
        self,
        code: str,
        value: float | None,
        unit: str | None,
        days_ago: float = 5,
        *,
        low: float | None = None,
        high: float | None = None,
        interpretation: str | None = None,
        status: str = "final",
        comparator: str | None = None,
        display: str | None = None,
        ucum_code: bool = True,
        date_field: str = "effectiveDateTime",
    ) -> dict[str, Any]:
        """An Observation with a LOINC code and a valueQuantity."""
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self._id("obs"),
            "status": status,
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display or code}]},
            "subject": self.subject,
        }
        if date_field == "effectiveDateTime":
            resource["effectiveDateTime"] = when(days_ago)
        elif date_field == "effectivePeriod":
            resource["effectivePeriod"] = {"start": when(days_ago + 1), "end": when(days_ago)}
        elif date_field == "issued":
            resource["issued"] = when(days_ago)
        if value is not None:
            quantity: dict[str, Any] = {"value": value}
            if unit is not None:
                quantity["unit"] = unit
                if ucum_code:
                    quantity["system"] = UCUM
                    quantity["code"] = unit
            if comparator:
                quantity["comparator"] = comparator
            resource["valueQuantity"] = quantity
        else:
            resource["dataAbsentReason"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}
                ]
            }
        if low is not None or high is not None:
            reference: dict[str, Any] = {}
            if low is not None:
                reference["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
            if high is not None:
                reference["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
            resource["referenceRange"] = [reference]
        if interpretation:
            resource["interpretation"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": interpretation,
                        }
                    ]
                }
            ]
        return self.add(resource)

    def mineral_panel(
        self, calcium: float, albumin: float, phosphate: float, days_ago: float = 5, egfr: float | None = 85
    ) -> None:
        """Calcium, albumin and phosphate (and eGFR) drawn together, conventional units."""
        self.lab("17861-6", calcium, "mg/dL", days_ago)
        self.lab("1751-7", albumin, "g/dL", days_ago)
        self.lab("2777-1", phosphate, "mg/dL", days_ago)
        if egfr is not None:
            self.lab("98979-8", egfr, "mL/min/{1.73_m2}", days_ago)

    def condition(
        self,
        code: str | None,
        system: str = ICD10,
        display: str | None = None,
        *,
        text: str | None = None,
        clinical: str | None = "active",
        verification: str | None = "confirmed",
        onset_days_ago: float | None = 400,
        body_sites: list[str] | None = None,
    ) -> dict[str, Any]:
        """A Condition coded in one system (ICD-10-CM by default)."""
        concept: dict[str, Any] = {}
        if code is not None:
            concept["coding"] = [{"system": system, "code": code, "display": display or code}]
        if text is not None:
            concept["text"] = text
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self._id("cond"),
            "code": concept,
            "subject": self.subject,
        }
        if clinical is not None:
            resource["clinicalStatus"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
            }
        if verification is not None:
            resource["verificationStatus"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}
                ]
            }
        if onset_days_ago is not None:
            resource["onsetDateTime"] = when(onset_days_ago)
        if body_sites:
            resource["bodySite"] = [{"text": site} for site in body_sites]
        return self.add(resource)

    def calcinosis(self, **kwargs: Any) -> dict[str, Any]:
        """Calcinosis cutis on the problem list (ICD-10-CM L94.2)."""
        kwargs.setdefault("onset_days_ago", 30)
        return self.condition("L94.2", ICD10, "Calcinosis cutis", **kwargs)

    def medication(
        self,
        text: str,
        days_ago: float = 200,
        *,
        rxnorm: str | None = None,
        status: str = "active",
        kind: str = "MedicationRequest",
        route: str | None = None,
        dose_ug: float | None = None,
        per_day: int = 1,
        end_days_ago: float | None = None,
    ) -> dict[str, Any]:
        """A medication order, statement or administration."""
        concept: dict[str, Any] = {"text": text}
        if rxnorm:
            concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": text}]
        resource: dict[str, Any] = {
            "resourceType": kind,
            "id": self._id("med"),
            "status": status,
            "medicationCodeableConcept": concept,
        }
        dosage: dict[str, Any] = {}
        if route:
            dosage["route"] = {"text": route}
        if dose_ug is not None:
            dosage["doseAndRate"] = [{"doseQuantity": {"value": dose_ug, "unit": "ug", "system": UCUM, "code": "ug"}}]
            dosage["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
        if kind == "MedicationRequest":
            resource.update({"intent": "order", "subject": self.subject, "authoredOn": when(days_ago)})
            if dosage:
                resource["dosageInstruction"] = [dosage]
            if end_days_ago is not None:
                resource["dispenseRequest"] = {"validityPeriod": {"start": when(days_ago), "end": when(end_days_ago)}}
        elif kind == "MedicationStatement":
            resource.update(
                {
                    "subject": self.subject,
                    "effectivePeriod": {
                        "start": when(days_ago),
                        **({"end": when(end_days_ago)} if end_days_ago is not None else {}),
                    },
                }
            )
            if dosage:
                resource["dosage"] = [dosage]
        else:
            resource.update({"subject": self.subject, "effectiveDateTime": when(days_ago)})
            if dosage:
                resource["dosage"] = dosage
        return self.add(resource)

    def procedure(
        self,
        text: str,
        days_ago: float = 30,
        *,
        code: str | None = None,
        system: str = SNOMED,
        status: str = "completed",
    ) -> dict[str, Any]:
        """A performed Procedure."""
        concept: dict[str, Any] = {"text": text}
        if code:
            concept["coding"] = [{"system": system, "code": code, "display": text}]
        return self.add(
            {
                "resourceType": "Procedure",
                "id": self._id("proc"),
                "status": status,
                "code": concept,
                "subject": self.subject,
                "performedDateTime": when(days_ago),
            }
        )

    def dialysis(self, since_days: float, sessions_every: float = 60) -> None:
        """Hemodialysis sessions from `since_days` ago until a few days ago."""
        day = since_days
        while day > 2:
            self.procedure("Hemodialysis", day, code="302497006")
            day -= sessions_every
        self.procedure("Hemodialysis", 2, code="302497006")

    def bundle(self, bundle_type: str = "collection") -> dict[str, Any]:
        """The chart as a FHIR Bundle."""
        return {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": r} for r in self.resources]}

    def assess(self) -> Assessment | None:
        """Assessment of this chart through the public pipeline (Bundle in, assessment out)."""
        return self.result().assessment

    def result(self) -> AssessmentResult:
        return assess_resources(bundle_resources(self.bundle()), AS_OF, self.patient_id)


def synthea_resources(prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """(patient id, resources) of a Synthea patient from shared/data/synthea."""
    path = next(SYNTHEA.glob(f"{prefix}*.json"))
    bundle = json.loads(path.read_text(encoding="utf-8"))
    resources = [entry["resource"] for entry in bundle["entry"]]
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    return patient_id, resources


def synthea_chart(prefix: str) -> Chart:
    """A Chart whose background is a real-shaped Synthea record (references rewritten to
    `Patient/<id>` as an EHR would send them)."""
    patient_id, resources = synthea_resources(prefix)
    chart = Chart.__new__(Chart)
    chart.patient_id = patient_id
    chart.resources = json.loads(json.dumps(resources).replace(f"urn:uuid:{patient_id}", f"Patient/{patient_id}"))
    return chart
