"""Value sets: provenance on every code, unconfirmed codes off by default, site-local codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calcinosis.findings import Analyte, ClinicalConcept, DrugClass
from fhir_mapping import load_terminology
from fhir_mapping.terminology import EXT_SOURCE, EXT_STATUS, ICD10CM, LOINC, RXNORM, SNOMED, TerminologyError

VALUESETS = Path(__file__).resolve().parents[1] / "fhir_mapping" / "valuesets"


def _provenance(element: dict) -> tuple[list, list]:  # type: ignore[type-arg]
    ext = element.get("extension", [])
    return [e for e in ext if e["url"] == EXT_STATUS], [e for e in ext if e["url"] == EXT_SOURCE]


def test_every_packaged_code_records_its_status_and_source() -> None:
    files = sorted(VALUESETS.glob("*.json"))
    assert len(files) > 40
    for file in files:
        data = json.loads(file.read_text())
        for include in data["compose"]["include"]:
            for concept in include.get("concept", []):
                status, source = _provenance(concept)
                assert len(status) == 1 and len(source) == 1, f"{file.name} {concept['code']}"
            if include.get("filter"):
                status, source = _provenance(include)
                assert len(status) == 1 and len(source) == 1, f"{file.name} filter"


def test_codes_map_to_findings() -> None:
    terminology = load_terminology()
    assert terminology.match_code(LOINC, "17861-6") == [Analyte.CALCIUM_TOTAL]
    assert terminology.match_code("urn:oid:2.16.840.1.113883.6.1", "2777-1") == [Analyte.PHOSPHATE]
    assert terminology.match_code(ICD10CM, "l942") == [ClinicalConcept.CALCINOSIS_CUTIS]
    assert ClinicalConcept.SYSTEMIC_SCLEROSIS in terminology.match_code(ICD10CM, "M34.81")
    assert ClinicalConcept.DERMATOMYOSITIS in terminology.match_code(ICD10CM, "M3303")
    assert ClinicalConcept.CALCIPHYLAXIS in terminology.match_code(SNOMED, "237900002")
    assert DrugClass.WARFARIN in terminology.match_code(RXNORM, "855332")
    assert terminology.match_code(ICD10CM, "E83.59") == [ClinicalConcept.CALCIUM_METABOLISM_OTHER]
    assert DrugClass.ACTIVE_VITAMIN_D in terminology.match_text("medication", "Calcitriol 0.25 MCG Oral Capsule")
    assert terminology.match_text("procedure", "EMGalactic scan") == []


def test_unconfirmed_codes_are_recorded_but_not_used_by_default() -> None:
    default = load_terminology()
    opted_in = load_terminology(include_unconfirmed=True)
    assert default.skipped_unconfirmed > 0
    assert opted_in.skipped_unconfirmed == 0
    # LOINC 16570-4 (anti-centromere) is unconfirmed in terminology.md.
    assert default.match_code(LOINC, "16570-4") == []
    assert opted_in.match_code(LOINC, "16570-4") == [Analyte.ANTI_CENTROMERE]


def test_site_local_codes_are_added_without_editing_the_package(tmp_path: Path) -> None:
    local = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "ValueSet",
                    "url": "urn:calcinosis-cds:valueset:calcinosis-cutis",
                    "status": "active",
                    "compose": {
                        "include": [{"system": "http://hospital.example/problems", "concept": [{"code": "DERM-CALC"}]}]
                    },
                }
            }
        ],
    }
    path = tmp_path / "local.json"
    path.write_text(json.dumps(local))
    terminology = load_terminology(path)
    assert terminology.match_code("http://hospital.example/problems", "DERM-CALC") == [ClinicalConcept.CALCINOSIS_CUTIS]
    assert load_terminology().match_code("http://hospital.example/problems", "DERM-CALC") == []


def test_local_file_naming_an_unknown_set_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"resourceType": "ValueSet", "id": "no-such-set", "compose": {"include": []}}))
    with pytest.raises(TerminologyError, match="must name a packaged set"):
        load_terminology(path)


_TERMINOLOGY = load_terminology()
_PHRASES = sorted({phrase for entries in _TERMINOLOGY.phrases.values() for phrase, _ in entries})


def _match_text_without_screen(kind: str, text: str) -> list[Any]:
    """`Terminology.match_text` as it was before the first-word screen: the expression alone."""
    folded = text.lower()
    pattern, by_phrase, _ = _TERMINOLOGY._matcher(kind)
    found: list[Any] = []
    for match in pattern.finditer(folded):
        for finding in by_phrase[match.group(1)]:
            if finding not in found and not any(x.search(folded) for x in _TERMINOLOGY.exclusions.get(finding, ())):
                found.append(finding)
    return found


@settings(max_examples=300, derandomize=True, database=None)
@given(
    st.sampled_from(sorted(_TERMINOLOGY.phrases)),
    st.lists(
        st.sampled_from(_PHRASES) | st.sampled_from(["non", "x", "(disorder)", "1", "é", "Ca"]) | st.text(max_size=6),
        max_size=5,
    ),
    st.lists(st.sampled_from(["", " ", "-", "/", "(", ")", ",", "2", "a", "É"]), min_size=6, max_size=6),
)
def test_the_first_word_screen_changes_no_match(kind: str, parts: list[str], separators: list[str]) -> None:
    text = "".join(
        sep + part.upper() if i % 2 else sep + part
        for i, (sep, part) in enumerate(zip(separators, parts, strict=False))
    )
    assert _TERMINOLOGY.match_text(kind, text) == _match_text_without_screen(kind, text)


def test_the_screen_answers_texts_without_a_first_word_at_once() -> None:
    _, _, first_words = _TERMINOLOGY._matcher("condition")
    assert first_words is not None and "calcinosis" in first_words
    assert _TERMINOLOGY.match_text("condition", "Essential hypertension (disorder)") == []
    assert ClinicalConcept.CALCINOSIS_CUTIS in _TERMINOLOGY.match_text("condition", "Calcinosis cutis of hand")
