"""The iatrogenic site match for a Procedure (issue 12 item 5; clinical-knowledge.md 5.4): an
EEG/EMG's `Procedure.bodySite` compared with the calcinosis site, by SNOMED CT code or by text. A
FHIR chart in, the iatrogenic assessment out: a match raises the likelihood, a mismatch lowers it,
and the finding says which."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from calcinosis import Subtype
from tests.charts import AS_OF, Chart
from tests.fhir_chart import SNOMED

SCALP = {"coding": [{"system": SNOMED, "code": "41695006", "display": "Scalp structure"}]}
LEFT_HAND = {"coding": [{"system": SNOMED, "code": "85151006", "display": "Structure of left hand"}]}
SCALP_OTHER_WORDS = {"coding": [{"system": SNOMED, "code": "41695006", "display": "Skin of head"}], "text": "Cap"}


def born(years: float) -> str:
    return (AS_OF - timedelta(days=years * 365.25)).date().isoformat()


@pytest.mark.parametrize(
    ("procedure_site", "lesion_site", "expected", "words"),
    [
        ({"text": "Scalp"}, {"text": "Scalp"}, "likely", "at the site of the calcinosis"),
        (SCALP, SCALP, "likely", "same coded site"),
        # The same SNOMED CT code wins over words that do not name a region.
        (SCALP_OTHER_WORDS, SCALP, "likely", "same coded site"),
        ({"text": "Right forearm"}, {"text": "Scalp"}, "unlikely", "different site"),
        (SCALP, LEFT_HAND, "unlikely", "different site"),
        (None, {"text": "Scalp"}, "possible", "cannot be assessed"),
    ],
)
def test_procedure_body_site_against_the_calcinosis_site(
    procedure_site: dict[str, Any] | None, lesion_site: dict[str, Any], expected: str, words: str
) -> None:
    # An EEG 60 days before calcinosis was recorded: inside the look-back window, and electrode
    # paste is never a "close" exposure, so only the site can make it strong or refute it.
    chart = Chart(birth_date=born(30))
    entry = chart.calcinosis(onset_days_ago=10)
    entry["bodySite"] = [lesion_site]
    chart.mineral_panel(9.4, 4.1, 3.6)
    procedure = chart.procedure("Electroencephalogram (EEG)", 70)
    if procedure_site is not None:
        procedure["bodySite"] = [procedure_site]
    assessment = chart.assess()
    assert assessment is not None
    iatrogenic = assessment.subtype(Subtype.IATROGENIC)
    assert iatrogenic.likelihood.value == expected
    eeg = [f for f in iatrogenic.findings if f.rule_id == "CC-IAT-EEG"]
    assert eeg and words in eeg[0].statement
    assert eeg[0].supports is (expected != "unlikely")
