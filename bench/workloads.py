"""Benchmark charts: realistic FHIR R4 patients generated deterministically from a seed.

Resource *shapes* are copied from a Synthea patient in shared/data/synthea (Patient with its
extensions and identifiers; Observation with meta tag, category, code.text, encounter reference,
effectiveDateTime and issued; Condition with clinical and verification status, encounter,
onset and recorded dates; MedicationRequest with requester and reasonReference; Procedure with a
performedPeriod; Encounter). The *volume* is generated with `random.Random(seed)`: lab draws over
years with the analytes the service reads (calcium, albumin, phosphate, PTH, eGFR, creatinine,
ALP, magnesium, bicarbonate, vitamin D, lipids, urate), background Conditions, medications and
procedures taken from all eight Synthea records, and an active ICD-10-CM L94.2 Condition so that
the full reasoning runs.

Dates are written relative to today (UTC midnight), because the service assesses "as of now" and
its rules look back over windows of days; everything else depends on the seed only, so two runs on
the same day send byte-identical charts.

    typical: ~50 Conditions, 300 relevant Observations, ~20 medication records (systemic
             sclerosis with calcinosis cutis, normal mineral labs: dystrophic pattern)
    heavy:   a decade of dialysis labs: 3,000 relevant Observations, ~100 Conditions, ~150
             medication records, ~120 Procedures, about 2 MB of JSON (ESRD on hemodialysis with
             calcinosis cutis and high phosphate: metastatic pattern, calciphylaxis risk factors)
"""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson

from tests.fhir_chart import (
    ICD10,
    LOINC,
    RXNORM,
    SNOMED,
    FhirChart,
    codeable,
    coding,
    dosage,
    quantity,
    search_keys,
)

REPO = Path(__file__).resolve().parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea"
TEMPLATE_PATIENT = "Truman_Wiegand"


#: The hookInstance written into every request body; runners swap in a fresh UUID per request.
HOOK_INSTANCE_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"

#: Prefetch key -> resource type: the service's own templates, through the test tooling's one chart
#: builder (`tests.fhir_chart`), so this table is never repeated here.
PREFETCH_TYPES = search_keys()
EHR_BASE = "https://ehr.example.org/fhir"


@dataclass(frozen=True, slots=True)
class Lab:
    """One orderable test: LOINC code, display, unit, the distribution drawn from, reference range."""

    code: str
    display: str
    unit: str
    mean: float
    sd: float
    low: float | None
    high: float | None
    digits: int = 1


# Typical outpatient values (systemic sclerosis, CKD G2: mineral labs normal).
TYPICAL_LABS: dict[str, list[Lab]] = {
    "renal": [
        Lab("17861-6", "Calcium", "mg/dL", 9.4, 0.35, 8.6, 10.3),
        Lab("1751-7", "Albumin", "g/dL", 4.0, 0.3, 3.5, 5.0),
        Lab("2777-1", "Phosphate", "mg/dL", 3.6, 0.4, 2.5, 4.5),
        Lab("2160-0", "Creatinine", "mg/dL", 1.1, 0.12, 0.7, 1.3, 2),
        Lab("33914-3", "Glomerular filtration rate/1.73 sq M.predicted", "mL/min/{1.73_m2}", 72, 8, 60, None, 0),
        Lab("2028-9", "Carbon Dioxide", "mmol/L", 25, 2, 22, 29, 0),
    ],
    "bone": [
        Lab("6768-6", "Alkaline phosphatase", "U/L", 80, 18, 44, 147, 0),
        Lab("2731-8", "PTH intact", "pg/mL", 45, 10, 15, 65, 0),
        Lab("1989-3", "25-Hydroxyvitamin D3", "ng/mL", 34, 8, 30, 100, 0),
        Lab("19123-9", "Magnesium", "mg/dL", 2.0, 0.15, 1.7, 2.2),
    ],
    "lipids": [
        Lab("2093-3", "Total Cholesterol", "mg/dL", 190, 25, None, 200, 0),
        Lab("18262-6", "Low Density Lipoprotein Cholesterol", "mg/dL", 110, 20, None, 130, 0),
        Lab("2571-8", "Triglycerides", "mg/dL", 140, 35, None, 150, 0),
    ],
    "urate": [Lab("3084-1", "Urate", "mg/dL", 5.8, 1.0, 3.5, 7.2)],
    "synthea-calcium": [Lab("49765-1", "Calcium", "mg/dL", 9.3, 0.4, None, None)],
}

