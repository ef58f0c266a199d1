"""Prometheus metrics. Labels carry endpoints, statuses, reasons, stores and card topics only: never
a patient, user or request identifier, so the metrics can leave the hospital network safely.

The metrics are served on a port of their own (`CALCINOSIS_METRICS_PORT`, `metrics_app` below),
not on the port the EHR calls: the service port publishes the CDS Hooks endpoints and probes only.
With several uvicorn workers in one container each worker keeps its own counters and answers a
scrape in turn (the port is shared with SO_REUSEPORT); run one worker per pod and scale with
replicas (the deployment files do) to keep each scrape complete.
"""

from __future__ import annotations

import asyncio
import platform
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from hooks import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# CPU seconds, resident memory, open file descriptors and start time of the process; garbage
# collections per generation; the Python implementation and version.
process_collector.ProcessCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)

BUILD_INFO = Gauge(
    "calcinosis_build_info",
    "Always 1; the labels say which release and knowledge-base version this process runs",
    ["version", "knowledge_base", "python"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "calcinosis_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "calcinosis_request_seconds",
    "Request latency by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
FHIR_FETCHES = Counter(
    "calcinosis_fhir_fetches_total", "FHIR fallback requests by outcome", ["outcome"], registry=REGISTRY
)
FHIR_LATENCY = Histogram(
    "calcinosis_fhir_fetch_seconds",
    "FHIR fallback request latency",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0),
    registry=REGISTRY,
)
CARDS = Counter(
    "calcinosis_cards_total", "Cards returned by topic and indicator", ["topic", "indicator"], registry=REGISTRY
)
CARDS_SUPPRESSED = Counter(
    "calcinosis_cards_suppressed_total",
    "Cards held back because a clinician overrode the same card for the same patient and evidence",
    ["topic"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter("calcinosis_auth_failures_total", "Rejected tokens by reason", ["reason"], registry=REGISTRY)
SHED = Counter(
    "calcinosis_shed_requests_total", "Requests answered 503 because the worker was at its limit", registry=REGISTRY
)
IN_FLIGHT = Gauge("calcinosis_requests_in_flight", "Requests the worker is handling now", registry=REGISTRY)
IN_FLIGHT_PEAK = Gauge(
    "calcinosis_requests_in_flight_peak",
    "Most requests the worker has handled at once since it started (never above its limit)",
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "calcinosis_store_errors_total",
    "Failed operations on the feedback store and the JWT replay cache (the log says which exception type)",
    ["store", "operation"],
    registry=REGISTRY,
)
for _store, _operations in (("feedback", ("add",)), ("replay_cache", ("first_use", "ping"))):
    for _operation in _operations:
        STORE_ERRORS.labels(_store, _operation)  # the series exist (at 0) before the first failure, for rate()


def record_build(knowledge_base_version: str) -> None:
    """Publish the build information (once per process; the app calls it when it is built)."""
    BUILD_INFO.clear()
    BUILD_INFO.labels(__version__, knowledge_base_version, platform.python_version()).set(1)


@contextmanager
def counting_store_errors(store: str, operation: str) -> Iterator[None]:
    """Count an exception leaving a store operation, then let it propagate."""
    try:
        yield
    except Exception:
        STORE_ERRORS.labels(store, operation).inc()
        raise


def store_failed(store: str, operation: str) -> None:
    """Count a store failure that was handled without an exception (e.g. a ping that said no)."""
    STORE_ERRORS.labels(store, operation).inc()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def metrics_response(method: str, path: str) -> tuple[int, str, bytes]:
    """What the metrics port answers: `GET /metrics` in the Prometheus text format, 404 otherwise."""
    if path.split("?", 1)[0] == "/metrics" and method in ("GET", "HEAD"):
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
    return 404, "text/plain; charset=utf-8", b"not found: the metrics are at /metrics\n"


async def metrics_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The metrics port's answers as an ASGI app (for in-process use and tests)."""
    if scope["type"] != "http":
        return
    status, content_type, body = metrics_response(scope["method"], scope["path"])
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class RequestMetrics:
    """ASGI middleware counting every answer by route template and status, and its latency.

    A plain ASGI wrapper rather than an `@app.middleware("http")` function: an unhandled exception
    passes through those before the outermost error handler turns it into the 500, so a 500 was
    never counted. Here the status is read from the response as it is sent, and an exception on
    its way out is counted as the 500 the error handler is about to send.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = 500
            raise
        finally:
            # The route template (`/cds-services/{service_id}`), never the raw path.
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(endpoint, str(status)).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - started)


async def _answer_scrape(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One HTTP/1.1 exchange on the metrics port, then the connection closes (Prometheus
    scrapes seldom; keep-alive is not worth a parser)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, path = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        status, content_type, body = metrics_response(method, path)
        if not method:
            status, body = 400, b"bad request\n"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + (b"" if method == "HEAD" else body)
        )
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # a client that sent no complete request, or left: nothing to answer
    finally:
        writer.close()


async def serve_metrics(host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Serve the metrics on host:port from the running event loop; returns the coroutine
    function that stops it. The socket is opened with SO_REUSEPORT so every worker of a
    multi-worker `serve` can bind the same port (each answers with its own counters)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    server = await asyncio.start_server(_answer_scrape, sock=sock, limit=16_384)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop
