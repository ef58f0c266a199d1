"""Writes the sandbox scenario Bundles and expected.json in this folder.

    .venv/bin/python deploy/fhir-sandbox/patients/generate.py

The JSON files are the source of truth that the tests and the sandbox read; this script is how
they were made, kept so that a scenario can be changed in one place and rewritten consistently
(ids, references, units, flags, dates relative to the anchor). Re-running it rewrites every file.

Every date is written as "N days before ANCHOR" (calcinosis_tools.scenarios.ANCHOR, 2026-11-01). The two
Synthea-based scenarios copy a chart from shared/data/synthea (Apache-2.0), drop its billing
resources (Claim, ExplanationOfBenefit), give every resource a stable id, turn its urn:uuid
references into Type/id, and move its dates so the chart ends a set number of days before the
anchor.

The expected outcomes below are written from clinical-knowledge.md (sections 4, 5, 8, 9), not
computed by the engine: tests/test_sandbox_patients.py checks the engine against them.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from tests.fhir_chart import FhirChart, codeable, quantity  # noqa: E402
from calcinosis_tools.scenarios import (  # noqa: E402
    ANCHOR,
    ANCHOR_TAG_SYSTEM,
    EXPECTED_FILE,
    shift_date_string,
    shift_dates,
)

SYNTHEA = REPO.parent / "shared" / "data" / "synthea"
VALUESETS = REPO / "fhir_mapping" / "valuesets"

from tests.fhir_chart import ICD10, LOINC, RXNORM, SNOMED  # noqa: E402

IDENTIFIER_SYSTEM = "https://calcinosis-cds.example.org/sandbox-patients"

# LOINC long common names for codes whose value-set display is Synthea's short name.
LOINC_DISPLAY = {
    "2093-3": "Cholesterol [Mass/volume] in Serum or Plasma",
    "2571-8": "Triglyceride [Mass/volume] in Serum or Plasma",
    "18262-6": "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
    "2085-9": "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
}
UNIT_DISPLAY = {"umol/L": "µmol/L", "mL/min/{1.73_m2}": "mL/min/1.73m2"}


def _valueset_index() -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
    """(system, code) -> display for listed codes, and (system, prefix) for ICD-10-CM is-a filters."""
    displays: dict[tuple[str, str], str] = {}
    prefixes: set[tuple[str, str]] = set()
    for path in VALUESETS.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        for include in data.get("compose", {}).get("include", []):
            for item in include.get("concept", []):
                displays[(include["system"], item["code"])] = item.get("display", item["code"])
            for rule in include.get("filter", []):
                prefixes.add((include["system"], rule["value"]))
    return displays, prefixes


DISPLAYS, PREFIXES = _valueset_index()


def vs(system: str, code: str, display: str | None = None) -> dict[str, str]:
    """A coding the service recognises: listed in fhir_mapping/valuesets, or under one of its
    ICD-10-CM is-a filters (then `display` is needed)."""
    listed = (system, code) in DISPLAYS
    filtered = any(system == s and code.startswith(prefix) for s, prefix in PREFIXES)
    if not listed and not filtered:
        raise KeyError(f"{system}|{code} is not in fhir_mapping/valuesets")
    display = display or (LOINC_DISPLAY.get(code) if system == LOINC else None) or DISPLAYS.get((system, code))
    if display is None:
        raise KeyError(f"{system}|{code}: give the display (code matched by a filter)")
    return {"system": system, "code": code, "display": display}


def other(system: str, code: str, display: str) -> dict[str, str]:
    """A coding the service does not read (background: hypertension, omeprazole...)."""
    return {"system": system, "code": code, "display": display}


def concept(text: str, *codings: dict[str, str]) -> dict[str, Any]:
    return codeable(text, *codings)


def years(value: float) -> int:
    """Days in `value` years (for 'onset 14 years ago')."""
    return round(value * 365.25)


class Chart(FhirChart):
    """One scenario's resources, with ids `<patient id>-<key>-<n>` and dates relative to ANCHOR
    (the FHIR shapes are those of `tests.fhir_chart`, shared with the tests and the benchmark)."""

    def __init__(self, patient_id: str, *, zone: str = "Z") -> None:
        super().__init__(patient_id)
        self.zone = zone
        self._counters: dict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))

    # ----- ids, dates -------------------------------------------------------------------------

    def new_id(self, key: str) -> str:
        return f"{self.patient_id}-{key}-{next(self._counters[key])}"

    def at(self, days_ago: int, clock: str = "09:30:00") -> str:
        """A dateTime `days_ago` days before the anchor, at `clock` in the chart's zone."""
        return f"{(ANCHOR - timedelta(days=days_ago)).isoformat()}T{clock}{self.zone}"

    def day(self, days_ago: int) -> str:
        return (ANCHOR - timedelta(days=days_ago)).isoformat()

    # ----- resources ------------------------------------------------------------------------

    def patient(self, *, gender: str, born_days_ago: int, label: str) -> None:
        self.add_patient(
            gender,
            self.day(born_days_ago),
            identifier=[{"system": IDENTIFIER_SYSTEM, "value": self.patient_id}],
            active=True,
            name=[{"use": "usual", "text": f"Sandbox {label}", "family": "Sandbox", "given": [label]}],
        )

    def condition(
        self,
        key: str,
        code: dict[str, Any],
        *,
        onset_days_ago: int,
        clinical: str = "active",
        verification: str = "confirmed",
        body_sites: list[str] | None = None,
        abated_days_ago: int | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        return self.add_condition(
            self.new_id(key),
            code,
            clinical=clinical,
            verification=verification,
            category="problem-list-item",
            onset=self.at(onset_days_ago, "10:00:00"),
            recorded=self.at(onset_days_ago, "10:15:00"),
            body_sites=body_sites,
            abated=self.at(abated_days_ago, "10:00:00") if abated_days_ago is not None else None,
            note=note,
        )

    def lab(
        self,
        key: str,
        code: dict[str, str],
        value: float,
        unit: str,
        days_ago: int,
        *,
        low: float | None = None,
        high: float | None = None,
        text: str | None = None,
        clock: str = "08:10:00",
        category: str = "laboratory",
    ) -> dict[str, Any]:
        """A final Observation (laboratory unless told); the H/L/N flag follows from the
        reference range."""
        display = UNIT_DISPLAY.get(unit)
        flag = None
        if low is not None or high is not None:
            flag = "H" if high is not None and value > high else "L" if low is not None and value < low else "N"
        return self.add_observation(
            self.new_id(key),
            concept(text or code["display"], code),
            effective=self.at(days_ago, clock),
            issued=self.at(days_ago, "11:42:00"),
            value=quantity(value, unit, display=display),
            low=quantity(low, unit, display=display) if low is not None else None,
            high=quantity(high, unit, display=display) if high is not None else None,
            interpretation=flag,
            interpretation_display=True,
            category=category,
            category_display=True,
        )

    def coded_lab(
        self, key: str, code: dict[str, str], value: dict[str, Any], days_ago: int, text: str
    ) -> dict[str, Any]:
        """A final laboratory Observation with a coded result (e.g. ANA positive)."""
        return self.add_observation(
            self.new_id(key),
            concept(text, code),
            effective=self.at(days_ago, "08:10:00"),
            issued=self.at(days_ago, "15:20:00"),
            value_concept=value,
            category_display=True,
        )

    def mineral_panel(
        self,
        days_ago: int,
        *,
        calcium: float,
        albumin: float,
        phosphate: float,
        calcium_range: tuple[float, float] = (8.6, 10.3),
        albumin_range: tuple[float, float] = (3.5, 5.0),
        phosphate_range: tuple[float, float] = (2.5, 4.5),
    ) -> None:
        """Calcium, albumin and phosphate from one draw, conventional units."""
        self.lab(
            "ca",
            vs(LOINC, "17861-6"),
            calcium,
            "mg/dL",
            days_ago,
            low=calcium_range[0],
            high=calcium_range[1],
            text="Calcium",
        )
        self.lab(
            "alb",
            vs(LOINC, "1751-7"),
            albumin,
            "g/dL",
            days_ago,
            low=albumin_range[0],
            high=albumin_range[1],
            text="Albumin",
        )
        self.lab(
            "phos",
            vs(LOINC, "2777-1"),
            phosphate,
            "mg/dL",
            days_ago,
            low=phosphate_range[0],
            high=phosphate_range[1],
            text="Phosphorus",
        )

    def egfr(self, value: float, days_ago: int, code: str = "98979-8") -> None:
        self.lab("egfr", vs(LOINC, code), value, "mL/min/{1.73_m2}", days_ago, low=60, text="eGFR")

    def creatinine(self, value: float, days_ago: int, low: float = 0.6, high: float = 1.2) -> None:
        self.lab("creat", vs(LOINC, "2160-0"), value, "mg/dL", days_ago, low=low, high=high, text="Creatinine")

    def pth(self, value: float, days_ago: int) -> None:
        self.lab("pth", vs(LOINC, "2731-8"), value, "pg/mL", days_ago, low=15, high=65, text="PTH, intact")

    def alp(self, value: float, days_ago: int) -> None:
        self.lab("alp", vs(LOINC, "6768-6"), value, "U/L", days_ago, low=40, high=129, text="Alkaline phosphatase")

    def medication(
        self,
        key: str,
        medication: dict[str, Any],
        *,
        authored_days_ago: int,
        dosage: str,
        status_code: str = "active",
        route: str = "Oral",
        dose: tuple[float, str] | None = None,
        timing: tuple[int, int, str] | None = None,
        ended_days_ago: int | None = None,
    ) -> dict[str, Any]:
        """A MedicationRequest (order) with a dosage instruction; `timing` is (frequency,
        period, periodUnit)."""
        instruction: dict[str, Any] = {"text": dosage, "route": ROUTES[route]}
        if timing is not None:
            frequency, period, period_unit = timing
            instruction["timing"] = {"repeat": {"frequency": frequency, "period": period, "periodUnit": period_unit}}
        if dose is not None:
            value, unit = dose
            instruction["doseAndRate"] = [{"doseQuantity": quantity(value, unit)}]
        authored = self.at(authored_days_ago, "11:00:00")
        return self.add_medication(
            "MedicationRequest",
            self.new_id(key),
            medication,
            status=status_code,
            when=authored,
            dosage=instruction,
            validity_end=self.at(ended_days_ago, "11:00:00") if ended_days_ago is not None else None,
        )

    def administration(
        self,
        key: str,
        medication: dict[str, Any],
        *,
        days_ago: int,
        start: str,
        end: str,
        route: str,
        dose: tuple[float, str],
        site: str | None = None,
    ) -> dict[str, Any]:
        value, unit = dose
        dosage: dict[str, Any] = {"route": ROUTES[route], "dose": quantity(value, unit)}
        if site:
            dosage["site"] = {"text": site}
        return self.add_medication(
            "MedicationAdministration",
            self.new_id(key),
            medication,
            status="completed",
            period=(self.at(days_ago, start), self.at(days_ago, end)),
            dosage=dosage,
        )

    def procedure(
        self, key: str, code: dict[str, Any], days_ago: int, *, clock: str = "13:00:00", body_site: str | None = None
    ) -> dict[str, Any]:
        return self.add_procedure(self.new_id(key), code, self.at(days_ago, clock), body_site=body_site)

    def hemodialysis(self, since_days_ago: int) -> None:
        """Dependence on dialysis since `since_days_ago`, with the last three sessions charted
        (EHRs keep one Procedure per session; three show the current schedule)."""
        self.condition(
            "dialysis-dependence",
            concept("Dependence on renal dialysis", vs(ICD10, "Z99.2")),
            onset_days_ago=since_days_ago,
        )
        self.procedure("hd", concept("Hemodialysis", vs(SNOMED, "302497006")), since_days_ago, clock="07:00:00")
        for days_ago in (6, 4, 2):
            self.procedure("hd", concept("Hemodialysis", vs(SNOMED, "302497006")), days_ago, clock="07:00:00")

    # ----- output ---------------------------------------------------------------------------

    def bundle(self, bundle_type: str = "transaction") -> dict[str, Any]:
        """The scenario as a transaction of PUTs, tagged with the anchor its dates are written against."""
        return self.transaction(
            meta={
                "lastUpdated": f"{ANCHOR.isoformat()}T12:00:00Z",
                "tag": [
                    {
                        "system": ANCHOR_TAG_SYSTEM,
                        "code": ANCHOR.isoformat(),
                        "display": "Dates are written relative to this day; shift them with calcinosis_tools.scenarios.shift_dates",
                    }
                ],
            }
        )


ROUTES = {
    "Oral": concept("Oral", other(SNOMED, "26643006", "Oral route")),
    "Intravenous": concept("Intravenous", other(SNOMED, "47625008", "Intravenous route")),
    "Subcutaneous": concept("Subcutaneous", other(SNOMED, "34206005", "Subcutaneous route")),
}

CALCINOSIS_L94_2 = vs(ICD10, "L94.2")


def expected(
    dystrophic: str, metastatic: str, idiopathic: str, iatrogenic: str, calciphylaxis: str, raised: list[str]
) -> dict[str, Any]:
    return {
        "subtypes": {
            "dystrophic": dystrophic,
            "metastatic": metastatic,
            "idiopathic": idiopathic,
            "iatrogenic": iatrogenic,
            "calciphylaxis": calciphylaxis,
        },
        "raised_differentials": sorted(raised),
    }


Scenario = tuple[Chart, str, dict[str, Any] | None]


# ----- hand-written scenarios ------------------------------------------------------------------


def dystrophic_ssc() -> Scenario:
    c = Chart("cc-dystrophic-ssc")
    c.patient(gender="female", born_days_ago=years(58.4), label="Dystrophic SSc")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of right thumb", CALCINOSIS_L94_2),
        onset_days_ago=60,
        body_sites=["Right thumb"],
    )
    c.condition(
        "ssc",
        concept(
            "Limited cutaneous systemic sclerosis (CREST)", vs(ICD10, "M34.1", "Systemic sclerosis, CR(E)ST syndrome")
        ),
        onset_days_ago=years(14),
    )
    c.condition("raynaud", concept("Raynaud's phenomenon", vs(SNOMED, "266261006")), onset_days_ago=years(16))
    c.condition(
        "gerd",
        concept(
            "Gastro-esophageal reflux disease",
            other(ICD10, "K21.9", "Gastro-esophageal reflux disease without esophagitis"),
        ),
        onset_days_ago=years(9),
    )
    c.mineral_panel(12, calcium=9.4, albumin=4.1, phosphate=3.6)
    c.egfr(88, 12)
    c.creatinine(0.8, 12, low=0.5, high=1.1)
    c.pth(42, 12)
    c.coded_lab(
        "ana",
        vs(LOINC, "8061-4"),
        concept("Positive", other(SNOMED, "10828004", "Positive")),
        years(14),
        "ANA screen",
    )
    c.medication(
        "omeprazole",
        concept("Omeprazole 20 MG Delayed Release Oral Capsule"),
        authored_days_ago=years(3),
        dosage="20 mg by mouth once daily",
    )
    c.medication(
        "nifedipine",
        concept("Nifedipine 30 MG 24HR Extended Release Oral Tablet"),
        authored_days_ago=years(5),
        dosage="30 mg by mouth once daily",
    )
    c.procedure("xray", concept("X-ray of right hand", vs(SNOMED, "363680008")), 10, body_site="Right hand")
    description = "Limited SSc (ICD-10 M34.1) with Raynaud's, calcinosis of the right thumb, normal Ca/albumin/P/PTH/eGFR 12 days ago"
    return c, description, expected("likely", "unlikely", "unlikely", "unlikely", "unlikely", [])


