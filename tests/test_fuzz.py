"""Property-based fuzzing of the HTTP API: no 5xx, no hangs, always JSON, no echo of the input.

Two layers:
- schemathesis generates requests for every operation of the service's own OpenAPI document
  (positive and negative data) and checks each answer is not a server error, carries a documented
  content type, and echoes nothing of the request;
- hypothesis strategies (tests/strategies.py) generate CDS Hooks patient-view calls and FHIR
  resources that are valid-shaped or broken the ways EHRs break them, plus feedback bodies,
  bodies that are not JSON, and the answers of a misbehaving FHIR server for the fallback fetches.

Everything is bounded for CI: derandomized (the same examples on every run), a small
`max_examples`, a per-example deadline for slowness and a hard alarm for hangs. Nothing leaves the
process: the service's outbound HTTP client is an `httpx.MockTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import hypothesis.core
import hypothesis.vendor.pretty
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.feedback import NO_FEEDBACK
from schemathesis.specs.openapi.checks import content_type_conformance

import calcinosis
import fhir_mapping
import hooks
from calcinosis.knowledge_base import default_knowledge
from fhir_mapping import assess_resources
from hooks.cards import render_cards
from hooks.models import Feedback, HookRequest, HookResponse
from hooks.service import SERVICE_ID
from tests import strategies as fs
from tests.charts import Chart
from tests.hookclient import hook_request, make_app

SERVICE = "/cds-services/calcinosis"
ECHO_MIN = 7
"""Request strings this long or longer must not come back in an error answer (unless the service
itself uses that text: field names, hook names, fixed messages)."""
HANG_SECONDS = 10.0
"""Hard limit for one request; the hypothesis deadline (2 s) reports slowness long before."""
SHRINK = os.environ.get("FUZZ_SHRINK") == "1"
"""Shrinking a failure to a minimal example can take minutes; CI reports the unshrunk example
(set FUZZ_SHRINK=1 locally for the minimal one)."""
FUZZ = settings(
    max_examples=100,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + ([Phase.shrink] if SHRINK else []),
    deadline=2000,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# ----- harness ------------------------------------------------------------------------------------


class HangError(Exception):
    """A request did not finish within HANG_SECONDS."""


@contextlib.contextmanager
def hard_limit(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Interrupt the main thread after `seconds` (a hypothesis deadline only reports after the
    example ends, so an endless loop would hang CI instead of failing)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise HangError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class FakeFhir:
    """The FHIR server behind `fhirServer`, answering from a script, recording what was asked."""

    def __init__(self) -> None:
        self.answers: list[fs.FhirAnswer] = []
        self.urls: list[str] = []

    def reset(self, answers: list[fs.FhirAnswer]) -> None:
        self.answers = answers
        self.urls = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        if not self.answers:
            return httpx.Response(404, json=fs.OPERATION_OUTCOME)
        answer = self.answers[(len(self.urls) - 1) % len(self.answers)]
        if answer == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if isinstance(answer, str):
            raise httpx.ConnectError("connection refused", request=request)
        status, headers, body = answer
        return httpx.Response(status, headers=headers, content=body)


def test_hard_limit_interrupts_a_busy_loop() -> None:
    """The harness itself: a request stuck in a CPU loop fails the test instead of hanging CI."""
    with pytest.raises(HangError), hard_limit(0.05):
        while True:
            pass


@functools.cache
def service() -> tuple[Any, FakeFhir]:
    """One app for the hypothesis tests (auth disabled, memory stores, short fetch deadline)."""
    app = make_app(fetch_deadline_seconds=1.0, fhir_request_timeout_seconds=0.5)
    fake = FakeFhir()
    app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle), follow_redirects=False)
    return app, fake


def send(path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    """POST through httpx against the ASGI app; unhandled errors come back as the 500 the app's
    handler renders instead of being raised into the test."""
    app, _ = service()

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(path, content=content, headers={"Content-Type": content_type})

    with hard_limit():
        return asyncio.run(scenario())


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


@functools.cache
def vocabulary() -> str:
    """Text the service may say on its own: its source (messages, field and hook names), the
    packaged value sets and knowledge, and its OpenAPI document."""
    parts = []
    for package in (hooks, fhir_mapping, calcinosis):
        root = Path(package.__path__[0])
        parts += [p.read_text(encoding="utf-8") for p in sorted(root.rglob("*")) if p.suffix in (".py", ".json")]
    parts.append(json.dumps(service()[0].openapi()))
    return "\n".join(parts)


def strings_of(value: Any) -> Iterator[str]:
    """Every string in a JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def echoed(request: Any, answer: Any) -> list[str]:
    """Request strings (long enough, not the service's own vocabulary) found in the answer."""
    said = "\n".join(strings_of(answer))
    return sorted({s for s in strings_of(request) if len(s) >= ECHO_MIN and s in said and s not in vocabulary()})


