"""Writes the sandbox's draft-order scenarios (one `draftOrders` Bundle per file) and expected.json.

    .venv/bin/python deploy/fhir-sandbox/draft-orders/generate.py

Every Bundle is written by the test tooling's one chart builder (`tests.fhir_chart`), the same
builder the in-process order scenarios (tests/test_order_scenarios.py) and the benchmark's draft
orders use, so an order reaches the service in one shape whether it is tried in process or against
the sandbox. The JSON files are what the tests, the sandbox and `calcinosis-cds check
--draft-orders` read; tests/test_order_sandbox.py checks that they are what this script writes.

The expected cards are written from clinical-knowledge.md section 15 (indicator, topic and the rule
that must produce each card, in response order; [] is silence), not computed by the service.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from tests.fhir_chart import FhirChart  # noqa: E402

EXPECTED_FILE = "expected.json"
ABOUT = (
    "Draft-order scenarios for the order-sign service: each file is a draftOrders Bundle for a patient of "
    "../patients (load them first), written by generate.py. 'cards' lists, in response order, each card's "
    "indicator, topic and the rule that produced it (card extension); [] means the service must stay silent. "
    "`calcinosis-cds check --draft-orders FILE` runs one against a FHIR server."
)

Card = tuple[str, str, str]


def warfarin_calciphylaxis_coded(drafts: FhirChart) -> None:
    drafts.add_draft_medication("draft-warfarin", "warfarin sodium 5 MG Oral Tablet", rxnorm="855332", route="oral")


def calcium_acetate_risk_pattern(drafts: FhirChart) -> None:
    drafts.add_draft_medication(
        "draft-calcium-acetate",
        "calcium acetate 667 MG Oral Capsule",
        route="oral",
        dosage_text="2 capsules with each meal",
    )


def calcitriol_iv_phosphate_metastatic(drafts: FhirChart) -> None:
    drafts.add_draft_medication("draft-calcitriol", "calcitriol 0.25 MCG Oral Capsule", rxnorm="308867", route="oral")
    drafts.add_draft_medication(
        "draft-phosphate", "potassium phosphates 3 MMOL/ML Injectable Solution", route="intravenous"
    )


def warfarin_ssc(drafts: FhirChart) -> None:
    drafts.add_draft_medication("draft-warfarin-ssc", "warfarin sodium 1 MG Oral Tablet", rxnorm="855288", route="oral")


def repeat_pth_ssc(drafts: FhirChart) -> None:
    drafts.add_draft_test("draft-pth", "Parathyrin.intact [Mass/volume] in Serum or Plasma", loinc="2731-8")


def lactated_ringers_calciphylaxis(drafts: FhirChart) -> None:
    drafts.add_draft_medication("draft-ringer", "Lactated Ringer's Injectable Solution 1000 mL", route="intravenous")


def parenteral_nutrition_infant_iatrogenic(drafts: FhirChart) -> None:
    drafts.add_draft_medication(
        "draft-pn",
        "Parenteral nutrition (neonatal) with calcium gluconate 2 mEq and potassium phosphate 1.5 mmol per 100 mL",
        route="intravenous",
    )


#: File stem -> (patient, description, how the orders are written, the cards expected).
SCENARIOS: dict[str, tuple[str, str, Callable[[FhirChart], None], list[Card]]] = {
    "warfarin-calciphylaxis-coded": (
        "cc-calciphylaxis-coded",
        "Warfarin renewal for the patient with coded calciphylaxis on hemodialysis",
        warfarin_calciphylaxis_coded,
        [("warning", "order-check", "calciphylaxis-vitamin-k-antagonist")],
    ),
    "calcium-acetate-risk-pattern": (
        "cc-calciphylaxis-risk",
        "Calcium acetate with meals for the dialysis patient with the calciphylaxis risk pattern",
        calcium_acetate_risk_pattern,
        [("warning", "order-check", "calciphylaxis-calcium-binder")],
    ),
    "calcitriol-iv-phosphate-metastatic": (
        "cc-metastatic-esrd",
        "Calcitriol and IV potassium phosphate for the hemodialysis patient with phosphate 2.55 mmol/L and Ca x P "
        "about 78",
        calcitriol_iv_phosphate_metastatic,
        [
            ("warning", "order-check", "calciphylaxis-active-vitamin-d"),
            ("warning", "order-check", "metastatic-phosphate"),
        ],
    ),
    "warfarin-ssc": (
        "cc-dystrophic-ssc",
        "Low-dose warfarin for dystrophic calcinosis in limited SSc: a reported treatment, never a card (section 15.4)",
        warfarin_ssc,
        [],
    ),
    "repeat-pth-ssc": (
        "cc-dystrophic-ssc",
        "Intact PTH ordered again 12 days after a normal result",
        repeat_pth_ssc,
        [("info", "repeat-lab", "repeat-pth")],
    ),
    "lactated-ringers-calciphylaxis": (
        "cc-calciphylaxis-coded",
        "Lactated Ringer's infusion for the patient with coded calciphylaxis: lists calcium chloride, never a card "
        "(section 15.0)",
        lactated_ringers_calciphylaxis,
        [],
    ),
    "parenteral-nutrition-infant-iatrogenic": (
        "cc-iatrogenic-infant",
        "Parenteral nutrition with calcium gluconate for the infant with calcinosis after IV calcium, calcium "
        "normal for age: not an IV calcium order, so no infusion precaution; its calcium is checked only against "
        "a high calcium or Ca x P (section 15.0, 15.2)",
        parenteral_nutrition_infant_iatrogenic,
        [],
    ),
}


def bundles() -> dict[str, dict[str, Any]]:
    """File name -> the draftOrders Bundle, as the builder writes it."""
    written: dict[str, dict[str, Any]] = {}
    for stem, (patient_id, _, write, _) in SCENARIOS.items():
        drafts = FhirChart(patient_id)
        write(drafts)
        written[f"{stem}.json"] = drafts.bundle()
    return written


def expected() -> dict[str, Any]:
    """expected.json: the patient, description and expected cards of every file."""
    return {
        "about": ABOUT,
        "scenarios": {
            f"{stem}.json": {"patient_id": patient_id, "description": description, "cards": [list(c) for c in cards]}
            for stem, (patient_id, description, _, cards) in SCENARIOS.items()
        },
    }


def main() -> None:
    for name, bundle in bundles().items():
        (HERE / name).write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (HERE / EXPECTED_FILE).write_text(json.dumps(expected(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(SCENARIOS)} draft-order scenarios and {EXPECTED_FILE}")


if __name__ == "__main__":
    main()