def dystrophic_dm_snomed() -> Scenario:
    c = Chart("cc-dystrophic-dm", zone="-05:00")
    c.patient(gender="female", born_days_ago=years(47.2), label="Dystrophic dermatomyositis")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of elbows, knees and buttocks", vs(SNOMED, "6595006")),
        onset_days_ago=150,
        body_sites=["Left elbow", "Right knee", "Buttock"],
    )
    c.condition("dm", concept("Dermatomyositis", vs(SNOMED, "396230008")), onset_days_ago=years(8))
    c.mineral_panel(20, calcium=9.0, albumin=4.0, phosphate=3.9)
    c.egfr(96, 20)
    c.lab("ck", vs(LOINC, "2157-6"), 145, "U/L", 20, low=26, high=192, text="Creatine kinase")
    c.medication(
        "methotrexate",
        concept("Methotrexate 2.5 MG Oral Tablet"),
        authored_days_ago=years(6),
        dosage="15 mg by mouth once weekly",
    )
    c.medication(
        "hydroxychloroquine",
        concept("Hydroxychloroquine Sulfate 200 MG Oral Tablet"),
        authored_days_ago=years(7),
        dosage="200 mg by mouth twice daily",
    )
    c.medication(
        "folic-acid",
        concept("Folic Acid 1 MG Oral Tablet"),
        authored_days_ago=years(6),
        dosage="1 mg by mouth once daily",
    )
    c.procedure("xray", concept("X-ray of both elbows", vs(SNOMED, "363680008")), 140, body_site="Elbows")
    description = (
        "Dermatomyositis and calcinosis coded in SNOMED CT only (no ICD-10), three body regions, normal mineral labs"
    )
    return c, description, expected("likely", "unlikely", "unlikely", "unlikely", "unlikely", [])