def check_error(response: httpx.Response, request: Any, statuses: set[int]) -> None:
    """A 4xx answer: an expected status, an OperationOutcome, nothing of the request in it."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(isinstance(i.get("diagnostics"), str) for i in body["issue"]), body
    leaked = echoed(request, body)
    assert not leaked, f"error answer echoes request content {leaked}: {response.text}"


def check_json(response: httpx.Response) -> Any:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json", response.headers
    return response.json()


# ----- schemathesis: every operation of the published OpenAPI document ---------------------------

SCHEMA_APP = make_app(fetch_deadline_seconds=1.0, fhir_request_timeout_seconds=0.5, api_docs=True)
SCHEMA_APP.state.http = httpx.AsyncClient(transport=httpx.MockTransport(FakeFhir().handle), follow_redirects=False)


async def schema_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app, minus its lifespan (which would swap the fake FHIR transport for a real client)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await SCHEMA_APP(scope, receive, send)


SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json", schema_app, config=schemathesis.Config.from_dict({"seed": 20261101})
)
OPERATIONS: dict[str, schemathesis.APIOperation[Any, Any, Any, Any]] = {}
SCHEMA_ERRORS: list[str] = []
for result in SCHEMA.get_all_operations():
    if isinstance(result, Ok):
        OPERATIONS[result.ok().label] = result.ok()
    else:
        SCHEMA_ERRORS.append(str(result.err()))


def cases_for(operation: schemathesis.APIOperation[Any, Any, Any, Any]) -> st.SearchStrategy[schemathesis.Case[Any]]:
    """Data valid and invalid for the schema; for `{service_id}` paths, half with the real id so
    the handlers behind the 404 get fuzzed too. No feedback sources: by default schemathesis mines
    string constants from the modules loaded in the process, which would make the examples depend
    on which other tests were collected."""
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    strategies = [operation.as_strategy(mode, feedback=NO_FEEDBACK) for mode in modes]
    if "{service_id}" in operation.path:
        real = {"service_id": SERVICE_ID}
        strategies += [operation.as_strategy(mode, feedback=NO_FEEDBACK, path_parameters=real) for mode in modes]
    return st.one_of(strategies)


CASES = {label: cases_for(operation) for label, operation in OPERATIONS.items()}
# Building those strategies ran schemathesis' one-off Hypothesis set-up, which swaps Hypothesis'
# printer for one that prints nothing (for the speed of its coverage phase, not used here); every
# failing example in the session would then read `arg=,`. Put the real printer back.
setattr(hypothesis.core, "RepresentationPrinter", hypothesis.vendor.pretty.RepresentationPrinter)  # noqa: B010


def no_echo(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> bool | None:
    """An error answer repeats nothing of the request (body, query, path parameters)."""
    if response.status_code < 400:
        return None
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = response.content.decode("utf-8", "replace")
    sent = [case.body if isinstance(case.body, dict | list | str) else None, case.query, case.path_parameters]
    leaked = echoed(sent, answer)
    if leaked:
        raise AssertionError(f"error answer echoes request content {leaked}")
    return None


def test_openapi_document_loads() -> None:
    assert not SCHEMA_ERRORS
    assert {"POST /cds-services/{service_id}", "POST /cds-services/{service_id}/feedback"} <= set(OPERATIONS)


@pytest.mark.parametrize("label", sorted(CASES))
def test_openapi_operation(label: str) -> None:
    """Every operation of the published OpenAPI document, with schemathesis' data for it (valid
    and invalid for the schema): no 5xx, a documented content type, no echo of the request, an
    answer within the time limit."""

    @settings(FUZZ, max_examples=30)
    @given(CASES[label])
    def run(case: schemathesis.Case[Any]) -> None:
        with hard_limit():
            response = case.call(timeout=HANG_SECONDS)
        case.validate_response(response, checks=[not_a_server_error, content_type_conformance, no_echo])

    run()


# ----- hypothesis: CDS Hooks calls, feedback, raw bodies ------------------------------------------

EDGE_ONSET = {
    "resourceType": "Condition",
    "id": "c1",
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "L94.2"}]},
    "subject": {"reference": "Patient/pat-1"},
    "onsetDateTime": "0001-01-01T00:00:00+14:00",
}
"""Found by this fuzzing: a valid FHIR dateTime that falls before datetime.min once moved to UTC
(OverflowError in the mapping's date parser, answered 500)."""
EARLY_ONSET = EDGE_ONSET | {"onsetDateTime": "0001-01-01"}
"""Found by this fuzzing: calcinosis with an onset in year 1 (OverflowError in the iatrogenic
look-back window, onset minus N days, answered 500)."""


def call_with(prefetch: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "pat-1"},
        "prefetch": {"patient": None, "conditions": None, "observations": None} | prefetch,
    }