# Dialysis values: hyperphosphatemia, secondary hyperparathyroidism, eGFR < 15.
HEAVY_LABS: dict[str, list[Lab]] = {
    "renal": [
        Lab("17861-6", "Calcium", "mg/dL", 9.6, 0.5, 8.6, 10.3),
        Lab("1751-7", "Albumin", "g/dL", 3.6, 0.3, 3.5, 5.0),
        Lab("2777-1", "Phosphate", "mg/dL", 6.4, 1.0, 2.5, 4.5),
        Lab("2160-0", "Creatinine", "mg/dL", 7.8, 1.2, 0.7, 1.3),
        Lab("33914-3", "Glomerular filtration rate/1.73 sq M.predicted", "mL/min/{1.73_m2}", 7, 1.5, 60, None, 0),
        Lab("2028-9", "Carbon Dioxide", "mmol/L", 21, 2.5, 22, 29, 0),
    ],
    "bone": [
        Lab("6768-6", "Alkaline phosphatase", "U/L", 160, 40, 44, 147, 0),
        Lab("2731-8", "PTH intact", "pg/mL", 520, 150, 15, 65, 0),
        Lab("1989-3", "25-Hydroxyvitamin D3", "ng/mL", 22, 6, 30, 100, 0),
        Lab("19123-9", "Magnesium", "mg/dL", 2.4, 0.25, 1.7, 2.2),
    ],
    "lipids": TYPICAL_LABS["lipids"],
    "urate": [Lab("3084-1", "Urate", "mg/dL", 6.8, 1.2, 3.5, 7.2)],
    # Inpatient and point-of-care results in SI units: exercises the unit conversions.
    "si": [
        Lab("1994-3", "Calcium ionized", "mmol/L", 1.18, 0.07, 1.12, 1.32, 2),
        Lab("14879-1", "Phosphate", "mmol/L", 2.0, 0.3, 0.81, 1.45, 2),
    ],
}

# Relevant Conditions (code system, code, display, onset days ago, clinical status).
TYPICAL_CONDITIONS: list[tuple[str, str, str, int, str]] = [
    (ICD10, "L94.2", "Calcinosis cutis", 200, "active"),
    (SNOMED, "89155008", "Systemic sclerosis (disorder)", 2900, "active"),
    (SNOMED, "266261006", "Raynaud's phenomenon (disorder)", 3100, "active"),
    (SNOMED, "431856006", "Chronic kidney disease stage 2 (disorder)", 900, "active"),
    (SNOMED, "55822004", "Hyperlipidemia", 2400, "active"),
]
HEAVY_CONDITIONS: list[tuple[str, str, str, int, str]] = [
    (ICD10, "L94.2", "Calcinosis cutis", 120, "active"),
    (ICD10, "N18.6", "End stage renal disease", 3650, "active"),
    (ICD10, "Z99.2", "Dependence on renal dialysis", 3640, "active"),
    (ICD10, "N25.81", "Secondary hyperparathyroidism of renal origin", 3000, "active"),
    (ICD10, "E83.39", "Other disorders of phosphorus metabolism", 2500, "active"),
    (SNOMED, "44054006", "Diabetes", 7000, "active"),
    (SNOMED, "127013003", "Diabetic renal disease (disorder)", 5000, "active"),
    (ICD10, "Z79.01", "Long term (current) use of anticoagulants", 1500, "active"),
    (SNOMED, "162864005", "Body mass index 30+ - obesity (finding)", 4000, "active"),
    (SNOMED, "55822004", "Hyperlipidemia", 6000, "active"),
]