def metastatic_esrd() -> Scenario:
    c = Chart("cc-metastatic-esrd", zone="+01:00")
    c.patient(gender="male", born_days_ago=years(62.5), label="Metastatic ESRD")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis, periarticular nodules of left shoulder", CALCINOSIS_L94_2),
        onset_days_ago=45,
        body_sites=["Left shoulder"],
    )
    c.condition("esrd", concept("End stage renal disease", vs(ICD10, "N18.6")), onset_days_ago=years(3.2))
    c.condition(
        "shpt", concept("Secondary hyperparathyroidism of renal origin", vs(ICD10, "N25.81")), onset_days_ago=years(2.5)
    )
    c.condition(
        "htn",
        concept(
            "Hypertensive chronic kidney disease",
            other(
                ICD10,
                "I12.0",
                "Hypertensive chronic kidney disease with stage 5 chronic kidney disease or end stage renal disease",
            ),
        ),
        onset_days_ago=years(11),
    )
    c.hemodialysis(years(3.1))
    # SI units, as a European lab reports them.
    c.lab("ca", vs(LOINC, "2000-8"), 2.40, "mmol/L", 6, low=2.15, high=2.55, text="Calcium")
    c.lab("alb", vs(LOINC, "1751-7"), 36, "g/L", 6, low=35, high=50, text="Albumin")
    c.lab("phos", vs(LOINC, "14879-1"), 2.55, "mmol/L", 6, low=0.81, high=1.45, text="Phosphate")
    c.lab("pth", vs(LOINC, "14866-8"), 68, "pmol/L", 6, low=1.6, high=6.9, text="PTH, intact")
    c.lab("creat", vs(LOINC, "14682-9"), 820, "umol/L", 6, low=62, high=106, text="Creatinine")
    c.alp(180, 6)
    c.lab("vitd", vs(LOINC, "62292-8"), 24, "ng/mL", 40, low=30, high=100, text="25-OH vitamin D")
    c.medication(
        "sevelamer",
        concept("Sevelamer carbonate 800 MG Oral Tablet"),
        authored_days_ago=years(2.8),
        dosage="1600 mg by mouth three times daily with meals",
    )
    c.medication(
        "calcitriol",
        concept("Calcitriol 0.00025 MG Oral Capsule"),
        authored_days_ago=years(2),
        dosage="0.25 micrograms by mouth once daily",
        dose=(0.25, "ug"),
        timing=(1, 1, "d"),
    )
    c.medication(
        "epoetin",
        concept("Epoetin alfa 4000 UNT/ML Injectable Solution"),
        authored_days_ago=years(2.5),
        dosage="4000 units IV three times weekly at dialysis",
        route="Intravenous",
    )
    description = (
        "ESRD on hemodialysis 3 years, phosphate 2.55 mmol/L, Ca x P about 78 mg²/dL², PTH 68 pmol/L; labs in SI units"
    )
    return c, description, expected("unlikely", "likely", "unlikely", "unlikely", "unlikely", [])


