"""Tracing (hooks/tracing.py): one trace per hook call, W3C `traceparent` in and out, steps as spans,
and no patient data in anything an exporter receives.

The spans are collected with the SDK's in-memory exporter behind the same filter the OTLP exporter
sits behind; the FHIR server is a real HTTP server on a loopback port (tests/realservers.py) that
records the `traceparent` each fetch carried. The leak scan is shown to work: with the filter taken
out of the pipeline it finds the patient's id in the instrumentations' URL attributes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from calcinosis_tools.scenarios import ANCHOR, draft_orders_dir, load_scenarios, shift_dates
from hooks import tracing
from hooks.app import create_app
from hooks.logs import JsonFormatter
from hooks.settings import Settings
from tests.charts import ICD10, Chart
from tests.hookclient import hook_request
from tests.realservers import FhirServer, fhir_server, service_process

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SERVICE = "/cds-services/calcinosis"

PATIENT_ID = "tr-8841-whitcombe"
FAMILY, GIVEN, BIRTH_DATE = "Whitcombe", "Marisol", "1958-03-17"
TOKEN = "fhir-token-trace-9d2f"
#: Everything in this chart or request that is about the patient (or grants access to the record):
#: the id, the name, the birth date, the codes of the record and the values of its labs.
PATIENT_DATA = (
    PATIENT_ID,
    FAMILY,
    GIVEN,
    BIRTH_DATE,
    "L94.2",
    "M34.1",
    "CR(E)ST",
    "17861-6",
    "2777-1",
    "10.37",
    "3.61",
    "Left knee",
    TOKEN,
)


def traced_chart() -> Chart:
    chart = Chart(patient_id=PATIENT_ID, birth_date=BIRTH_DATE)
    patient = next(r for r in chart.resources if r["resourceType"] == "Patient")
    patient["name"] = [{"family": FAMILY, "given": [GIVEN]}]
    chart.calcinosis(body_sites=["Left knee"])
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(10.37, 4.13, 3.61)
    return chart


def _collecting(filtered: bool) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(tracing.filtered(exporter, batch=False) if filtered else SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans as an exporter receives them: through the patient data filter."""
    yield from _collecting(filtered=True)


@pytest.fixture
def unfiltered() -> Iterator[InMemorySpanExporter]:
    """Spans with the filter switched off, to show that the leak scan finds what it looks for."""
    yield from _collecting(filtered=False)


def call_through_a_fhir_server(
    chart: Chart, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, FhirServer]:
    """A patient-view call with no prefetch: everything is fetched from a real FHIR server."""
    server = FhirServer(resources=chart.resources)
    with fhir_server(server):
        base = server.url + "/r4"
        app = create_app(
            Settings(auth_disabled=True, feedback_database_url="memory://", metrics_port=0, local_fhir_servers=[base])
        )
        body = hook_request(chart, prefetch={}, fhirServer=base)
        body["fhirAuthorization"] = {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        }

        async def scenario() -> httpx.Response:
            async with app.router.lifespan_context(app):  # the app's own outbound client
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
                    return await client.post(SERVICE, json=body, headers=headers)

        response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]][:1] == ["subtype"]
    return response, server


def patient_data_in(spans: Sequence[ReadableSpan], data: Sequence[str] = PATIENT_DATA) -> list[str]:
    """Every place a span shows one of `data`: its name, attributes, events, links, status."""
    found = []
    for span in spans:
        texts = [span.name, span.status.description or ""]
        texts += [f"{key}={value}" for key, value in (span.attributes or {}).items()]
        for event in span.events:
            texts.append(event.name)
            texts += [f"{key}={value}" for key, value in (event.attributes or {}).items()]
        for link in span.links:
            texts += [f"{key}={value}" for key, value in (link.attributes or {}).items()]
        for text in texts:
            found += [f"{span.name!r}: {item!r} in {text[:160]!r}" for item in data if item.lower() in text.lower()]
    return found


