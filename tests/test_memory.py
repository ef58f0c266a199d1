"""A request's objects must be freed when it ends, by reference counting, not by the cyclic
collector: with the young generation sized above one request's allocations (`hooks.app`), a cycle
holding a chart would keep whole charts alive until a full collection, and a worker's memory
would creep up under load (the benchmark's soak found exactly that once: a builder holding its
own bound methods)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bench.workloads import charts as bench_charts
from calcinosis.knowledge_base import default_knowledge
from fhir_mapping import bundle_resources
from fhir_mapping.pipeline import assess_resources, default_terminology
from hooks.cards import render_cards
from hooks.wire import decode_hook_request

CHARTS = {name: chart.request_bytes() for name, chart in bench_charts().items()}


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_assessing_a_chart_leaves_no_cyclic_garbage(name: str, collector_off: None) -> None:
    request = decode_hook_request(CHARTS[name])
    resources = [
        resource
        for value in request["prefetch"].values()
        for resource in (bundle_resources(value) if value.get("resourceType") == "Bundle" else [value])
    ]
    patient_id = request["context"]["patientId"]
    result = assess_resources(resources, datetime.now(UTC), patient_id, default_terminology(), default_knowledge())
    assert result.assessment is not None
    render_cards(result.assessment, default_knowledge(), uuid.uuid4(), patient_id)
    del result, resources, request
    assert gc.collect() == 0