def idiopathic_scrotal() -> Scenario:
    c = Chart("cc-idiopathic-scrotal", zone="-04:00")
    c.patient(gender="male", born_days_ago=years(29.3), label="Idiopathic scrotal")
    c.condition(
        "calcinosis",
        concept("Idiopathic scrotal calcinosis", CALCINOSIS_L94_2),
        onset_days_ago=75,
        body_sites=["Scrotum"],
    )
    c.condition(
        "rhinitis",
        concept("Allergic rhinitis", other(ICD10, "J30.9", "Allergic rhinitis, unspecified")),
        onset_days_ago=years(12),
    )
    c.mineral_panel(15, calcium=9.3, albumin=4.3, phosphate=3.4)
    c.egfr(112, 15)
    c.pth(38, 15)
    c.medication(
        "cetirizine",
        concept("Cetirizine Hydrochloride 10 MG Oral Tablet"),
        authored_days_ago=years(2),
        dosage="10 mg by mouth once daily as needed",
    )
    c.medication(
        "ibuprofen",
        concept("Ibuprofen 400 MG Oral Tablet"),
        authored_days_ago=years(1.5),
        dosage="400 mg by mouth every 8 hours as needed",
        status_code="completed",
        ended_days_ago=years(1.4),
    )
    c.procedure("appendectomy", concept("Appendectomy", other(SNOMED, "80146002", "Appendectomy")), years(9))
    c.procedure(
        "suture",
        concept("Suture open wound", other(SNOMED, "288086009", "Suture open wound")),
        years(4),
        body_site="Left forearm",
    )
    description = (
        "Scrotal calcinosis in a 29-year-old, normal labs, no cause coded; unrelated medications and procedures"
    )
    return c, description, expected("possible", "unlikely", "possible", "unlikely", "unlikely", [])


def iatrogenic_infant() -> Scenario:
    c = Chart("cc-iatrogenic-infant", zone="-05:00")
    c.patient(gender="female", born_days_ago=140, label="Iatrogenic infant")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of left hand at former IV site", CALCINOSIS_L94_2),
        onset_days_ago=10,
        body_sites=["Left hand"],
    )
    c.condition(
        "hypocalcemia",
        concept("Hypocalcemia", other(ICD10, "E83.51", "Hypocalcemia")),
        onset_days_ago=31,
        clinical="resolved",
        abated_days_ago=28,
    )
    c.condition(
        "extravasation",
        concept("Extravasation of calcium gluconate infusion, left hand"),
        onset_days_ago=31,
        clinical="resolved",
        abated_days_ago=24,
        body_sites=["Left hand"],
    )
    # Admission: hypocalcemia before the infusion.
    c.lab(
        "ica", vs(LOINC, "1994-3"), 0.82, "mmol/L", 31, low=1.12, high=1.37, text="Calcium, ionized", clock="07:40:00"
    )
    c.lab("ca", vs(LOINC, "17861-6"), 6.9, "mg/dL", 31, low=8.8, high=10.8, text="Calcium", clock="07:40:00")
    # Follow-up clinic visit, after the nodule appeared.
    c.lab("ica", vs(LOINC, "1994-3"), 1.28, "mmol/L", 9, low=1.12, high=1.37, text="Calcium, ionized")
    c.mineral_panel(
        9,
        calcium=9.6,
        albumin=3.9,
        phosphate=5.8,
        calcium_range=(8.8, 10.8),
        albumin_range=(3.4, 4.7),
        phosphate_range=(4.0, 7.0),
    )
    c.creatinine(0.25, 9, low=0.1, high=0.4)
    c.administration(
        "ca-gluconate",
        concept("Calcium Gluconate 100 MG/ML Injectable Solution"),
        days_ago=31,
        start="09:05:00",
        end="09:35:00",
        route="Intravenous",
        dose=(300, "mg"),
        site="Left hand (peripheral IV)",
    )
    c.medication(
        "vitamin-d",
        concept("Cholecalciferol 400 UNT/ML Oral Solution"),
        authored_days_ago=120,
        dosage="400 units (1 mL) by mouth once daily",
    )
    description = "4-month-old: IV calcium gluconate at a left-hand IV site, nodule there 3 weeks later; current Ca/P normal for age"
    return (
        c,
        description,
        expected(
            "unlikely",
            "unlikely",
            "unlikely",
            "likely",
            "unlikely",
            ["infection-mimic", "progressive-osseous-heteroplasia"],
        ),
    )


def calciphylaxis_coded() -> Scenario:
    c = Chart("cc-calciphylaxis-coded", zone="-05:00")
    c.patient(gender="female", born_days_ago=years(59.1), label="Calciphylaxis coded")
    c.condition(
        "calciphylaxis",
        concept("Calciphylaxis", vs(SNOMED, "237900002")),
        onset_days_ago=12,
        body_sites=["Left thigh", "Abdomen"],
    )
    c.condition(
        "lesion",
        concept("Painful retiform purpura with central eschar, left medial thigh"),
        onset_days_ago=16,
        body_sites=["Left thigh"],
    )
    c.condition("esrd", concept("End stage renal disease", vs(ICD10, "N18.6")), onset_days_ago=years(7.5))
    c.condition(
        "dm2",
        concept(
            "Type 2 diabetes mellitus with diabetic chronic kidney disease",
            other(ICD10, "E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease"),
        ),
        onset_days_ago=years(19),
    )
    c.condition(
        "af",
        concept("Atrial fibrillation", other(ICD10, "I48.91", "Unspecified atrial fibrillation")),
        onset_days_ago=years(2.6),
    )
    c.hemodialysis(years(7.3))
    c.mineral_panel(3, calcium=9.4, albumin=3.1, phosphate=6.4)
    c.pth(1385, 3)
    c.alp(188, 3)
    c.creatinine(7.8, 3, low=0.5, high=1.1)
    c.lab("bmi", vs(LOINC, "39156-5"), 34.2, "kg/m2", 30, text="BMI", category="vital-signs")
    c.medication(
        "warfarin",
        concept("Warfarin Sodium 5 MG Oral Tablet", vs(RXNORM, "855332")),
        authored_days_ago=years(2.5),
        dosage="5 mg by mouth once daily, adjusted to INR",
    )
    c.medication(
        "ca-acetate",
        concept("Calcium acetate 667 MG Oral Capsule"),
        authored_days_ago=years(3),
        dosage="1334 mg by mouth three times daily with meals",
    )
    c.medication(
        "insulin",
        concept("Insulin glargine 100 UNT/ML Injectable Solution"),
        authored_days_ago=years(8),
        dosage="18 units subcutaneously at bedtime",
        route="Subcutaneous",
    )
    c.medication(
        "sts",
        concept("Sodium thiosulfate 250 MG/ML Injectable Solution"),
        authored_days_ago=5,
        dosage="25 g IV three times weekly after dialysis",
        route="Intravenous",
    )
    description = "Calciphylaxis (SNOMED 237900002) on hemodialysis 7 years: warfarin, calcium acetate, PTH 1385 pg/mL, retiform purpura"
    return (
        c,
        description,
        expected("unlikely", "likely", "unlikely", "unlikely", "likely", ["calciphylaxis-mimics"]),
    )