# Relevant medications: (resource type, rxnorm or None, text, days ago, status, daily dose in ug or None).
TYPICAL_MEDICATIONS: list[tuple[str, str | None, str, int, str, float | None]] = [
    ("MedicationRequest", "8640", "prednisone 5 MG Oral Tablet", 700, "active", None),
    ("MedicationRequest", "6851", "methotrexate 2.5 MG Oral Tablet", 1200, "stopped", None),
    ("MedicationRequest", "2418", "cholecalciferol 25 MCG Oral Capsule", 400, "active", 25.0),
    ("MedicationStatement", "1897", "calcium carbonate 500 MG Chewable Tablet", 300, "active", None),
    ("MedicationAdministration", None, "methylprednisolone 500 MG IV infusion", 800, "completed", None),
]
HEAVY_MEDICATIONS: list[tuple[str, str | None, str, int, str, float | None]] = [
    ("MedicationRequest", "1897", "calcium acetate 667 MG Oral Capsule", 3000, "active", None),
    ("MedicationRequest", None, "calcitriol 0.25 MCG Oral Capsule", 2500, "active", 0.5),
    ("MedicationRequest", "855288", "warfarin sodium 5 MG Oral Tablet", 1500, "active", None),
    (
        "MedicationRequest",
        "106892",
        "insulin human, isophane 70 UNT/ML / Regular Insulin, Human 30 UNT/ML",
        6000,
        "active",
        None,
    ),
    ("MedicationRequest", "2418", "cholecalciferol 25 MCG Oral Capsule", 900, "stopped", 25.0),
    ("MedicationStatement", None, "sevelamer carbonate 800 MG Oral Tablet", 2000, "active", None),
]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _load_synthea() -> list[dict[str, Any]]:
    bundles = []
    for path in sorted(SYNTHEA.glob("*.json")):
        bundles.append(orjson.loads(path.read_bytes()))
    if not bundles:
        raise FileNotFoundError(f"no Synthea bundles in {SYNTHEA}")
    return bundles


class Templates:
    """Resource shapes and background pools taken from the Synthea records."""

    def __init__(self) -> None:
        bundles = _load_synthea()
        template = next(
            (
                b
                for b, p in zip(bundles, sorted(SYNTHEA.glob("*.json")), strict=True)
                if p.name.startswith(TEMPLATE_PATIENT)
            ),
            bundles[0],
        )
        resources = [e["resource"] for e in template["entry"]]

        def first(kind: str, predicate: Any = None) -> dict[str, Any]:
            return copy.deepcopy(
                next(r for r in resources if r["resourceType"] == kind and (predicate is None or predicate(r)))
            )

        self.patient = first("Patient")
        self.lab = first("Observation", lambda r: r["category"][0]["coding"][0]["code"] == "laboratory")
        self.condition = first("Condition")
        self.medication_request = first("MedicationRequest", lambda r: "reasonReference" in r)
        self.procedure = first("Procedure", lambda r: "performedPeriod" in r)
        self.encounter = first("Encounter")
        conditions: dict[str, tuple[str, str]] = {}
        medications: dict[str, str] = {}
        procedures: dict[str, str] = {}
        for bundle in bundles:
            for entry in bundle["entry"]:
                r = entry["resource"]
                if r["resourceType"] == "Condition":
                    c = r["code"]["coding"][0]
                    conditions.setdefault(
                        c["code"], (c["display"], "resolved" if "abatementDateTime" in r else "active")
                    )
                elif r["resourceType"] == "MedicationRequest" and "medicationCodeableConcept" in r:
                    c = r["medicationCodeableConcept"]["coding"][0]
                    medications.setdefault(c["code"], c["display"])
                elif r["resourceType"] == "Procedure":
                    c = r["code"]["coding"][0]
                    procedures.setdefault(c["code"], c["display"])
        # Background pools, sorted so that the generated charts depend on the seed only.
        self.background_conditions = sorted((code, d, s) for code, (d, s) in conditions.items())
        self.background_medications = sorted(medications.items())
        self.background_procedures = sorted(procedures.items())


