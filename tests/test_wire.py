"""Decoding requests and FHIR answers down to the elements the service reads (`hooks.wire`,
`fhir_mapping.wire`) must change what a request costs, never what the service concludes.

Three kinds of check:
- the mapping reads no element of a resource that the restricted decode drops (recorded on
  every chart of the corpus and on generated, partly broken, resources);
- the same request decoded in full and restricted gives the same findings, the same cards and the
  same errors (the corpus: the sandbox scenario patients, the Synthea records, the benchmark
  charts; and generated patient-view calls);
- what the restricted decode rejects falls back to the full decode, so invalid JSON and odd
  shapes are answered exactly as before.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.workloads import charts as bench_charts
from fhir_mapping import bundle_resources
from fhir_mapping.mapping import map_resources
from fhir_mapping.pipeline import assess_resources, default_terminology, documents_calcinosis
from fhir_mapping.wire import ENTRY_ELEMENTS, RESOURCE_ELEMENTS, ResourceElements, decode_resource
from hooks.models import HookRequest
from hooks.outbound import OutboundPolicy
from hooks.prefetch import DataUnobtainableError
from hooks.service import CalcinosisService, InvalidContextError
from hooks.settings import Settings
from hooks.wire import decode_hook_request
from tests import strategies as fs
from tests.charts import SYNTHEA, Chart
from tests.fhir_chart import searchset
from tests.hookclient import KEY_TYPES, cards_of, hook_request, make_app, post

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PATIENTS = Path(__file__).resolve().parents[1] / "deploy" / "fhir-sandbox" / "patients"
SERVICE = CalcinosisService(Settings(feedback_database_url="memory://", auth_disabled=True))


def _corpus() -> dict[str, list[dict[str, Any]]]:
    """Every chart at hand, as lists of resources."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(PATIENTS.glob("*.json")):
        if path.name != "expected.json":
            found[f"sandbox/{path.stem}"] = list(bundle_resources(json.loads(path.read_text())))
    for path in sorted(SYNTHEA.glob("*.json")):
        found[f"synthea/{path.stem.split('_')[0]}"] = list(bundle_resources(json.loads(path.read_text())))
    for name, chart in bench_charts().items():
        found[f"bench/{name}"] = chart.resources
    return found


CORPUS = _corpus()


def _request_body(resources: list[dict[str, Any]]) -> bytes:
    """An EHR-style patient-view call with the chart as prefetch (one searchset per key)."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    prefetch: dict[str, Any] = {"patient": patient}
    for key, resource_type in KEY_TYPES.items():
        prefetch[key] = searchset([r for r in resources if r["resourceType"] == resource_type])
    body = hook_request(prefetch=prefetch)
    body["context"]["patientId"] = patient["id"]
    return orjson.dumps(body)


def _outcome(data: Any) -> tuple[Any, ...]:
    """What the service makes of a decoded request: the validation error, the handling error, or
    the resolved data's findings and the response."""
    try:
        request = HookRequest.model_validate(data)
    except ValidationError as error:
        return ("invalid", sorted(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in error.errors()))
    try:
        outcome = asyncio.run(SERVICE.handle(request, None, OutboundPolicy.deny_all(), as_of=AS_OF))
    except (InvalidContextError, DataUnobtainableError) as error:
        return (type(error).__name__, str(error))
    patient_id = str(request.context.get("patientId"))
    findings = assess_resources(outcome.data.resources, AS_OF, patient_id, SERVICE.terminology).findings
    return ("ok", outcome.data.how, outcome.data.notes, findings, outcome.response.wire())


# ----- the restricted decode keeps every element the mapping reads ---------------------------------


class _RecordingResource(dict[str, Any]):
    """A resource that notes which of its elements are read."""

    read: set[str] = set()  # noqa: RUF012 - shared on purpose: one record for all resources

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def _elements_read(resources: list[Any], patient_id: str | None) -> set[str]:
    _RecordingResource.read = set()
    recorded = [_RecordingResource(r) if isinstance(r, dict) else r for r in resources]
    map_resources(recorded, default_terminology(), AS_OF, patient_id)
    documents_calcinosis(recorded)
    return _RecordingResource.read


def test_the_typed_dict_names_exactly_the_kept_elements() -> None:
    assert set(ResourceElements.__annotations__) == RESOURCE_ELEMENTS | ENTRY_ELEMENTS | {"entry"}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_mapping_reads_only_kept_elements(name: str) -> None:
    resources = CORPUS[name]
    patient = next((r["id"] for r in resources if r.get("resourceType") == "Patient"), None)
    read = _elements_read(resources, patient)
    assert "status" in read  # the recording works
    assert read <= RESOURCE_ELEMENTS, sorted(read - RESOURCE_ELEMENTS)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(fs.detached(fs.resource_lists("pat-1", 10)))
def test_mapping_reads_only_kept_elements_of_generated_resources(resources: list[Any]) -> None:
    read = _elements_read(resources, "pat-1")
    assert read <= RESOURCE_ELEMENTS, sorted(read - RESOURCE_ELEMENTS)