def calciphylaxis_risk() -> Scenario:
    c = Chart("cc-calciphylaxis-risk")
    c.patient(gender="male", born_days_ago=years(71.4), label="Calciphylaxis risk")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of right calf", CALCINOSIS_L94_2),
        onset_days_ago=20,
        body_sites=["Right calf"],
    )
    c.condition("esrd", concept("End stage renal disease", vs(ICD10, "N18.6")), onset_days_ago=years(6.4))
    c.condition(
        "af",
        concept("Atrial fibrillation", other(ICD10, "I48.91", "Unspecified atrial fibrillation")),
        onset_days_ago=years(4),
    )
    c.hemodialysis(years(6.2))
    c.mineral_panel(5, calcium=9.5, albumin=3.9, phosphate=5.2)
    c.pth(420, 5)
    c.creatinine(8.1, 5, low=0.7, high=1.3)
    c.medication(
        "warfarin",
        concept("Warfarin Sodium 5 MG Oral Tablet", vs(RXNORM, "855332")),
        authored_days_ago=years(2),
        dosage="5 mg by mouth once daily, adjusted to INR",
    )
    c.medication(
        "sevelamer",
        concept("Sevelamer carbonate 800 MG Oral Tablet"),
        authored_days_ago=years(5),
        dosage="800 mg by mouth three times daily with meals",
    )
    description = "Calcinosis cutis, no calciphylaxis code: hemodialysis 6 years and warfarin 2 years (two major risk factors), no skin lesion coded: elevated calciphylaxis risk, not suspected calciphylaxis"
    return (
        c,
        description,
        expected("unlikely", "likely", "unlikely", "unlikely", "unlikely", []),
    )


def mixed_ssc_dialysis() -> Scenario:
    c = Chart("cc-mixed-ssc-dialysis", zone="-04:00")
    c.patient(gender="female", born_days_ago=years(63.7), label="Mixed SSc dialysis")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of fingers", CALCINOSIS_L94_2),
        onset_days_ago=90,
        body_sites=["Right thumb", "Left index finger"],
    )
    c.condition(
        "ssc",
        concept("Progressive systemic sclerosis", vs(ICD10, "M34.0", "Progressive systemic sclerosis")),
        onset_days_ago=years(18),
    )
    c.condition(
        "esrd",
        concept("End stage renal disease after scleroderma renal crisis", vs(ICD10, "N18.6")),
        onset_days_ago=years(2.3),
    )
    c.hemodialysis(years(2.2))
    c.mineral_panel(4, calcium=9.8, albumin=3.9, phosphate=7.6)
    c.pth(380, 4)
    c.creatinine(6.9, 4, low=0.5, high=1.1)
    c.medication(
        "mycophenolate",
        concept("Mycophenolate mofetil 500 MG Oral Tablet"),
        authored_days_ago=years(5),
        dosage="1000 mg by mouth twice daily",
    )
    c.medication(
        "sevelamer",
        concept("Sevelamer carbonate 800 MG Oral Tablet"),
        authored_days_ago=years(2),
        dosage="1600 mg by mouth three times daily with meals",
    )
    c.medication(
        "nifedipine",
        concept("Nifedipine 30 MG 24HR Extended Release Oral Tablet"),
        authored_days_ago=years(10),
        dosage="30 mg by mouth once daily",
    )
    description = "Diffuse SSc (M34.0) on hemodialysis 2 years after renal crisis: phosphate 7.6 mg/dL, Ca x P about 75: mixed picture"
    return c, description, expected("possible", "likely", "unlikely", "unlikely", "unlikely", [])


def silent_ckd() -> Scenario:
    c = Chart("cc-silent-ckd", zone="-05:00")
    c.patient(gender="male", born_days_ago=years(68.2), label="Silent CKD")
    c.condition(
        "ckd4", concept("Chronic kidney disease, stage 4 (severe)", vs(ICD10, "N18.4")), onset_days_ago=years(2)
    )
    c.condition(
        "shpt", concept("Secondary hyperparathyroidism of renal origin", vs(ICD10, "N25.81")), onset_days_ago=years(1.5)
    )
    c.condition(
        "dm2",
        concept(
            "Type 2 diabetes mellitus with diabetic chronic kidney disease",
            other(ICD10, "E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease"),
        ),
        onset_days_ago=years(15),
    )
    c.condition(
        "htn",
        concept("Essential hypertension", other(ICD10, "I10", "Essential (primary) hypertension")),
        onset_days_ago=years(20),
    )
    c.mineral_panel(8, calcium=8.9, albumin=3.8, phosphate=5.3)
    c.egfr(24, 8)
    c.egfr(27, 190)
    c.creatinine(2.7, 8, low=0.7, high=1.3)
    c.pth(245, 8)
    c.lab("vitd", vs(LOINC, "62292-8"), 18, "ng/mL", 8, low=30, high=100, text="25-OH vitamin D")
    c.medication(
        "calcitriol",
        concept("Calcitriol 0.00025 MG Oral Capsule"),
        authored_days_ago=years(1),
        dosage="0.25 micrograms by mouth once daily",
        dose=(0.25, "ug"),
        timing=(1, 1, "d"),
    )
    c.medication(
        "sevelamer",
        concept("Sevelamer carbonate 800 MG Oral Tablet"),
        authored_days_ago=years(1),
        dosage="800 mg by mouth three times daily with meals",
    )
    c.medication(
        "insulin",
        concept("Insulin glargine 100 UNT/ML Injectable Solution"),
        authored_days_ago=years(6),
        dosage="22 units subcutaneously at bedtime",
        route="Subcutaneous",
    )
    description = "CKD stage 4 with high phosphate and secondary hyperparathyroidism but no calcinosis documented: the service stays silent"
    return c, description, None


def xanthoma_lipids() -> Scenario:
    c = Chart("cc-xanthoma-lipids", zone="-06:00")
    c.patient(gender="male", born_days_ago=years(52.6), label="Xanthoma lipids")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of elbows (yellowish firm nodules)", CALCINOSIS_L94_2),
        onset_days_ago=40,
        body_sites=["Left elbow", "Right elbow"],
    )
    c.condition(
        "dm2",
        concept(
            "Type 2 diabetes mellitus without complications",
            other(ICD10, "E11.9", "Type 2 diabetes mellitus without complications"),
        ),
        onset_days_ago=years(4),
    )
    c.mineral_panel(30, calcium=9.5, albumin=4.4, phosphate=3.3)
    c.egfr(84, 30)
    c.lab("chol", vs(LOINC, "2093-3"), 318, "mg/dL", 30, high=200, text="Cholesterol, total")
    c.lab("ldl", vs(LOINC, "18262-6"), 236, "mg/dL", 30, high=130, text="LDL cholesterol")
    c.lab("tg", vs(LOINC, "2571-8"), 412, "mg/dL", 30, high=150, text="Triglycerides")
    c.lab("hdl", other(LOINC, "2085-9", LOINC_DISPLAY["2085-9"]), 36, "mg/dL", 30, low=40, text="HDL cholesterol")
    c.medication(
        "metformin",
        concept(
            "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
            other(RXNORM, "860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
        ),
        authored_days_ago=years(4),
        dosage="1000 mg by mouth once daily",
    )
    c.medication(
        "atorvastatin",
        concept("Atorvastatin 40 MG Oral Tablet"),
        authored_days_ago=25,
        dosage="40 mg by mouth once daily",
    )
    description = "Nodules on both elbows coded as calcinosis cutis; cholesterol 318, LDL 236, triglycerides 412 mg/dL a month ago"
    return c, description, expected("possible", "unlikely", "possible", "unlikely", "unlikely", ["xanthoma"])


def primary_hyperoxaluria() -> Scenario:
    c = Chart("cc-hyperoxaluria")
    c.patient(gender="male", born_days_ago=years(23.8), label="Primary hyperoxaluria")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of fingertips", CALCINOSIS_L94_2),
        onset_days_ago=35,
        body_sites=["Right middle finger", "Left ring finger"],
    )
    c.condition("ph1", concept("Primary hyperoxaluria, type 1", vs(ICD10, "E72.530")), onset_days_ago=years(15))
    c.condition(
        "stones", concept("Calculus of kidney", other(ICD10, "N20.0", "Calculus of kidney")), onset_days_ago=years(16)
    )
    c.condition(
        "ckd4", concept("Chronic kidney disease, stage 4 (severe)", vs(ICD10, "N18.4")), onset_days_ago=years(1.2)
    )
    c.mineral_panel(14, calcium=9.2, albumin=4.1, phosphate=4.4)
    c.egfr(21, 14)
    c.egfr(24, 150)
    c.creatinine(3.9, 14, low=0.7, high=1.3)
    c.pth(98, 14)
    c.medication(
        "k-citrate",
        concept("Potassium citrate 10 MEQ Extended Release Oral Tablet"),
        authored_days_ago=years(10),
        dosage="20 mEq by mouth twice daily",
    )
    c.medication(
        "pyridoxine",
        concept("Pyridoxine hydrochloride 50 MG Oral Tablet"),
        authored_days_ago=years(14),
        dosage="100 mg by mouth twice daily",
    )
    c.procedure("eswl", concept("Extracorporeal shockwave lithotripsy of kidney stone"), years(6))
    description = "Primary hyperoxaluria type 1 (E72.530) with kidney stones since childhood and CKD stage 4; fingertip deposits coded as calcinosis"
    return (
        c,
        description,
        expected("possible", "unlikely", "unlikely", "unlikely", "unlikely", ["primary-hyperoxaluria"]),
    )