FOUND = [
    call_with({"conditions": EDGE_ONSET}),
    call_with({"conditions": EARLY_ONSET}),
    call_with({"extraKeyFromEhr": "x"}),
]
"""Requests found by this fuzzing to fail, kept as explicit examples: the two edge dates above
(500), and a prefetch key echoed back in the 400 diagnostics."""


@FUZZ
@given(fs.detached(fs.hook_requests()), fs.detached(fs.fhir_answers("pat-1")))
@example(FOUND[0], [])
@example(FOUND[1], [])
@example(FOUND[2], [])
def test_service_call_never_fails_on_the_server(body: Any, answers: list[fs.FhirAnswer]) -> None:
    """Valid-shaped and mutated patient-view calls, prefetch and fallback fetches: never 5xx,
    always JSON; cards conform to the spec models; errors are OperationOutcomes without echo; the
    service calls no FHIR server but the trusted (loopback) one."""
    _, fake = service()
    fake.reset(answers)
    note(f"request body: {encode(body).decode()}")
    response = send(SERVICE, encode(body))
    answer = check_json(response)
    event(f"status {response.status_code}" + (" with cards" if answer.get("cards") else ""))
    if response.status_code == 200:
        HookResponse.model_validate(answer)
        HookRequest.model_validate(body)  # only valid requests may succeed
    else:
        check_error(response, body, {400, 412})
    assert all(url.startswith(fs.LOOPBACK_FHIR) for url in fake.urls), fake.urls


@FUZZ
@given(
    fs.raw_bodies(),
    st.sampled_from(["application/json", "application/fhir+json", "application/json; charset=utf-8"]),
)
def test_bodies_that_are_not_json_are_400(content: bytes, content_type: str) -> None:
    response = send(SERVICE, content, content_type)
    check_json(response)
    check_error(response, None, {400})


CALCINOSIS = json.dumps(EDGE_ONSET | {"onsetDateTime": "2024-05-01"})


