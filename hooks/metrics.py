"""Prometheus metrics. Labels carry endpoints, statuses, reasons and card topics only: never a
patient, user or request identifier, so the metrics can leave the hospital network safely.

With several uvicorn workers in one container each worker keeps its own counters; run one worker
per pod and scale with replicas (the deployment files do) to keep `/metrics` complete.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

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