def osteoma_php() -> Scenario:
    c = Chart("cc-osteoma-php", zone="-05:00")
    c.patient(gender="female", born_days_ago=years(15.6), label="Osteoma PHP")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis, firm plaques of left thigh", CALCINOSIS_L94_2),
        onset_days_ago=90,
        body_sites=["Left thigh"],
    )
    c.condition(
        "php",
        concept("Pseudohypoparathyroidism type 1a (Albright hereditary osteodystrophy)", vs(ICD10, "E20.1")),
        onset_days_ago=years(9),
    )
    c.condition(
        "hypothyroid",
        concept("Hypothyroidism", other(ICD10, "E03.9", "Hypothyroidism, unspecified")),
        onset_days_ago=years(12),
    )
    c.mineral_panel(21, calcium=8.3, albumin=4.3, phosphate=6.1, calcium_range=(8.8, 10.8), phosphate_range=(3.0, 5.4))
    c.pth(186, 21)
    c.egfr(105, 21, code="69405-9")
    c.creatinine(0.6, 21, low=0.5, high=1.0)
    c.lab("vitd", vs(LOINC, "62292-8"), 32, "ng/mL", 21, low=30, high=100, text="25-OH vitamin D")
    c.medication(
        "calcitriol",
        concept("Calcitriol 0.00025 MG Oral Capsule"),
        authored_days_ago=years(8),
        dosage="0.25 micrograms by mouth twice daily",
        dose=(0.25, "ug"),
        timing=(2, 1, "d"),
    )
    c.medication(
        "calcium",
        concept("Calcium Carbonate 500 MG Chewable Tablet", vs(RXNORM, "1897")),
        authored_days_ago=years(8),
        dosage="500 mg by mouth three times daily",
    )
    c.medication(
        "levothyroxine",
        concept("Levothyroxine Sodium 0.075 MG Oral Tablet"),
        authored_days_ago=years(12),
        dosage="75 micrograms by mouth once daily",
    )
    description = "15-year-old with pseudohypoparathyroidism 1a (E20.1): low Ca, high P and PTH; thigh plaques coded as calcinosis"
    return (
        c,
        description,
        expected(
            "unlikely",
            "likely",
            "unlikely",
            "unlikely",
            "unlikely",
            ["osteoma-cutis", "progressive-osseous-heteroplasia"],
        ),
    )


def poh_infant() -> Scenario:
    c = Chart("cc-poh-infant", zone="-05:00")
    c.patient(gender="male", born_days_ago=320, label="POH infant")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis, plaque-like, right thigh and buttock", CALCINOSIS_L94_2),
        onset_days_ago=60,
        body_sites=["Right thigh", "Right buttock"],
    )
    c.mineral_panel(
        25,
        calcium=9.9,
        albumin=4.2,
        phosphate=5.6,
        calcium_range=(8.8, 10.8),
        albumin_range=(3.4, 4.7),
        phosphate_range=(4.3, 6.8),
    )
    c.creatinine(0.3, 25, low=0.1, high=0.4)
    c.lab("alp", vs(LOINC, "6768-6"), 265, "U/L", 25, low=120, high=390, text="Alkaline phosphatase")
    c.medication(
        "vitamin-d",
        concept("Cholecalciferol 400 UNT/ML Oral Solution"),
        authored_days_ago=300,
        dosage="400 units (1 mL) by mouth once daily",
    )
    c.procedure("xray", concept("X-ray of right femur", vs(SNOMED, "363680008")), 24, body_site="Right thigh")
    description = "10-month-old with plaque-like dermal calcification since 8 months, normal labs for age, no exposure"
    return (
        c,
        description,
        expected("possible", "unlikely", "possible", "unlikely", "unlikely", ["progressive-osseous-heteroplasia"]),
    )


# ----- issue 12 scenarios ---------------------------------------------------------------------------


def calciphylaxis_necrotic_uncoded() -> Scenario:
    c = Chart("cc-calciphylaxis-uncoded", zone="-06:00")
    c.patient(gender="female", born_days_ago=years(64.2), label="Calciphylaxis uncoded")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis, indurated plaques of left thigh", CALCINOSIS_L94_2),
        onset_days_ago=30,
        body_sites=["Left thigh"],
    )
    c.condition(
        "ulcer",
        concept("Necrotic ulcer with black eschar, left medial thigh, exquisitely painful"),
        onset_days_ago=9,
        body_sites=["Left thigh"],
    )
    c.condition("esrd", concept("End stage renal disease", vs(ICD10, "N18.6")), onset_days_ago=years(7.8))
    c.hemodialysis(years(7.1))
    c.mineral_panel(4, calcium=9.4, albumin=3.1, phosphate=6.4)
    c.pth(1240, 4)
    c.creatinine(7.2, 4, low=0.5, high=1.1)
    c.medication(
        "warfarin",
        concept("Warfarin Sodium 5 MG Oral Tablet", vs(RXNORM, "855332")),
        authored_days_ago=years(2.1),
        dosage="5 mg by mouth once daily, adjusted to INR",
    )
    c.medication(
        "ca-acetate",
        concept("Calcium acetate 667 MG Oral Capsule"),
        authored_days_ago=years(1.5),
        dosage="1334 mg by mouth three times daily with meals",
    )
    description = (
        "Hemodialysis 7 years, warfarin, calcium acetate, PTH 1240 pg/mL, and a necrotic ulcer with eschar "
        "on the thigh recorded as text only: suspected calciphylaxis without a calciphylaxis code"
    )
    return c, description, expected("unlikely", "likely", "unlikely", "unlikely", "likely", ["calciphylaxis-mimics"])


