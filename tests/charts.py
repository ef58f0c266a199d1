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
from tests.fhir_chart import ICD10, LOINC, RXNORM, SNOMED, UCUM, FhirChart, codeable, coding, dosage, quantity

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"

_ids = itertools.count(1)


def when(days_ago: float) -> str:
    """An ISO dateTime `days_ago` before AS_OF."""
    return (AS_OF - timedelta(days=days_ago)).isoformat()


class Chart(FhirChart):
    """A patient's record under construction, dated in days before `AS_OF` (the FHIR shapes are
    those of `tests.fhir_chart`, shared with the sandbox patients and the benchmark)."""

    def __init__(self, patient_id: str = "pat-1", gender: str = "female", birth_date: str = "1962-04-12") -> None:
        super().__init__(patient_id)
        self.add_patient(gender, birth_date)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(_ids)}"

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
        value_quantity: dict[str, Any] | None = None
        if value is not None:
            value_quantity = {"value": value}
            if unit is not None:
                value_quantity = quantity(value, unit, ucum=ucum_code)
            if comparator:
                value_quantity["comparator"] = comparator

        def limit(bound: float | None) -> dict[str, Any] | None:
            return None if bound is None else {"value": bound, "unit": unit, "system": UCUM, "code": unit}

        return self.add_observation(
            self._id("obs"),
            codeable(None, coding(LOINC, code, display or code)),
            effective=when(days_ago) if date_field == "effectiveDateTime" else None,
            effective_period=(when(days_ago + 1), when(days_ago)) if date_field == "effectivePeriod" else None,
            issued=when(days_ago) if date_field == "issued" else None,
            value=value_quantity,
            low=limit(low),
            high=limit(high),
            interpretation=interpretation,
            status=status,
            absent=value is None,
        )

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
        codings = (coding(system, code, display or code),) if code is not None else ()
        return self.add_condition(
            self._id("cond"),
            codeable(text, *codings),
            clinical=clinical,
            verification=verification,
            onset=when(onset_days_ago) if onset_days_ago is not None else None,
            body_sites=body_sites,
        )

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
        medication = codeable(text, *((coding(RXNORM, rxnorm, text),) if rxnorm else ()))
        end = when(end_days_ago) if end_days_ago is not None else None
        return self.add_medication(
            kind,
            self._id("med"),
            medication,
            status=status,
            when=when(days_ago),
            period=(when(days_ago), end) if kind == "MedicationStatement" else None,
            dosage=dosage(route=route, dose_ug=dose_ug, per_day=per_day),
            validity_end=end,
        )

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
        concept = codeable(text, *((coding(system, code, text),) if code else ()))
        return self.add_procedure(self._id("proc"), concept, when(days_ago), status=status)

    def lab_ordered(
        self, code: str, text: str, days_ago: float = 2, *, status: str = "active", intent: str = "order"
    ) -> dict[str, Any]:
        """A lab test ordered `days_ago` (a ServiceRequest coded in LOINC), not yet resulted."""
        return self.add_service_request(
            self._id("sr"),
            codeable(text, coding(LOINC, code, text)),
            status=status,
            intent=intent,
            authored=when(days_ago),
        )

    def dialysis(self, since_days: float, sessions_every: float = 60) -> None:
        """Hemodialysis sessions from `since_days` ago until a few days ago."""
        day = since_days
        while day > 2:
            self.procedure("Hemodialysis", day, code="302497006")
            day -= sessions_every
        self.procedure("Hemodialysis", 2, code="302497006")

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