def test_one_trace_per_hook_call_with_a_span_for_each_step(exported: InMemorySpanExporter) -> None:
    response, server = call_through_a_fhir_server(traced_chart(), {"traceparent": INCOMING})
    spans = exported.get_finished_spans()
    # The caller's trace continues (W3C traceparent in): one trace, under the caller's span.
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    [call] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert call.name == "POST /cds-services/{service_id}"
    assert call.parent is not None and format(call.parent.span_id, "016x") == CALLER_SPAN
    attributes = call.attributes or {}
    assert attributes["calcinosis.hook"] == "patient-view" and attributes["calcinosis.service"] == "calcinosis"
    assert attributes["calcinosis.cards"] == len(response.json()["cards"])
    assert attributes["http.route"] == "/cds-services/{service_id}"

    by_id = {s.context.span_id: s for s in spans}

    def parent_name(span: ReadableSpan) -> str:
        return by_id[span.parent.span_id].name if span.parent and span.parent.span_id in by_id else "-"

    steps = [s.name for s in spans if parent_name(s) == call.name]
    assert sorted(set(steps)) == ["assessment", "prefetch resolution", "rendering"], steps
    fetches = [s for s in spans if s.name == "FHIR fetch"]
    # Each FHIR request the server saw is one fetch span of the prefetch resolution.
    assert len(fetches) == len(server.seen) >= 3
    assert {parent_name(s) for s in fetches} == {"prefetch resolution"}
    assert {(s.attributes or {})["calcinosis.fhir.resource_type"] for s in fetches} >= {"Condition", "Observation"}
    rendering = next(s for s in spans if s.name == "rendering")
    assert (rendering.attributes or {})["calcinosis.cards"] == len(response.json()["cards"])
    # Under each fetch, the httpx client span; its context went out as the request's traceparent.
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(clients) == len(fetches) and {parent_name(s) for s in clients} == {"FHIR fetch"}
    sent = {seen.traceparent for seen in server.seen}
    assert sent == {f"00-{TRACE_ID}-{format(s.context.span_id, '016x')}-01" for s in clients}
    # The hookInstance finds the trace from a log line or an audit record.
    assert attributes["calcinosis.hook_instance"]


class _JsonLines(logging.Handler):
    """The service's log lines in the JSON format, formatted as they are written (the trace and
    request of a line are read while it is logged, as a stream handler would)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_log() -> Iterator[_JsonLines]:
    """The service's lines and the audit trail (its own logger, not propagated when served)."""
    handler = _JsonLines()
    service, audit = logging.getLogger("calcinosis_cds"), logging.getLogger("calcinosis_cds.audit")
    saved = (service.level, audit.level, audit.propagate)
    for logger in (service, audit):
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    audit.propagate = False
    try:
        yield handler
    finally:
        for logger in (service, audit):
            logger.removeHandler(handler)
        service.setLevel(saved[0])
        audit.setLevel(saved[1])
        audit.propagate = saved[2]


def hook_call_line(log: _JsonLines) -> dict[str, Any]:
    [line] = [entry for entry in log.lines if entry["message"] == "hook call"]
    return line


def test_the_hook_call_log_line_names_its_trace_and_span(exported: InMemorySpanExporter, json_log: _JsonLines) -> None:
    """A JSON log line is joined with its trace by `traceId` (and `spanId`): the hook call line
    carries the ids of the exported server span of that call, and the audit record too."""
    response, _ = call_through_a_fhir_server(traced_chart(), {"traceparent": INCOMING})
    [call] = [s for s in exported.get_finished_spans() if s.kind == SpanKind.SERVER]
    line = hook_call_line(json_log)
    assert line["hookInstance"] and line["cards"] == len(response.json()["cards"])
    assert line["traceId"] == format(call.context.trace_id, "032x") == TRACE_ID
    assert line["spanId"] == format(call.context.span_id, "016x")
    audit = [entry for entry in json_log.lines if entry["logger"] == "calcinosis_cds.audit"]
    assert audit and {entry["traceId"] for entry in audit} == {TRACE_ID}


def test_a_new_trace_started_here_is_the_one_the_log_line_names(
    exported: InMemorySpanExporter, json_log: _JsonLines
) -> None:
    """Without an incoming `traceparent` the service starts the trace: the line names that one."""
    call_through_a_fhir_server(traced_chart())
    [call] = [s for s in exported.get_finished_spans() if s.kind == SpanKind.SERVER]
    line = hook_call_line(json_log)
    assert line["traceId"] == format(call.context.trace_id, "032x") != TRACE_ID
    assert line["spanId"] == format(call.context.span_id, "016x")