def milk_alkali() -> Scenario:
    c = Chart("cc-milk-alkali", zone="-05:00")
    c.patient(gender="female", born_days_ago=years(58.6), label="Milk-alkali")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of fingertips", CALCINOSIS_L94_2),
        onset_days_ago=20,
        body_sites=["Right index finger", "Left middle finger"],
    )
    c.condition(
        "gerd",
        concept(
            "Gastro-esophageal reflux disease",
            other(ICD10, "K21.9", "Gastro-esophageal reflux disease without esophagitis"),
        ),
        onset_days_ago=years(6),
    )
    c.condition(
        "aki", concept("Acute kidney injury", vs(ICD10, "N17.9", "Acute kidney failure, unspecified")), onset_days_ago=8
    )
    c.mineral_panel(6, calcium=12.6, albumin=4.1, phosphate=4.9)
    c.lab("ca", vs(LOINC, "17861-6"), 12.3, "mg/dL", 30, low=8.6, high=10.3, text="Calcium")
    c.lab("co2", vs(LOINC, "2028-9"), 33, "mmol/L", 6, low=22, high=29, text="CO2, total")
    c.creatinine(2.1, 6, low=0.5, high=1.1)
    c.lab("pth", vs(LOINC, "2731-8"), 9, "pg/mL", 6, low=15, high=65, text="PTH, intact")
    c.lab("vitd", vs(LOINC, "62292-8"), 36, "ng/mL", 6, low=30, high=100, text="25-OH vitamin D")
    c.medication(
        "ca-carbonate",
        concept("Calcium Carbonate 1250 MG Chewable Tablet", vs(RXNORM, "1897")),
        authored_days_ago=years(1.2),
        dosage="2 tablets by mouth four times daily as needed for heartburn",
    )
    c.medication(
        "omeprazole",
        concept("Omeprazole 20 MG Delayed Release Oral Capsule"),
        authored_days_ago=years(3),
        dosage="20 mg by mouth once daily",
    )
    description = (
        "Calcium carbonate antacid for reflux with calcium 12.6 mg/dL on two draws, bicarbonate 33 mmol/L, "
        "PTH 9 pg/mL and a coded acute kidney injury: milk-alkali syndrome, not CKD"
    )
    return c, description, expected("unlikely", "likely", "unlikely", "unlikely", "unlikely", [])


def tumoral_adolescent() -> Scenario:
    c = Chart("cc-tumoral-adolescent", zone="-05:00")
    c.patient(gender="male", born_days_ago=years(17.2), label="Tumoral calcinosis adolescent")
    c.condition(
        "calcinosis",
        concept("Periarticular tumoral calcinosis, right hip", CALCINOSIS_L94_2),
        onset_days_ago=70,
        body_sites=["Right hip"],
    )
    c.mineral_panel(
        12,
        calcium=9.6,
        albumin=4.4,
        phosphate=7.1,
        calcium_range=(8.8, 10.6),
        albumin_range=(3.6, 5.1),
        phosphate_range=(2.7, 4.5),
    )
    c.creatinine(0.8, 12, low=0.5, high=1.0)
    c.pth(31, 12)
    c.lab("height", vs(LOINC, "8302-2"), 172, "cm", 40, text="Body height", category="vital-signs")
    c.medication(
        "ibuprofen",
        concept("Ibuprofen 400 MG Oral Tablet"),
        authored_days_ago=60,
        dosage="400 mg by mouth every 8 hours as needed",
    )
    c.procedure("xray", concept("X-ray of right hip", vs(SNOMED, "363680008")), 65, body_site="Right hip")
    description = (
        "17-year-old with periarticular hip masses: phosphate 7.1 mg/dL, normal calcium and creatinine, no eGFR "
        "reported (bedside Schwartz from the measured height): hyperphosphatemic familial tumoral calcinosis"
    )
    return (
        c,
        description,
        expected("unlikely", "possible", "unlikely", "unlikely", "unlikely", ["hyperphosphatemic-tumoral-calcinosis"]),
    )


def infant_extravasation() -> Scenario:
    c = Chart("cc-infant-extravasation", zone="-06:00")
    c.patient(gender="male", born_days_ago=38, label="Infant extravasation")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis, firm red swelling of right foot dorsum", CALCINOSIS_L94_2),
        onset_days_ago=6,
        body_sites=["Right foot"],
    )
    c.condition(
        "hypocalcemia",
        concept("Neonatal hypocalcemia", other(ICD10, "P71.1", "Other neonatal hypocalcemia")),
        onset_days_ago=27,
        clinical="resolved",
        abated_days_ago=22,
    )
    c.mineral_panel(
        5,
        calcium=9.9,
        albumin=3.6,
        phosphate=6.6,
        calcium_range=(8.8, 11.0),
        albumin_range=(2.8, 4.4),
        phosphate_range=(4.8, 8.2),
    )
    c.creatinine(0.3, 5, low=0.2, high=0.5)
    c.administration(
        "ca-gluconate",
        concept("Calcium Gluconate 100 MG/ML Injectable Solution"),
        days_ago=26,
        start="03:10:00",
        end="03:40:00",
        route="Intravenous",
        dose=(200, "mg"),
        site="Right foot, dorsal vein (peripheral IV)",
    )
    description = (
        "5-week-old after IV calcium gluconate into a right-foot vein; a red, firm swelling there 3 weeks later: "
        "extravasation calcinosis, which is mistaken for cellulitis or osteomyelitis"
    )
    return (
        c,
        description,
        expected(
            "unlikely",
            "unlikely",
            "unlikely",
            "likely",
            "unlikely",
            ["infection-mimic", "progressive-osseous-heteroplasia"],
        ),
    )


def nonuremic_calciphylaxis() -> Scenario:
    c = Chart("cc-nonuremic-calciphylaxis", zone="-07:00")
    c.patient(gender="female", born_days_ago=years(61.3), label="Non-uremic calciphylaxis")
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of both thighs", CALCINOSIS_L94_2),
        onset_days_ago=25,
        body_sites=["Left thigh", "Right thigh"],
    )
    c.condition(
        "purpura",
        concept("Painful retiform purpura with necrotic ulcers, both thighs"),
        onset_days_ago=14,
        body_sites=["Left thigh", "Right thigh"],
    )
    c.condition(
        "sle",
        concept("Systemic lupus erythematosus", vs(ICD10, "M32.9", "Systemic lupus erythematosus, unspecified")),
        onset_days_ago=years(12),
    )
    c.condition("ald", concept("Alcoholic liver disease"), onset_days_ago=years(4))
    c.condition(
        "af",
        concept("Atrial fibrillation", other(ICD10, "I48.91", "Unspecified atrial fibrillation")),
        onset_days_ago=years(3),
    )
    c.mineral_panel(7, calcium=9.2, albumin=2.9, phosphate=3.7)
    c.egfr(92, 7)
    c.creatinine(0.7, 7, low=0.5, high=1.1)
    c.pth(48, 7)
    c.medication(
        "warfarin",
        concept("Warfarin Sodium 5 MG Oral Tablet", vs(RXNORM, "855332")),
        authored_days_ago=years(2.5),
        dosage="5 mg by mouth once daily, adjusted to INR",
    )
    c.medication(
        "prednisone",
        concept("Prednisone 10 MG Oral Tablet", vs(RXNORM, "8640")),
        authored_days_ago=years(1.5),
        dosage="10 mg by mouth once daily",
    )
    description = (
        "Normal kidney function (eGFR 92): lupus, alcoholic liver disease, warfarin, prednisone and albumin 2.9 g/dL "
        "with painful retiform purpura and necrotic ulcers on both thighs: suspected non-uremic calciphylaxis"
    )
    return c, description, expected("likely", "unlikely", "unlikely", "unlikely", "possible", ["calciphylaxis-mimics"])