class Chart(FhirChart):
    """A generated patient: every resource (including Encounters, for loading a FHIR server).

    The resources, Bundles, prefetch and request come from the test tooling's one chart builder
    (`tests.fhir_chart.FhirChart`); `_Builder` adds what the Synthea records carry beyond it (meta,
    extensions, encounters), deliberately heavier than the scenario charts, because the benchmark
    measures the service on what EHRs send."""

    def __init__(self, name: str, patient_id: str, resources: list[dict[str, Any]]) -> None:
        super().__init__(patient_id)
        self.name = name
        self.resources = resources

    def prefetch(
        self, ehr_base: str | None = EHR_BASE, name: str | None = None, order_sign: bool = False
    ) -> dict[str, Any]:
        """EHR-style prefetch: the Patient, and one searchset Bundle per template key."""
        return super().prefetch(ehr_base, name or self.name, order_sign)

    def request(self, *, prefetch: bool = True, fhir_server: str | None = None) -> dict[str, Any]:
        """A patient-view request (hookInstance = HOOK_INSTANCE_PLACEHOLDER)."""
        body: dict[str, Any] = {
            "hookInstance": HOOK_INSTANCE_PLACEHOLDER,
            "hook": "patient-view",
            "context": {"userId": "Practitioner/bench-1", "patientId": self.patient_id},
        }
        if fhir_server is not None:
            body["fhirServer"] = fhir_server
        if prefetch:
            body["prefetch"] = self.prefetch()
        return body

    def request_bytes(self, **kwargs: Any) -> bytes:
        return orjson.dumps(self.request(**kwargs))

    def order_sign_request(self) -> dict[str, Any]:
        """An order-sign request with the order-sign prefetch (the chart's, its active test orders,
        no encounter) and ten draft orders: the orders a dialysis patient's clinician signs
        together, most of them ones section 15 names, so the whole order check runs."""
        body = self.request(prefetch=False)
        body["prefetch"] = self.prefetch(order_sign=True)
        body["hook"] = "order-sign"
        body["context"]["draftOrders"] = draft_orders(self.patient_id)
        return body

    def order_sign_bytes(self) -> bytes:
        return orjson.dumps(self.order_sign_request())