def test_without_tracing_log_lines_carry_no_trace_ids(monkeypatch: pytest.MonkeyPatch, json_log: _JsonLines) -> None:
    """Tracing off (no OTEL_* variable): no `traceId`, even when the caller sent a traceparent."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    call_through_a_fhir_server(traced_chart(), {"traceparent": INCOMING})
    assert tracing.active() is None
    line = hook_call_line(json_log)
    assert line["status"] == 200 and "traceId" not in line and "spanId" not in line
    assert not [entry for entry in json_log.lines if "traceId" in entry or "spanId" in entry]


def test_a_span_of_another_tracer_is_not_named_while_tracing_is_off() -> None:
    """Off means off: a span that a host process's own tracer made current gives no ids, until
    this service's tracing is enabled (with that provider, here)."""
    provider = TracerProvider()
    record = logging.LogRecord("calcinosis_cds", logging.INFO, __file__, 1, "hook call", None, None)
    try:
        with provider.get_tracer("host").start_as_current_span("host work") as span:
            assert span.get_span_context().is_valid
            assert "traceId" not in json.loads(JsonFormatter().format(record))
            tracing.enable(provider)
            entry = json.loads(JsonFormatter().format(record))
            assert entry["traceId"] == format(span.get_span_context().trace_id, "032x")
    finally:
        tracing.disable()
        provider.shutdown()


def test_no_patient_data_in_any_span(exported: InMemorySpanExporter) -> None:
    call_through_a_fhir_server(traced_chart(), {"traceparent": INCOMING})
    spans = exported.get_finished_spans()
    assert len(spans) > 5
    assert patient_data_in(spans) == []
    # What is left of a FHIR URL is its template.
    urls = [str((s.attributes or {}).get("url.full") or (s.attributes or {}).get("http.url")) for s in spans]
    assert any(url.endswith("/Condition?patient=") or "/Condition?" in url for url in urls), urls


def test_the_scan_finds_patient_data_when_the_filter_is_off(unfiltered: InMemorySpanExporter) -> None:
    """The instrumentations put the FHIR URLs (patient id in the query and path) in attributes:
    without the filter the scan above would fail, so it is not a test that cannot fail."""
    call_through_a_fhir_server(traced_chart())
    found = patient_data_in(unfiltered.get_finished_spans())
    assert any(repr(PATIENT_ID) in line for line in found), found


def test_an_order_sign_call_is_traced_the_same_way_without_patient_data(exported: InMemorySpanExporter) -> None:
    """The order-sign service: its prefetch resolution, fetches, order check and rendering are
    the steps of its trace; the draft order (a warfarin renewal) shows in no span."""
    scenario = next(s for s in load_scenarios() if s.name == "calciphylaxis-coded")
    bundle = shift_dates(scenario.bundle, ANCHOR, date.today())
    resources = [entry["resource"] for entry in bundle["entry"]]
    drafts = json.loads((draft_orders_dir() / "warfarin-calciphylaxis-coded.json").read_text(encoding="utf-8"))
    server = FhirServer(resources=resources)
    with fhir_server(server):
        base = server.url + "/r4"
        app = create_app(
            Settings(auth_disabled=True, feedback_database_url="memory://", metrics_port=0, local_fhir_servers=[base])
        )
        body = {
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": base,
            "context": {"userId": "Practitioner/doc-1", "patientId": scenario.patient_id, "draftOrders": drafts},
        }

        async def scenario_call() -> httpx.Response:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
                    return await client.post("/cds-services/calcinosis-order-sign", json=body)

        response = asyncio.run(scenario_call())
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert [c["indicator"] for c in cards] == ["warning"]
    spans = exported.get_finished_spans()
    [call] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert (call.attributes or {})["calcinosis.service"] == "calcinosis-order-sign"
    steps = {s.name for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id}
    assert steps == {"prefetch resolution", "assessment", "rendering"}
    assert len([s for s in spans if s.name == "FHIR fetch"]) == len(server.seen) >= 1
    order_data = (scenario.patient_id, "855332", "warfarin", "draft-warfarin")
    assert patient_data_in(spans, order_data) == []


def test_exception_messages_and_status_descriptions_do_not_reach_the_exporter(
    exported: InMemorySpanExporter,
) -> None:
    provider = tracing.active()
    assert provider is not None
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError), tracer.start_as_current_span("fetch", attributes={"url.full": "x"}):
        raise ValueError(f"no Patient/{PATIENT_ID} on https://fhir.example/r4")
    with pytest.raises(KeyError), tracing.step("assessment"):
        raise KeyError(FAMILY)
    spans = exported.get_finished_spans()
    assert patient_data_in(spans) == []
    fetch = next(s for s in spans if s.name == "fetch")
    assert fetch.status.status_code == StatusCode.ERROR and fetch.status.description is None
    # The event says that it failed and how (the type), not the message nor the stack trace.
    assert [(e.name, dict(e.attributes or {})) for e in fetch.events] == [
        ("exception", {"exception.type": "ValueError", "exception.escaped": "False"})
    ]
    assessment = next(s for s in spans if s.name == "assessment")
    assert assessment.status.status_code == StatusCode.ERROR
    assert dict(assessment.attributes or {}) == {"error.type": "KeyError"} and not assessment.events