# ----- Synthea-based scenarios -----------------------------------------------------------------

DROP_TYPES = {"Claim", "ExplanationOfBenefit"}


def _dates(node: Any, found: list[date]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "birthDate":
                _dates(value, found)
    elif isinstance(node, list):
        for value in node:
            _dates(value, found)
    elif isinstance(node, str) and shift_date_string(node, 1) != node:  # a date, as shift_dates sees it
        found.append(date.fromisoformat(node[:10]))


def synthea_chart(prefix: str, patient_id: str, last_days_ago: int) -> Chart:
    """A Synthea chart as a Chart: stable ids, Type/id references, billing dropped, dates moved
    so that its latest date falls `last_days_ago` days before the anchor."""
    path = next(SYNTHEA.glob(f"{prefix}_*.json"))
    source = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for e in source["entry"] if e["resource"]["resourceType"] not in DROP_TYPES]
    counters: dict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
    new_reference: dict[str, str] = {}
    for entry in entries:
        kind = entry["resource"]["resourceType"]
        new_id = patient_id if kind == "Patient" else f"{patient_id}-{kind.lower()}-{next(counters[kind]):04d}"
        new_reference[entry["fullUrl"]] = f"{kind}/{new_id}"

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        if isinstance(node, str) and node in new_reference:
            return new_reference[node]
        return node

    resources = []
    for entry in entries:
        resource = rewrite(entry["resource"])
        resource["id"] = new_reference[entry["fullUrl"]].split("/", 1)[1]
        if resource["resourceType"] == "Patient":
            # Synthea let this patient die; a chart reviewed at the anchor needs a living one.
            resource.pop("deceasedDateTime", None)
            resource["identifier"].append({"system": IDENTIFIER_SYSTEM, "value": patient_id})
        resources.append(resource)
    found: list[date] = []
    _dates(resources, found)
    latest = max(found)
    moved = shift_dates({"r": resources}, latest, ANCHOR - timedelta(days=last_days_ago))["r"]
    chart = Chart(patient_id)
    chart.resources = list(moved)
    return chart


def gout_synthea() -> Scenario:
    c = synthea_chart("Truman_Wiegand", "cc-gout-synthea", last_days_ago=40)
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of left elbow", CALCINOSIS_L94_2),
        onset_days_ago=21,
        body_sites=["Left elbow"],
    )
    description = "Synthea chart (Truman Wiegand): gout since 1994 (allopurinol, colchicine), diabetes, hypertriglyceridemia; calcinosis of the left elbow added"
    # Synthea reports no phosphate: the gate cannot pass; calcium without albumin is uncorrected.
    return (
        c,
        description,
        expected("undetermined", "undetermined", "undetermined", "unlikely", "unlikely", ["gouty-tophus", "xanthoma"]),
    )


def insufficient_data_synthea() -> Scenario:
    c = synthea_chart("Josue_Sipes", "cc-insufficient-data", last_days_ago=120)
    # A nephrology follow-up after the last Synthea visit (120 days ago): a complete panel, but
    # outside the 90-day gate window.
    c.mineral_panel(100, calcium=9.3, albumin=4.0, phosphate=3.8)
    c.egfr(78, 100)
    c.condition(
        "calcinosis",
        concept("Calcinosis cutis of right index finger", CALCINOSIS_L94_2),
        onset_days_ago=14,
        body_sites=["Right index finger"],
    )
    description = "Synthea chart (Josue Sipes, CKD stage 2, diabetes, hyperlipidemia): calcinosis recorded 14 days ago, last Ca/albumin/P/eGFR 100 days old"
    return (
        c,
        description,
        expected("undetermined", "undetermined", "undetermined", "unlikely", "unlikely", ["xanthoma"]),
    )


SCENARIOS = {
    "dystrophic-ssc": dystrophic_ssc,
    "dystrophic-dm-snomed": dystrophic_dm_snomed,
    "metastatic-esrd-si-units": metastatic_esrd,
    "idiopathic-scrotal": idiopathic_scrotal,
    "iatrogenic-infant-iv-calcium": iatrogenic_infant,
    "calciphylaxis-coded": calciphylaxis_coded,
    "calciphylaxis-risk-pattern": calciphylaxis_risk,
    "mixed-ssc-dialysis": mixed_ssc_dialysis,
    "insufficient-data-synthea": insufficient_data_synthea,
    "silent-ckd": silent_ckd,
    "gout-synthea": gout_synthea,
    "xanthoma-lipids": xanthoma_lipids,
    "primary-hyperoxaluria": primary_hyperoxaluria,
    "osteoma-cutis-php": osteoma_php,
    "poh-infant": poh_infant,
    "calciphylaxis-necrotic-uncoded": calciphylaxis_necrotic_uncoded,
    "milk-alkali": milk_alkali,
    "tumoral-calcinosis-adolescent": tumoral_adolescent,
    "infant-extravasation": infant_extravasation,
    "nonuremic-calciphylaxis": nonuremic_calciphylaxis,
}


def _write_bundle(path: Path, bundle: dict[str, Any], compact_entries: bool) -> None:
    """Hand-written charts fully indented; Synthea charts one entry per line (900 entries)."""
    if not compact_entries:
        path.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    head = {k: v for k, v in bundle.items() if k != "entry"}
    lines = json.dumps(head, indent=2, ensure_ascii=False)[:-2].rstrip("\n")
    body = ",\n".join("    " + json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in bundle["entry"])
    path.write_text(f'{lines},\n  "entry": [\n{body}\n  ]\n}}\n', encoding="utf-8")


def main() -> None:
    index: dict[str, Any] = {
        "about": "Expected outcome of each sandbox scenario at the anchor day (assessed at 12:00 UTC). "
        "'expected' is null when the service must stay silent; otherwise every subtype's likelihood "
        "and the differentials the record must raise (the others are only listed for consideration).",
        "anchor": ANCHOR.isoformat(),
        "scenarios": {},
    }
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, build in SCENARIOS.items():
        chart, description, outcome = build()
        bundle = chart.bundle()
        _write_bundle(HERE / f"{name}.json", bundle, compact_entries=len(bundle["entry"]) > 100)
        index["scenarios"][f"{name}.json"] = {
            "patient_id": chart.patient_id,
            "description": description,
            "expected": outcome,
        }
    (HERE / EXPECTED_FILE).write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
