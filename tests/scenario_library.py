"""The scenario library: every chart the card tests, the knowledge-diff and the preview review run.

Three kinds of chart, as the clinical reviewer meets them:
- the sandbox patients (deploy/fhir-sandbox/patients), one per clinical scenario;
- test charts built here with the shared chart builder, for pictures the sandbox does not carry
  (severe hypercalcemia, a child's solitary nodule, SI units with the lab's own range, ...);
- Synthea backgrounds (../shared/data/synthea): real-shaped records of many resources with
  calcinosis cutis added to the problem list, so the cards are read against a noisy chart.

Test tooling, not runtime: `python -m tests.scenario_library OUT_DIR` writes the test charts and the
Synthea backgrounds as FHIR Bundles, for `scripts/calcinosis-tools knowledge-diff --scenarios OUT_DIR`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from calcinosis_tools.scenarios import ANCHOR, load_scenarios
from tests.charts import AS_OF, SNOMED, SYNTHEA, Chart, synthea_resources


@dataclass(frozen=True, slots=True)
class LibraryChart:
    """One chart of the library: a name for reports, the patient, its resources and the moment
    it is read at."""

    name: str
    kind: str
    patient_id: str
    resources: list[dict[str, Any]]
    as_of: datetime

    def bundle(self) -> dict[str, Any]:
        """The chart as a collection Bundle."""
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in self.resources]}


def _severe_hypercalcemia() -> Chart:
    chart = Chart("lib-severe-ca")
    chart.calcinosis(body_sites=["left forearm"])
    chart.lab("17861-6", 14.6, "mg/dL", 3, low=8.5, high=10.2)
    chart.lab("17861-6", 14.2, "mg/dL", 10, low=8.5, high=10.2)
    chart.lab("1751-7", 4.1, "g/dL", 3)
    chart.lab("2777-1", 3.1, "mg/dL", 3, low=2.5, high=4.5)
    chart.lab("98979-8", 72, "mL/min/{1.73_m2}", 3)
    chart.lab("2731-8", 8, "pg/mL", 3, low=15, high=65)
    chart.condition("C50.911", display="Malignant neoplasm of right female breast")
    return chart


def _child_eyelid_nodule() -> Chart:
    chart = Chart("lib-child-eyelid", gender="male", birth_date="2021-06-01")
    chart.calcinosis(body_sites=["right upper eyelid"])
    chart.lab("17861-6", 9.8, "mg/dL", 10, low=8.8, high=10.8)
    chart.lab("1751-7", 4.3, "g/dL", 10)
    chart.lab("2777-1", 5.4, "mg/dL", 10, low=4.0, high=6.5)
    return chart


def _si_metastatic() -> Chart:
    chart = Chart("lib-si-units", gender="male", birth_date="1958-02-03")
    chart.calcinosis(body_sites=["both hands"])
    chart.lab("2000-8", 2.61, "mmol/L", 4, low=2.2, high=2.6)
    chart.lab("1751-7", 36, "g/L", 4, low=35, high=50)
    chart.lab("14879-1", 2.55, "mmol/L", 4, low=0.81, high=1.45)
    chart.lab("98979-8", 11, "mL/min/{1.73_m2}", 4)
    chart.lab("98979-8", 12, "mL/min/{1.73_m2}", 200)
    chart.lab("2731-8", 84.0, "pmol/L", 4, low=1.6, high=6.9)
    chart.condition("N18.5", display="Chronic kidney disease, stage 5")
    return chart


def _dialysis_necrotic_ulcer() -> Chart:
    chart = Chart("lib-cpx-ulcer", birth_date="1955-09-09")
    chart.calcinosis(body_sites=["left thigh"])
    chart.condition(
        "L98.499", display="Non-pressure chronic ulcer of skin with necrosis", text="Necrotic ulcer with eschar"
    )
    chart.condition("Z99.2", display="Dependence on renal dialysis", onset_days_ago=2900)
    chart.dialysis(2900, sessions_every=120)
    chart.medication("warfarin sodium 5 MG Oral Tablet", 800, rxnorm="855332")
    chart.medication("calcium acetate 667 MG Oral Capsule", 560, rxnorm="199422")
    chart.mineral_panel(9.6, 3.4, 6.8, 5, egfr=None)
    chart.lab("2731-8", 1240, "pg/mL", 20, low=15, high=65)
    return chart


def _no_data() -> Chart:
    chart = Chart("lib-no-labs")
    chart.calcinosis()
    return chart


def _dystrophic_ssc() -> Chart:
    chart = Chart("lib-ssc")
    chart.calcinosis(body_sites=["right index finger"])
    chart.condition("M34.1", display="CR(E)ST syndrome")
    chart.condition("I73.00", display="Raynaud's syndrome without gangrene")
    chart.mineral_panel(9.4, 4.1, 3.6, 8)
    chart.procedure("Plain radiograph of hand", 20, code="363680008")
    return chart


def _gout_mimic() -> Chart:
    chart = Chart("lib-gout", gender="male", birth_date="1960-01-01")
    chart.calcinosis(body_sites=["left elbow"])
    chart.condition("M10.9", display="Gout, unspecified")
    chart.lab("3084-1", 10.2, "mg/dL", 20, low=3.5, high=7.2)
    chart.mineral_panel(9.2, 4.2, 3.4, 20)
    return chart


TEST_CHARTS: dict[str, Callable[[], Chart]] = {
    "chart-severe-hypercalcemia": _severe_hypercalcemia,
    "chart-child-eyelid-nodule": _child_eyelid_nodule,
    "chart-si-units-ckd5": _si_metastatic,
    "chart-dialysis-necrotic-ulcer": _dialysis_necrotic_ulcer,
    "chart-no-labs": _no_data,
    "chart-dystrophic-ssc": _dystrophic_ssc,
    "chart-gout-mimic": _gout_mimic,
}


def synthea_background(path: Path) -> LibraryChart:
    """A Synthea record with calcinosis cutis added to its problem list."""
    patient_id, resources = synthea_resources(path.name.split("_")[0] + "_" + path.name.split("_")[1])
    resources = json.loads(json.dumps(resources).replace(f"urn:uuid:{patient_id}", f"Patient/{patient_id}"))
    resources.append(
        {
            "resourceType": "Condition",
            "id": "library-calcinosis",
            "subject": {"reference": f"Patient/{patient_id}"},
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "L94.2"}]},
            "bodySite": [{"coding": [{"system": SNOMED, "code": "85050009", "display": "Forearm"}], "text": "forearm"}],
        }
    )
    return LibraryChart(f"synthea-{path.name.split('_')[0].lower()}", "synthea", patient_id, resources, AS_OF)


def library(*, sandbox: bool = True, charts: bool = True, synthea: bool = True) -> list[LibraryChart]:
    """Every chart of the library (the sandbox read at its anchor day)."""
    found: list[LibraryChart] = []
    if sandbox:
        anchor = datetime.combine(ANCHOR, time(12), tzinfo=UTC)
        for scenario in load_scenarios():
            resources = [entry["resource"] for entry in scenario.bundle.get("entry", [])]
            found.append(LibraryChart(scenario.name, "sandbox", scenario.patient_id, resources, anchor))
    if charts:
        for name, build in TEST_CHARTS.items():
            chart = build()
            found.append(LibraryChart(name, "chart", chart.patient_id, chart.resources, AS_OF))
    if synthea and SYNTHEA.is_dir():
        found.extend(synthea_background(path) for path in sorted(SYNTHEA.glob("*_*.json")))
    return found


def write_library(folder: Path) -> list[Path]:
    """The test charts and Synthea backgrounds as Bundle files (the sandbox is read in place)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in library(sandbox=False):
        path = folder / f"{chart.name}.json"
        path.write_text(json.dumps(chart.bundle(), indent=1), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_library(Path(sys.argv[1] if len(sys.argv) > 1 else "scenario-library")):
        print(written_path)