def test_url_templates_keep_resource_types_and_parameter_names_only() -> None:
    template = tracing.url_template
    assert template("https://fhir.example/r4/Patient/Smith") == "https://fhir.example/{}/Patient/{}"
    assert (
        template("http://127.0.0.1:8080/r4/Observation?patient=Patient/pat-1&code=http://loinc.org|17861-6&_count=50")
        == "http://127.0.0.1:8080/{}/Observation?_count=&code=&patient="
    )
    assert template("MedicationRequest?subject=pat-1") == "MedicationRequest?subject="
    assert template("Patient/pat-1/$everything") == "Patient/{}/$everything"
    # A capitalised id is not taken for a resource type, nor a FHIR data type name.
    assert template("Patient/Whitcombe") == "Patient/{}"
    assert template("Patient/HumanName") == "Patient/{}"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "cds"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_an_otel_variable_selects_an_exporter(environ: dict[str, str], on: bool) -> None:
    assert tracing.tracing_requested(environ) is on
    assert (tracing.provider_from_environment(environ) is not None) is on


def test_an_exporter_this_build_cannot_run_is_refused_at_start() -> None:
    with pytest.raises(tracing.TracingConfigError, match="zipkin"):
        tracing.provider_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(tracing.TracingConfigError, match="grpc"):
        tracing.provider_from_environment({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_without_otel_variables_the_app_is_not_instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    app = create_app(Settings(auth_disabled=True, feedback_database_url="memory://", metrics_port=0))
    assert tracing.active() is None
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


class _Collector:
    """An OTLP/HTTP trace receiver on a loopback port: keeps every export request it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.raw.append(body)
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                collector.requests.append(message)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def span_names(self) -> list[str]:
        return [
            span.name
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


def test_the_service_exports_its_traces_over_otlp_when_the_endpoint_is_set() -> None:
    """The command a site runs, configured by the standard variables only: the spans reach an
    OTLP/HTTP collector, with the service's name, and the bytes sent hold no patient data."""
    collector = _Collector()
    collector.thread.start()
    chart = traced_chart()
    server = FhirServer(resources=chart.resources)
    try:
        with fhir_server(server):
            base = server.url + "/r4"
            env = {
                "CALCINOSIS_AUTH_DISABLED": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "CALCINOSIS_LOG_FORMAT": "json",
            }
            with service_process(env) as service:
                body = hook_request(chart, prefetch={}, fhirServer=base)
                answer = httpx.post(service.url + SERVICE, json=body, headers={"traceparent": INCOMING}, timeout=60)
                assert answer.status_code == 200, answer.text
                for _ in range(100):
                    if "assessment" in collector.span_names():
                        break
                    threading.Event().wait(0.1)
                log = service.log()
    finally:
        collector.httpd.shutdown()
        collector.httpd.server_close()
    names = collector.span_names()
    assert {"POST /cds-services/{service_id}", "prefetch resolution", "FHIR fetch", "assessment", "rendering"} <= set(
        names
    ), (names, log[-2000:])
    resource = {a.key: a.value.string_value for a in collector.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "calcinosis-cds"
    assert {seen.traceparent.split("-")[1] for seen in server.seen if seen.traceparent} == {TRACE_ID}
    everything = b"".join(collector.raw)
    assert [item for item in PATIENT_DATA if item.encode() in everything] == []
    # The JSON log of the served process joins the trace the collector received.
    server_spans = [
        span
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if span.kind == span.SPAN_KIND_SERVER
    ]
    [call] = [json.loads(line) for line in log.splitlines() if '"message":"hook call"' in line]
    assert call["traceId"] == TRACE_ID and call["spanId"] in {span.span_id.hex() for span in server_spans}
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    joined = [e for e in lines if e.get("requestId") == call["requestId"]]
    assert {e["logger"] for e in joined} >= {"calcinosis_cds", "calcinosis_cds.audit", "uvicorn.access"}
    assert {(e["traceId"], e["spanId"]) for e in joined} == {(call["traceId"], call["spanId"])}
    # The probe is not traced: its access line names no trace.
    assert [e for e in lines if e.get("path") == "/healthz" and "traceId" in e] == []
