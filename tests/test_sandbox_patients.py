"""The sandbox test patients (deploy/fhir-sandbox/patients): valid FHIR R4, idempotent PUT
transactions with stable ids, and the outcome recorded in expected.json, both at the anchor day
and after every date has been moved to another day with `calcinosis_tools.scenarios.shift_dates`.

The expectations in expected.json were written from clinical-knowledge.md, not copied from the
engine's output: a failure here means the rules or the scenario changed, and someone has to
decide which one is wrong.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from calcinosis.assessment import Assessment
from calcinosis_tools.scenarios import (
    ANCHOR,
    ScenarioError,
    bundle_anchor,
    load_scenarios,
    patients_dir,
    shift_date_string,
    shift_dates,
)
from fhir_mapping import assess_resources, bundle_resources

SCENARIOS = load_scenarios()
BY_NAME = {s.name: s for s in SCENARIOS}
NAMES = sorted(BY_NAME)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
UCUM = "http://unitsofmeasure.org"
REQUIRED_DIFFERENTIALS = {
    "gouty-tophus",
    "osteoma-cutis",
    "progressive-osseous-heteroplasia",
    "primary-hyperoxaluria",
    "xanthoma",
}


def noon(day: date) -> datetime:
    """The moment the scenarios are assessed on a day (as in tests/charts.AS_OF)."""
    return datetime.combine(day, time(12), tzinfo=UTC)


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle["entry"]]


def assess(bundle: dict[str, Any], patient_id: str, day: date) -> Assessment | None:
    return assess_resources(bundle_resources(bundle), noon(day), patient_id).assessment


def summary(assessment: Assessment | None) -> dict[str, Any] | None:
    """What expected.json records: likelihood per subtype and the raised differentials."""
    if assessment is None:
        return None
    return {
        "subtypes": {s.subtype.value: s.likelihood.value for s in assessment.subtypes},
        "raised_differentials": tuple(
            sorted(d.differential_id for d in assessment.differentials if d.consideration == "raised")
        ),
    }


def full_outcome(assessment: Assessment | None) -> dict[str, Any] | None:
    """Everything in an assessment that must not depend on the calendar day (dates excluded)."""
    if assessment is None:
        return None
    return {
        "subtypes": {
            s.subtype.value: (s.likelihood.value, s.rule_ids, tuple(DAY.sub("<day>", m) for m in s.missing))
            for s in assessment.subtypes
        },
        "differentials": {
            d.differential_id: (
                d.consideration,
                tuple(f.rule_id for f in d.raised_by),
                tuple(f.rule_id for f in d.lowered_by),
            )
            for d in assessment.differentials
        },
        "workup": tuple(w.item_id for w in assessment.workup),
        "distribution": assessment.distribution.label.value,
        "risk": (
            assessment.calciphylaxis_risk.pattern,
            tuple(f.factor_id for f in assessment.calciphylaxis_risk.major),
            tuple(f.factor_id for f in assessment.calciphylaxis_risk.minor),
        ),
        "derived": tuple((d.name, d.value, d.category) for d in assessment.derived),
    }


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for key, value in node.items() if key != "reference" for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []


# ----- the set of scenarios -----------------------------------------------------------------------


def test_the_scenarios_cover_every_subtype_differential_and_the_silent_case() -> None:
    expected = [s.expected for s in SCENARIOS]
    assert None in expected, "a silent scenario (no calcinosis: no assessment)"
    outcomes = [e for e in expected if e is not None]
    for subtype in ("dystrophic", "metastatic", "idiopathic", "iatrogenic", "calciphylaxis"):
        assert any(e.subtypes[subtype] in ("likely", "possible") for e in outcomes), subtype
    assert any(set(e.subtypes.values()) >= {"undetermined"} for e in outcomes), "an insufficient-data scenario"
    raised = {d for e in outcomes for d in e.raised_differentials}
    assert raised >= REQUIRED_DIFFERENTIALS


def test_patients_dir_is_found_from_the_module_location() -> None:
    assert patients_dir() == Path(__file__).resolve().parents[1] / "deploy" / "fhir-sandbox" / "patients"
    assert (patients_dir() / "expected.json").is_file()


def test_ids_are_unique_across_scenarios_so_all_load_into_one_server() -> None:
    seen: dict[str, str] = {}
    for scenario in SCENARIOS:
        for resource in resources(scenario.bundle):
            key = f"{resource['resourceType']}/{resource['id']}"
            assert key not in seen, f"{key} in {scenario.name} and {seen.get(key)}"
            seen[key] = scenario.name


# ----- (a) valid FHIR R4 ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_resource_and_the_bundle_validate_as_fhir_r4(name: str) -> None:
    bundle = BY_NAME[name].bundle
    for resource in resources(bundle):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    get_fhir_model_class("Bundle").model_validate(bundle)


# ----- (b) idempotent PUTs with stable ids ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_is_a_put_of_its_own_stable_id(name: str) -> None:
    scenario = BY_NAME[name]
    bundle = scenario.bundle
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    keys = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert FHIR_ID.fullmatch(resource["id"]), resource["id"]
        assert resource["id"].startswith(scenario.patient_id), "ids are prefixed by the scenario's patient id"
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert "fullUrl" not in entry
        keys.add(f"{resource['resourceType']}/{resource['id']}")
    assert len(keys) == len(bundle["entry"]), "no resource twice"
    assert not [s for s in strings(bundle) if s.startswith("urn:uuid:")], "references are Type/id, not urn:uuid"
    # Self-contained: every reference names a resource of the same Bundle (or a contained one).
    dangling = {r for r in references(bundle) if not r.startswith("#") and r not in keys}
    assert not dangling
    assert f"Patient/{scenario.patient_id}" in keys


@pytest.mark.parametrize("name", NAMES)
def test_charts_have_a_realistic_structure(name: str) -> None:
    scenario = BY_NAME[name]
    subject = f"Patient/{scenario.patient_id}"
    for resource in resources(scenario.bundle):
        kind = resource["resourceType"]
        if kind in ("Observation", "Condition", "Procedure", "MedicationRequest", "MedicationAdministration"):
            assert resource["subject"]["reference"] == subject
        if kind == "Observation":
            assert resource["status"] and resource["category"] and resource["code"]["coding"]
            assert "effectiveDateTime" in resource or "effectivePeriod" in resource
            quantity = resource.get("valueQuantity")
            if quantity is not None and "unit" in quantity:
                assert quantity["system"] == UCUM and quantity["code"], resource["id"]
        if kind == "Condition":
            assert resource["clinicalStatus"]["coding"] and resource["verificationStatus"]["coding"]


@pytest.mark.parametrize("name", NAMES)
def test_dates_are_written_against_the_anchor(name: str) -> None:
    bundle = BY_NAME[name].bundle
    assert bundle_anchor(bundle) == ANCHOR
    assert bundle["meta"]["lastUpdated"].startswith(ANCHOR.isoformat())
    days = [
        date.fromisoformat(s[:10])
        for s in strings(bundle["entry"])
        if shift_date_string(s, 1) != s  # exactly the values shift_dates treats as dates
    ]
    assert days and max(days) < ANCHOR, "nothing in the chart is dated on or after the anchor"


# ----- (c) the expected outcome at the anchor ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_outcome_at_the_anchor_is_the_expected_one(name: str) -> None:
    scenario = BY_NAME[name]
    result = assess_resources(bundle_resources(scenario.bundle), noon(ANCHOR), scenario.patient_id)
    assert result.findings.resources_skipped == 0, result.findings.issues
    expected = None
    if scenario.expected is not None:
        expected = {
            "subtypes": scenario.expected.subtypes,
            "raised_differentials": scenario.expected.raised_differentials,
        }
    assert summary(result.assessment) == expected


# ----- (d) the same outcome on another day after shifting ---------------------------------------------


@pytest.mark.parametrize("offset_days", [400, -731])
@pytest.mark.parametrize("name", NAMES)
def test_shifted_scenario_gives_the_same_outcome_on_its_new_day(name: str, offset_days: int) -> None:
    scenario = BY_NAME[name]
    today = ANCHOR + timedelta(days=offset_days)
    shifted = shift_dates(scenario.bundle, ANCHOR, today)
    assert bundle_anchor(shifted) == today
    at_anchor = assess(scenario.bundle, scenario.patient_id, ANCHOR)
    on_new_day = assess(shifted, scenario.patient_id, today)
    assert full_outcome(on_new_day) == full_outcome(at_anchor)
    # Without the shift, the calendar would have moved the chart out of its windows.
    if scenario.expected is not None and offset_days > 0:
        assert full_outcome(assess(scenario.bundle, scenario.patient_id, today)) != full_outcome(at_anchor)


def test_shift_keeps_ages_and_intervals_exactly() -> None:
    scenario = BY_NAME["iatrogenic-infant-iv-calcium"]
    today = ANCHOR + timedelta(days=1000)  # crosses a leap day (2028-02-29)
    shifted = shift_dates(scenario.bundle, ANCHOR, today)
    before = {r["id"]: r for r in resources(scenario.bundle)}
    after = {r["id"]: r for r in resources(shifted)}
    patient = scenario.patient_id
    born_before = date.fromisoformat(before[patient]["birthDate"])
    born_after = date.fromisoformat(after[patient]["birthDate"])
    assert (ANCHOR - born_before) == (today - born_after)
    infusion = f"{patient}-ca-gluconate-1"
    start_before = datetime.fromisoformat(before[infusion]["effectivePeriod"]["start"])
    start_after = datetime.fromisoformat(after[infusion]["effectivePeriod"]["start"])
    assert start_after - start_before == timedelta(days=1000)
    assert start_after.utcoffset() == start_before.utcoffset()


def test_shift_copies_and_never_modifies_the_input() -> None:
    bundle = BY_NAME["dystrophic-ssc"].bundle
    original = copy.deepcopy(bundle)
    shifted = shift_dates(bundle, ANCHOR, ANCHOR + timedelta(days=30))
    assert bundle == original
    shifted["entry"][0]["resource"]["gender"] = "changed"
    assert bundle == original
    assert shift_dates(bundle, ANCHOR, ANCHOR) == bundle


# ----- (e) shift_dates and non-date strings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-10-27", "2026-11-06"),
        ("2026-10-27T08:10:00-05:00", "2026-11-06T08:10:00-05:00"),
        ("2026-12-27T23:59:59.123Z", "2027-01-06T23:59:59.123Z"),
        ("2028-02-19T00:00:00+14:00", "2028-02-29T00:00:00+14:00"),
        ("2026-10-27T08:10", "2026-11-06T08:10"),
        ("2026-10-27T08:10:00", "2026-11-06T08:10:00"),
    ],
)
def test_dates_datetimes_and_instants_move_and_keep_time_and_zone(value: str, expected: str) -> None:
    assert shift_dates({"v": value}, ANCHOR, ANCHOR + timedelta(days=10)) == {"v": expected}


@pytest.mark.parametrize(
    "value",
    [
        "2026",  # partial dates are not shifted (could be a code or a count)
        "2026-10",
        "2026-02-30",  # not a calendar day
        "2026-13-01",
        "2026-10-27T25:00:00Z",  # not a time
        "2026-10-27T08:10:00+15:00",  # not a zone
        "2026-10-27T",
        "2026-10-27 08:10:00",  # space instead of T: not FHIR
        " 2026-10-27",
        "2026-10-27 ",
        "2026-10-27\n",
        "20261027",
        "Onset 2026-10-27",
        "2026-10-27/2026-11-03",
        "2026-10-27T08:10:00Z trailing",
        "http://example.org/fhir/2026-10-27",
        "urn:uuid:2026-10-27",
        "cc-dystrophic-ssc-ca-1",
        "999-70-7841",  # an SSN
        "555-218-2637",  # a phone number
        "１２３４-１０-２７",  # full-width digits
        "٢٠٢٦-١٠-٢٧",  # Arabic-Indic digits
        "",
    ],
)
def test_non_dates_are_left_alone(value: str) -> None:
    assert shift_dates({"v": [value, {"w": value}]}, ANCHOR, ANCHOR + timedelta(days=10)) == {
        "v": [value, {"w": value}]
    }


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
offsets = st.integers(min_value=-5000, max_value=5000)


@given(st.text(max_size=40), offsets)
def test_any_string_is_either_unchanged_or_moved_by_exactly_the_offset(value: str, days: int) -> None:
    result = shift_dates({"v": value}, ANCHOR, ANCHOR + timedelta(days=days))["v"]
    if result != value:
        assert result[10:] == value[10:]
        assert date.fromisoformat(result[:10]) - date.fromisoformat(value[:10]) == timedelta(days=days)
    if not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        assert result == value


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)),
    st.sampled_from(["", "T00:00:00Z", "T08:10:00-05:00", "T23:59:59.5+14:00", "T12:30", "T06:00:00"]),
    offsets,
)
def test_every_fhir_date_form_moves_by_the_offset(day: date, suffix: str, days: int) -> None:
    value = day.isoformat() + suffix
    result = shift_dates({"v": value}, ANCHOR, ANCHOR + timedelta(days=days))["v"]
    assert result == (day + timedelta(days=days)).isoformat() + suffix


@given(json_values, offsets)
def test_shifting_back_restores_any_json_and_keeps_keys_and_non_strings(value: Any, days: int) -> None:
    bundle = {"resourceType": "Bundle", "x": value}
    there = shift_dates(bundle, ANCHOR, ANCHOR + timedelta(days=days))
    assert shift_dates(there, ANCHOR + timedelta(days=days), ANCHOR) == bundle
    # Same keys and non-string values everywhere: only string leaves may differ.
    assert _keys(there) == _keys(bundle)


def _keys(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [[key, _keys(value)] for key, value in node.items()]
    if isinstance(node, list):
        return [_keys(value) for value in node]
    return [None if isinstance(node, str) else node]


def test_a_shift_out_of_the_calendar_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(ValueError, match="outside years"):
        shift_dates({"v": "0001-01-05"}, ANCHOR, ANCHOR - timedelta(days=10))


# ----- loading --------------------------------------------------------------------------------------


def test_a_bundle_without_an_expectation_fails_loudly(tmp_path: Path) -> None:
    source = patients_dir()
    (tmp_path / "expected.json").write_text((source / "expected.json").read_text(encoding="utf-8"), encoding="utf-8")
    for path in source.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert len(load_scenarios(tmp_path)) == len(SCENARIOS)
    (tmp_path / "extra.json").write_text((source / "silent-ckd.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"no entry for \['extra.json'\]"):
        load_scenarios(tmp_path)


def test_expected_json_typos_are_rejected(tmp_path: Path) -> None:
    source = patients_dir()
    index = json.loads((source / "expected.json").read_text(encoding="utf-8"))
    index["scenarios"] = {"dystrophic-ssc.json": index["scenarios"]["dystrophic-ssc.json"]}
    index["scenarios"]["dystrophic-ssc.json"]["expected"]["subtypes"]["dystrophic"] = "probable"
    (tmp_path / "expected.json").write_text(json.dumps(index), encoding="utf-8")
    (tmp_path / "dystrophic-ssc.json").write_text(
        (source / "dystrophic-ssc.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(ScenarioError, match="likelihood"):
        load_scenarios(tmp_path)