class _Builder:
    """Writes one patient's resources through the test tooling's chart builder
    (`tests.fhir_chart.FhirChart`), in the Synthea shapes: each resource also carries what the
    Synthea template adds beyond the builder's fields (meta tag, encounter reference, `issued`,
    the Patient's names, identifiers and extensions)."""

    def __init__(self, templates: Templates, rng: random.Random, patient_id: str, anchor: datetime) -> None:
        self.t = templates
        self.rng = rng
        self.patient_id = patient_id
        self.anchor = anchor
        self.chart = FhirChart(patient_id)
        self.encounters: list[tuple[str, float]] = []
        self.meta = copy.deepcopy(templates.lab.get("meta", {}))

    @property
    def resources(self) -> list[dict[str, Any]]:
        return self.chart.resources

    def when(self, days_ago: float) -> str:
        moment = self.anchor - timedelta(days=days_ago)
        return moment.replace(microsecond=0).isoformat()

    def instant(self, days_ago: float) -> str:
        moment = self.anchor - timedelta(days=days_ago)
        return moment.isoformat(timespec="milliseconds")

    def _synthea(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fields every Synthea resource carries beyond the builder's (its meta tag)."""
        return {**(extra or {}), "meta": copy.deepcopy(self.meta)}

    def patient(self, gender: str, birth_date: str) -> None:
        p = copy.deepcopy(self.t.patient)
        for field in ("resourceType", "id", "gender", "birthDate", "deceasedDateTime"):
            p.pop(field, None)
        for identifier in p.get("identifier", []):
            if identifier.get("system") in (
                "https://github.com/synthetichealth/synthea",
                "http://hospital.smarthealthit.org",
            ):
                identifier["value"] = self.patient_id
        self.chart.add_patient(gender, birth_date, **p)

    def encounter(self, days_ago: float, code: str, display: str, klass: str = "AMB") -> str:
        resource_id = _uuid(self.rng)
        self.chart.add_encounter(
            resource_id,
            klass,
            codeable(display, coding(SNOMED, code, display)),
            self.when(days_ago),
            self.when(days_ago - 1 / 48),
            extra=self._synthea(),
        )
        self.encounters.append((resource_id, days_ago))
        return resource_id

    def nearest_encounter(self, days_ago: float) -> str:
        if not self.encounters:
            return self.encounter(days_ago, "185349003", "Encounter for check up (procedure)")
        return min(self.encounters, key=lambda item: abs(item[1] - days_ago))[0]

    def _at(self, encounter: str) -> dict[str, Any]:
        return self._synthea({"encounter": {"reference": f"Encounter/{encounter}"}})

    def observation(self, lab: Lab, days_ago: float, encounter: str, with_range: bool) -> dict[str, Any]:
        resource_id = _uuid(self.rng)
        value = round(max(0.1, self.rng.gauss(lab.mean, lab.sd)), lab.digits)
        low = high = None
        flag = None
        if with_range and (lab.low is not None or lab.high is not None):
            low = quantity(lab.low, lab.unit) if lab.low is not None else None
            high = quantity(lab.high, lab.unit) if lab.high is not None else None
            flag = (
                "H"
                if lab.high is not None and value > lab.high
                else "L"
                if lab.low is not None and value < lab.low
                else "N"
            )
        return self.chart.add_observation(
            resource_id,
            codeable(lab.display, coding(LOINC, lab.code, lab.display)),
            effective=self.when(days_ago),
            issued=self.instant(days_ago - 0.2),
            value=quantity(value, lab.unit),
            low=low,
            high=high,
            interpretation=flag,
            category_display=True,
            extra=self._at(encounter),
        )

    def labs(
        self, panels: dict[str, list[Lab]], target: int, span_days: float, extra: dict[str, float], ranges: float
    ) -> None:
        """Lab draws from `span_days` ago to 3 days ago, newest first, until `target` results; a
        fraction `ranges` of results carry a reference range and an interpretation flag."""
        made = 0
        day = 3.0 + self.rng.random()
        mean_gap = span_days / max(
            1.0, target / (len(panels["renal"]) + sum(len(panels[p]) * q for p, q in extra.items()))
        )
        while made < target:
            encounter = self.encounter(day, "185349003", "Encounter for check up (procedure)")
            chosen = list(panels["renal"])
            for panel, probability in extra.items():
                if self.rng.random() < probability:
                    chosen.extend(panels[panel])
            for lab in chosen[: target - made]:
                self.observation(lab, day, encounter, with_range=self.rng.random() < ranges)
                made += 1
            day += self.rng.uniform(0.4, 1.6) * mean_gap

    def condition(
        self,
        system: str | None,
        code: str | None,
        display: str,
        onset_days: float,
        status: str,
        category: str = "problem-list-item",
    ) -> None:
        resource_id = _uuid(self.rng)
        concept = codeable(display, *((coding(system, code, display),) if system is not None and code else ()))
        at = self._at(self.nearest_encounter(onset_days))
        abated = self.when(max(1.0, onset_days - self.rng.uniform(7, 30))) if status == "resolved" else None
        self.chart.add_condition(
            resource_id,
            concept,
            clinical=status,
            onset=self.when(onset_days),
            recorded=self.when(onset_days),
            abated=abated,
            category=category,
            extra=at,
        )

    def background_conditions(self, count: int, span_days: float) -> None:
        pool = self.t.background_conditions
        for _ in range(count):
            code, display, status = pool[self.rng.randrange(len(pool))]
            self.condition(SNOMED, code, display, self.rng.uniform(30, span_days), status, "encounter-diagnosis")

    def medication(
        self, kind: str, rxnorm: str | None, text: str, days_ago: float, status: str, dose_ug: float | None
    ) -> None:
        concept = codeable(text, *((coding(RXNORM, rxnorm, text),) if rxnorm is not None else ()))
        encounter = {"reference": f"Encounter/{self.nearest_encounter(days_ago)}"}
        instruction = {"sequence": 1, "text": "as directed", **dosage(route="oral", dose_ug=dose_ug)}
        resource_id = _uuid(self.rng)
        if kind == "MedicationRequest":
            ended = status in ("stopped", "completed")
            self.chart.add_medication(
                kind,
                resource_id,
                concept,
                status=status,
                when=self.when(days_ago),
                dosage=instruction,
                validity_end=self.when(max(1.0, days_ago - 90)) if ended else None,
                extra=self._synthea({"encounter": encounter}),
            )
        elif kind == "MedicationStatement":
            self.chart.add_medication(
                kind,
                resource_id,
                concept,
                status=status,
                period=(self.when(days_ago), None),
                dosage=instruction,
                extra=self._synthea({"context": encounter, "dateAsserted": self.when(days_ago)}),
            )
        else:
            self.chart.add_medication(
                kind,
                resource_id,
                concept,
                status=status,
                when=self.when(days_ago),
                dosage={"route": {"text": "intravenous"}, "dose": {"value": 1, "unit": "dose"}},
                extra=self._synthea({"context": encounter}),
            )

    def background_medications(self, count: int, span_days: float) -> None:
        pool = self.t.background_medications
        for _ in range(count):
            code, display = pool[self.rng.randrange(len(pool))]
            status = self.rng.choice(("active", "stopped", "completed"))
            self.medication("MedicationRequest", code, display, self.rng.uniform(10, span_days), status, None)

    def procedure(self, system: str, code: str, display: str, days_ago: float) -> None:
        resource_id = _uuid(self.rng)
        self.chart.add_procedure(
            resource_id,
            codeable(display, coding(system, code, display)),
            self.when(days_ago),
            performed_end=self.when(days_ago - 1 / 6),
            extra=self._at(self.nearest_encounter(days_ago)),
        )

    def background_procedures(self, count: int, span_days: float) -> None:
        pool = self.t.background_procedures
        for _ in range(count):
            code, display = pool[self.rng.randrange(len(pool))]
            self.procedure(SNOMED, code, display, self.rng.uniform(5, span_days))


def _anchor() -> datetime:
    return datetime.combine(datetime.now(UTC).date(), time(0), tzinfo=UTC)


def typical(seed: int = 20261101, templates: Templates | None = None, anchor: datetime | None = None) -> Chart:
    """A typical chart: ~50 Conditions, 300 relevant Observations, ~20 medication records."""
    rng = random.Random(seed)
    b = _Builder(templates or Templates(), rng, "bench-typical-" + _uuid(rng)[:8], anchor or _anchor())
    b.patient("female", "1968-03-14")
    b.labs(TYPICAL_LABS, 300, 5 * 365, {"bone": 0.3, "lipids": 0.12, "urate": 0.1, "synthea-calcium": 0.15}, 0.6)
    for system, code, display, onset, status in TYPICAL_CONDITIONS:
        b.condition(system, code, display, onset, status)
    b.condition(None, None, "Digital ulcer of right index finger", 150, "active", "encounter-diagnosis")
    b.background_conditions(44, 20 * 365)
    for kind, rxnorm, text, days, status, dose in TYPICAL_MEDICATIONS:
        b.medication(kind, rxnorm, text, days, status, dose)
    b.background_medications(15, 8 * 365)
    b.procedure(SNOMED, "363680008", "Radiographic imaging procedure (procedure)", 150)
    b.background_procedures(9, 8 * 365)
    return Chart("typical", b.patient_id, b.resources)


def heavy(seed: int = 20261102, templates: Templates | None = None, anchor: datetime | None = None) -> Chart:
    """A decade of dialysis: 3,000 relevant Observations, ~100 Conditions, ~150 medication records."""
    rng = random.Random(seed)
    b = _Builder(templates or Templates(), rng, "bench-heavy-" + _uuid(rng)[:8], anchor or _anchor())
    b.patient("male", "1959-09-02")
    b.labs(HEAVY_LABS, 3000, 10 * 365, {"bone": 0.35, "lipids": 0.05, "urate": 0.1, "si": 0.2}, 0.1)
    for system, code, display, onset, status in HEAVY_CONDITIONS:
        b.condition(system, code, display, onset, status)
    b.background_conditions(90, 25 * 365)
    for kind, rxnorm, text, days, status, dose in HEAVY_MEDICATIONS:
        b.medication(kind, rxnorm, text, days, status, dose)
    # Renewals of the chronic prescriptions, heparin and IV iron given at dialysis, statements.
    for i in range(40):
        kind, rxnorm, text, _, _, dose = HEAVY_MEDICATIONS[i % 4]
        b.medication(kind, rxnorm, text, 3600 - i * 88, "completed", dose)
    for i in range(50):
        text = (
            "heparin sodium 1000 UNT/ML Injectable Solution" if i % 2 else "iron sucrose 20 MG/ML Injectable Solution"
        )
        b.medication("MedicationAdministration", "5224" if i % 2 else None, text, 3 + i * 70, "completed", None)
    for i in range(20):
        b.medication(
            "MedicationStatement", None, "sevelamer carbonate 800 MG Oral Tablet", 3500 - i * 170, "completed", None
        )
    b.background_medications(34, 10 * 365)
    for i in range(110):
        b.procedure(SNOMED, "302497006", "Hemodialysis (procedure)", 2 + i * 33)
    b.background_procedures(10, 10 * 365)
    return Chart("heavy", b.patient_id, b.resources)


def long_dialysis(
    observations: int = 12_000,
    years: int = 20,
    seed: int = 20261103,
    templates: Templates | None = None,
    anchor: datetime | None = None,
) -> Chart:
    """Twenty years of dialysis: 12,000 relevant Observations by default (the 10,000+ of the
    no-prefetch target); the rest as in `heavy`. Passing 30,000 makes the ~28 MB prefetch
    against which the body cap is sized."""
    rng = random.Random(seed)
    b = _Builder(templates or Templates(), rng, "bench-dialysis20-" + _uuid(rng)[:8], anchor or _anchor())
    b.patient("female", "1951-03-14")
    b.labs(HEAVY_LABS, observations, years * 365, {"bone": 0.35, "lipids": 0.05, "urate": 0.1, "si": 0.2}, 0.1)
    for system, code, display, onset, status in HEAVY_CONDITIONS:
        b.condition(system, code, display, onset, status)
    b.background_conditions(90, 25 * 365)
    for kind, rxnorm, text, days, status, dose in HEAVY_MEDICATIONS:
        b.medication(kind, rxnorm, text, days, status, dose)
    for i in range(110):
        b.procedure(SNOMED, "302497006", "Hemodialysis (procedure)", 2 + i * 66)
    return Chart("dialysis20", b.patient_id, b.resources)


#: Ten draft orders: (kind, RxNorm or LOINC code where the value sets confirm one, text, route).
DRAFT_ORDERS: tuple[tuple[str, str | None, str, str | None], ...] = (
    ("MedicationRequest", "855332", "warfarin sodium 5 MG Oral Tablet", "oral"),
    ("MedicationRequest", None, "calcium acetate 667 MG Oral Capsule", "oral"),
    ("MedicationRequest", "308867", "calcitriol 0.25 MCG Oral Capsule", "oral"),
    ("MedicationRequest", None, "potassium phosphates 3 MMOL/ML Injectable Solution", "intravenous"),
    ("MedicationRequest", None, "prednisone 20 MG Oral Tablet", "oral"),
    ("MedicationRequest", None, "Lactated Ringer's Injectable Solution 1000 mL", "intravenous"),
    ("MedicationRequest", None, "amoxicillin 500 MG Oral Capsule", "oral"),
    ("MedicationRequest", "5224", "heparin sodium 5000 UNT/ML Injectable Solution", "subcutaneous"),
    ("ServiceRequest", "2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma", None),
    ("ServiceRequest", "2777-1", "Phosphate [Mass/volume] in Serum or Plasma", None),
)


def draft_orders(patient_id: str) -> dict[str, Any]:
    """The `draftOrders` Bundle of `DRAFT_ORDERS` for a patient, written by the chart builder
    that writes the sandbox's draft orders and the in-process order scenarios."""
    drafts = FhirChart(patient_id)
    for index, (kind, code, text, route) in enumerate(DRAFT_ORDERS):
        if kind == "MedicationRequest":
            drafts.add_draft_medication(f"draft-{index + 1}", text, rxnorm=code, route=route)
        else:
            drafts.add_draft_test(f"draft-{index + 1}", text, loinc=code)
    return drafts.bundle()


def charts(seed: int = 20261101) -> dict[str, Chart]:
    """Both benchmark charts, sharing one load of the Synthea templates."""
    templates = Templates()
    anchor = _anchor()
    return {"typical": typical(seed, templates, anchor), "heavy": heavy(seed + 1, templates, anchor)}


def describe(chart: Chart) -> str:
    counts = chart.counts()
    medications = sum(
        counts.get(t, 0) for t in ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
    )
    size = len(chart.request_bytes())
    return (
        f"{counts.get('Observation', 0)} Observations, {counts.get('Condition', 0)} Conditions, "
        f"{medications} medication records, {counts.get('Procedure', 0)} Procedures; request {size / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    for name, chart in charts().items():
        print(name, describe(chart), date.today().isoformat())