# ----- same answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_restricted_and_full_decoding_give_the_same_answer(name: str) -> None:
    body = _request_body(CORPUS[name])
    restricted = decode_hook_request(body)
    full = orjson.loads(body)
    assert restricted != full  # elements were dropped (meta, text, category, ...)
    assert _outcome(restricted) == _outcome(full)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fs.detached(fs.hook_requests()))
def test_generated_calls_get_the_same_answer(body: Any) -> None:
    raw = orjson.dumps(body)
    assert _outcome(decode_hook_request(raw)) == _outcome(orjson.loads(raw))


def test_fhir_answers_are_restricted_too() -> None:
    chart = Chart()
    chart.calcinosis()
    bundle = searchset(chart.resources, next_url="https://fhir.example.org/r4/Observation?page=2")
    bundle["meta"] = {"lastUpdated": "2026-11-01T00:00:00Z"}
    decoded = decode_resource(orjson.dumps(bundle))
    assert "meta" not in decoded
    assert decoded["link"] == bundle["link"]
    assert [e["resource"]["id"] for e in decoded["entry"]] == [r["id"] for r in chart.resources]


# ----- what the restricted decode rejects is decoded in full -------------------------------------

ODD_SHAPES = [
    b'{"hook": "patient-view", "prefetch": {"observations": [1, 2]}}',
    b'{"hook": "patient-view", "prefetch": {"observations": {"resourceType": "Bundle", "entry": 5}}}',
    b'{"hook": "patient-view", "prefetch": {"observations": {"resourceType": "Bundle", "entry": [7]}}}',
    b'{"hook": "patient-view", "prefetch": {"observations": {"resourceType": "Bundle", "entry": [{"resource": null}]}}}',
    b'{"prefetch": {"observations": {"meta": ' + b"[" * 5000 + b"]" * 5000 + b"}}}",
    b'{"prefetch": "none"}',
    b"[1, 2]",
    b'"patient-view"',
    b'{"hook": "patient-view", "prefetch": {"observations": {"meta": {"tag": "\xff\xfe"}}}}',
    b'{"hook": "patient-view", "prefetch": {"observations": {"meta": {"tag": "\\ud800"}}}}',
    '{"hook": "patient-view", "context": {"userId": "Practitioner/Jos\u00e9"}}'.encode(),
]


@pytest.mark.parametrize("body", ODD_SHAPES + fs.RAW_BODIES, ids=range(len(ODD_SHAPES) + len(fs.RAW_BODIES)))
def test_odd_shapes_and_non_json_are_decoded_as_orjson_decodes_them(body: bytes) -> None:
    try:
        expected = orjson.loads(body)
    except orjson.JSONDecodeError:
        if b"1e999" in body:
            return  # valid JSON grammar, refused by orjson only; see below
        for decode in (decode_hook_request, decode_resource):
            with pytest.raises(orjson.JSONDecodeError):
                decode(body)
        return
    if isinstance(expected, dict):  # members the spec does not define are dropped: same outcome
        assert _outcome(decode_hook_request(body)) == _outcome(expected)
    else:
        assert decode_hook_request(body) == expected
        assert decode_resource(body) == expected


def test_an_integer_beyond_a_float_is_an_unusable_value_not_an_error() -> None:
    """JSON allows any integer; msgspec keeps a huge one as int where orjson refuses it. The
    value cannot be used, the card says so, and nothing fails."""
    chart = Chart()
    chart.calcinosis()
    lab = chart.lab("17861-6", 9.5, "mg/dL", 3)
    body = orjson.dumps(hook_request(chart)).replace(b'"value":9.5', b'"value":1' + b"0" * 400)
    assert b"0" * 400 in body and lab["id"].encode() in body
    cards = cards_of(post(make_app(), "/cds-services/calcinosis", body))
    assert cards, "calcinosis is documented, so the service answers"


def test_a_number_beyond_a_float_in_an_unread_element_is_skipped() -> None:
    """orjson refuses `1e999` anywhere; the restricted decode skips it where the service does not
    read, and refuses it (through the full decode) where it does."""
    assert decode_resource(b'{"resourceType": "Observation", "meta": {"versionId": 1e999}}') == {
        "resourceType": "Observation"
    }
    with pytest.raises(orjson.JSONDecodeError):
        decode_resource(b'{"resourceType": "Observation", "valueQuantity": {"value": 1e999}}')
    with pytest.raises(orjson.JSONDecodeError):
        decode_hook_request(b'{"context": {"patientId": 1e999}}')


@given(st.integers(min_value=2**63, max_value=2**70) | st.integers(max_value=-(2**63), min_value=-(2**70)))
@settings(max_examples=20, derandomize=True, database=None)
def test_integers_beyond_64_bits_are_numbers_of_the_same_value(value: int) -> None:
    decoded = decode_resource(b'{"resourceType": "Observation", "valueInteger": %d}' % value)
    assert decoded["valueInteger"] == value


def test_a_repeated_member_keeps_its_last_value_as_orjson_does() -> None:
    body = b'{"resourceType": "Observation", "status": "preliminary", "status": "final", "code": {"text": "a", "text": "b"}}'
    assert (
        decode_resource(body)
        == orjson.loads(body)
        == {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "b"},
        }
    )