@FUZZ
@given(st.integers(1, 340), st.sampled_from(["collection", "searchset"]))
def test_deeply_nested_bundles(depth: int, bundle_type: str) -> None:
    """Bundles nested as deep as the JSON decoder allows (it refuses 1024 levels): no recursion
    error, no slowdown; the Condition at the bottom still counts."""
    nested = f'{{"resourceType": "Bundle", "type": "{bundle_type}", "entry": [{{"resource": ' * depth
    nested += CALCINOSIS + "}]}" * depth
    head = json.dumps({k: v for k, v in FOUND[0].items() if k != "prefetch"})[:-1]
    content = f'{head}, "prefetch": {{"patient": null, "observations": null, "conditions": {nested}}}}}'.encode()
    response = send(SERVICE, content)
    answer = check_json(response)
    if response.status_code == 200:
        assert answer["cards"], "the Condition at the bottom of the nesting was lost"
    else:
        check_error(response, None, {400})


@FUZZ
@given(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", min_size=ECHO_MIN, max_size=40),
    st.sampled_from(["", "/feedback"]),
)
@example("unknown-service", "")
def test_unknown_services_are_404_without_echo(service_id: str, suffix: str) -> None:
    """The path is request content too: a 404 names no service the caller made up."""
    response = send(f"/cds-services/{service_id}{suffix}", encode(FOUND[0]))
    check_json(response)
    if service_id != SERVICE_ID:
        check_error(response, [service_id], {404})


@FUZZ
@given(st.sampled_from(["text/plain", "", "multipart/form-data", "application/x-www-form-urlencoded", "json"]))
def test_other_content_types_are_415(content_type: str) -> None:
    response = send(SERVICE, b"{}", content_type)
    check_json(response)
    check_error(response, None, {415})


@FUZZ
@given(fs.detached(fs.feedback_bodies()))
def test_feedback_never_fails_on_the_server(body: Any) -> None:
    note(f"request body: {encode(body).decode()}")
    response = send(SERVICE + "/feedback", encode(body))
    answer = check_json(response)
    event(f"status {response.status_code}")
    if response.status_code == 200:
        Feedback.model_validate(body)
        assert answer["received"] == len(body["feedback"]) and 0 <= answer["new"] <= answer["received"]
    else:
        check_error(response, body, {400})


# ----- the mapping on its own -------------------------------------------------------------------

KNOWLEDGE = default_knowledge()


@FUZZ
@given(
    st.sampled_from(["pat-1", "123"]).flatmap(
        lambda pid: st.tuples(st.just(pid), fs.detached(fs.resource_lists(pid, 12)))
    ),
    st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.booleans(),
)
@example(("pat-1", [EDGE_ONSET]), datetime(2026, 11, 1, tzinfo=UTC), True)
@example(("pat-1", [EARLY_ONSET]), datetime(2026, 11, 1, tzinfo=UTC), True)
@example(
    ("pat-1", [{**EDGE_ONSET, "onsetDateTime": "2020-01-01", "recordedDate": "9999-12-31T23:59:59-12:00"}]),
    datetime(2026, 11, 1, tzinfo=UTC),
    True,
)
def test_assess_resources_skips_and_counts_junk(
    chart: tuple[str, list[Any]], as_of: datetime, pass_patient: bool
) -> None:
    """`assess_resources` never raises on any list of resources: unusable ones are skipped and
    counted, and whatever it concludes renders as cards that conform to the spec models."""
    patient_id, resources = chart
    with hard_limit():
        result = assess_resources(resources, as_of, patient_id if pass_patient else None)
    findings = result.findings
    not_objects = sum(1 for r in resources if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str))
    assert findings.resources_seen == len(resources)
    assert not_objects <= findings.resources_skipped <= findings.resources_seen
    cards = render_cards(result.assessment, KNOWLEDGE, uuid.UUID(int=7), patient_id)
    HookResponse.model_validate(HookResponse(cards=cards).wire())


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    """Load the FHIR models and value sets once, so the first example is not timed with them."""
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(10.2, 4.0, 7.7, egfr=7)
    body = hook_request(chart)
    assert send(SERVICE, encode(body)).status_code == 200
