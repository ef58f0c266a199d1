"""OpenTelemetry traces of hook calls, off unless the site asks for them, and never with patient data.

When it is on. A site turns tracing on with the standard OpenTelemetry variables, and only then:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) sends spans over OTLP/HTTP
to that collector; `OTEL_TRACES_EXPORTER=otlp` or `console` selects an exporter explicitly, and
`none` (or `OTEL_SDK_DISABLED=true`) keeps tracing off whatever else is set. Everything else is
the SDK's own reading of `OTEL_*` (service name and resource attributes, sampler, batch sizes,
headers, time-outs, TLS). A variable is the switch, not a setting of the service, because the
collector is infrastructure the site already describes to every other program this way; with none
of them set, no instrumentation is installed and a hook call costs nothing extra.

What is traced. Each hook call is one trace: the server span of the FastAPI instrumentation
(continuing the caller's W3C `traceparent`, if any), with children for the prefetch resolution,
each FHIR fetch (and under it the httpx client span, which sends `traceparent` on to the FHIR
server), the assessment and the rendering of the cards. The hook call span carries the hook, the
service and the `hookInstance` (the EHR's own random id for the call, which is how a trace is
found from a log line or an audit record).

What is never traced. Patient ids sit in FHIR URLs (`Observation?patient=123`, `Patient/123`),
next links carry server state, and exception messages may quote either. Every span therefore
passes `PatientDataFilter` before any exporter sees it: attributes are kept only from a short list
of HTTP facts (method, status, route template, host and port) and this service's own
`calcinosis.*` attributes (which never hold data from the record); URLs are reduced to their
template (`http://fhir.example/r4/Observation?patient=&code=`); exception events keep the type
only; status descriptions are dropped. The filter sits in the export pipeline rather than in each
instrumentation's hooks, so an attribute an instrumentation adds in a later version is dropped
until it is reviewed and listed here, instead of leaking until someone notices.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from hooks import __version__

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "calcinosis-cds"
TRACER_NAME = "calcinosis_cds"
#: Probes answer many times a minute and say nothing about a hook call: not traced.
EXCLUDED_PATHS = "/healthz,/readyz"

#: HTTP facts the instrumentations record that hold nothing from a record (old and new semantic
#: conventions). URLs and paths are rewritten by `url_template`; everything else is dropped.
SAFE_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.request.method_original",
        "http.status_code",
        "http.response.status_code",
        "http.route",
        "http.scheme",
        "http.flavor",
        "url.scheme",
        "network.protocol.version",
        "server.address",
        "server.port",
        "net.host.port",
        "net.peer.name",
        "net.peer.port",
        "error.type",
    }
)
URL_ATTRIBUTES = frozenset({"url.full", "http.url"})
PATH_ATTRIBUTES = frozenset({"url.path", "http.target"})
#: The service's own attributes: written by this module's callers, never from the record.
OWN_PREFIX = "calcinosis."
#: Of an exception event, only what kind of failure it was (messages can quote URLs and values).
SAFE_EVENT_ATTRIBUTES = frozenset({"exception.type", "exception.escaped"})

# A FHIR resource type (`Observation`, `MedicationRequest`), an operation (`$everything`) or a
# FHIR path keyword (`_history`, `_search`). Any other path segment may be an id and is replaced.
_PATH_WORD = re.compile(r"[A-Z][A-Za-z]{2,63}|\$[a-z][a-z-]{1,63}|_[a-z]{3,20}")
# Ids are made of these characters too, so a capitalised id (`Smith`) could pass as a resource
# type; a segment passes only if it is also a type the FHIR model knows.


class TracingConfigError(ValueError):
    """An `OTEL_*` variable asks for something this build cannot do (said at start, not at export)."""


@functools.lru_cache(maxsize=512)
def _is_resource_type(word: str) -> bool:
    """Whether `word` names a FHIR R4 resource (not an id that happens to be capitalised)."""
    if word.startswith(("$", "_")):
        return True
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        model = get_fhir_model_class(word)
    except (KeyError, ValueError, ImportError):
        return False
    return isinstance(model, type) and issubclass(model, Resource)


def url_template(url: str) -> str:
    """A URL reduced to what says where a call went, not about whom: scheme, host and port, path
    segments that are resource types or keywords (`{}` for every other segment, ids included),
    and query parameter names without their values. A relative URL keeps its relative form."""
    parts = urlsplit(url)
    segments = [
        segment if not segment or (_PATH_WORD.fullmatch(segment) and _is_resource_type(segment)) else "{}"
        for segment in parts.path.split("/")[1 if parts.path.startswith("/") else 0 :]
    ]
    path = ("/" if parts.path.startswith("/") else "") + "/".join(segments) if parts.path else ""
    names = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True)})
    query = "?" + "&".join(f"{name}=" for name in names) if names else ""
    origin = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" if parts.scheme else ""
    return origin + path + query


def safe_attributes(attributes: Attributes, allowed: frozenset[str] = SAFE_ATTRIBUTES) -> dict[str, AttributeValue]:
    """The attributes an exporter may see: the listed ones, URLs as templates, ours; no others."""
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key in URL_ATTRIBUTES or key in PATH_ATTRIBUTES:
            if isinstance(value, str):
                kept[key] = url_template(value)
        elif key in allowed or key.startswith(OWN_PREFIX):
            kept[key] = value
    return kept


class PatientDataFilter(SpanProcessor):
    """A span processor in front of the exporting one: what it passes on holds no patient data.

    The SDK's spans are immutable once ended, so the filter hands the next processor a copy built
    from the kept parts (same ids, parent, times, kind and resource)."""

    def __init__(self, exporting: SpanProcessor) -> None:
        self.exporting = exporting

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Nothing to filter yet (attributes are read when the span ends)."""

    def on_end(self, span: ReadableSpan) -> None:
        events = [
            Event(event.name, safe_attributes(event.attributes, SAFE_EVENT_ATTRIBUTES), event.timestamp)
            for event in span.events
        ]
        links = [trace.Link(link.context) for link in span.links]
        self.exporting.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=safe_attributes(span.attributes),
                events=events,
                links=links,
                kind=span.kind,
                status=Status(span.status.status_code),
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flushed: bool = self.exporting.force_flush(timeout_millis)
        return flushed


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether the `OTEL_*` variables ask for traces (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def filtered(exporter: SpanExporter, batch: bool = True) -> PatientDataFilter:
    """The export pipeline for `exporter`: the patient data filter, then a batch (or, in tests, a
    synchronous) span processor."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    return PatientDataFilter(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=SERVICE_NAME)
    if name != "otlp":
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not available here (otlp, console or none)")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol not in ("", "http/protobuf"):
        raise TracingConfigError(f"OTLP protocol {protocol!r} is not available here (only http/protobuf)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, time-out, TLS: from the OTEL_EXPORTER_OTLP_* variables


def provider_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A tracer provider exporting as the `OTEL_*` variables say, or None when tracing is off.

    `service.name` is `calcinosis-cds` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
    names it; `service.version` is this release."""
    environ = os.environ if environ is None else environ
    if not tracing_requested(environ):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    exporters = [_exporter(name, environ) for name in names if name != "none"]
    detected = Resource.create()
    attributes: dict[str, AttributeValue] = {"service.name": SERVICE_NAME, "service.version": __version__}
    for key, value in detected.attributes.items():
        if not (key == "service.name" and str(value).startswith("unknown_service")):
            attributes[key] = value
    provider = TracerProvider(resource=Resource(attributes, detected.schema_url))
    for exporter in exporters:
        provider.add_span_processor(filtered(exporter))
    return provider


_active: TracerProvider | None = None


def enable(provider: TracerProvider) -> None:
    """Trace with `provider` from now on in this process (the app does it from the environment;
    tests with an in-memory exporter). Not OpenTelemetry's global provider, which can be set once
    per process only."""
    global _active
    _active = provider
    _tracer.cache_clear()


def disable() -> None:
    """Stop tracing (spans already ended are exported by their provider as usual)."""
    global _active
    _active = None
    _tracer.cache_clear()


def active() -> TracerProvider | None:
    """The provider in use, or None when tracing is off."""
    return _active


def configure_from_environment() -> TracerProvider | None:
    """Enable tracing as the `OTEL_*` variables say, unless a provider is already active."""
    if _active is None:
        provider = provider_from_environment()
        if provider is not None:
            enable(provider)
    return _active


@functools.lru_cache(maxsize=1)
def _tracer() -> trace.Tracer:
    assert _active is not None
    return _active.get_tracer(TRACER_NAME, __version__)


@contextmanager
def step(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
    """A span of the current trace for one step of a call (a no-op span when tracing is off).

    A failure marks the span as an error with the exception's type only (`error.type`): the
    message is not recorded, since it may quote a URL or a value."""
    if _active is None:
        yield INVALID_SPAN
        return
    with _tracer().start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            raise


P = ParamSpec("P")
R = TypeVar("R")


def traced(
    name: str, attributes: Callable[..., Mapping[str, AttributeValue]] | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a coroutine function so that each call is a `step`; `attributes`, given the same
    arguments, says what the span records (never data from the record)."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if _active is None:
                return await function(*args, **kwargs)
            with step(name, attributes(*args, **kwargs) if attributes is not None else None):
                return await function(*args, **kwargs)

        return run

    return decorate


def describe_call(**attributes: AttributeValue) -> None:
    """Add `calcinosis.<key>` attributes to the span of the current request (no-op when off)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({OWN_PREFIX + key: value for key, value in attributes.items()})


def fhir_fetch_attributes(url: str) -> dict[str, AttributeValue]:
    """What a FHIR fetch span says about its URL: the resource type and the kind of interaction."""
    template = url_template(url)
    path = urlsplit(template).path
    types = [segment for segment in path.split("/") if segment and segment != "{}" and segment[0].isupper()]
    interaction = "read" if "?" not in template and path.endswith("{}") and types else "search"
    return {"calcinosis.fhir.resource_type": types[-1] if types else "-", "calcinosis.fhir.interaction": interaction}


def instrument_app(app: FastAPI) -> None:
    """Server spans for every request but the probes, continuing an incoming `traceparent`."""
    if _active is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_active,
        excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", EXCLUDED_PATHS),
        # One span per ASGI message of the body would bury the steps of the call.
        exclude_spans=["receive", "send"],
    )


def instrument_client(client: httpx.AsyncClient) -> None:
    """Client spans for the outbound FHIR requests, each sending `traceparent` to the server."""
    if _active is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_active)
