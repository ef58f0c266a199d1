"""The no-prefetch path at scale (issue 13, item 7) against the local FHIR sandbox: a 20-year
dialysis chart with 12,000 matching Observations, which paging alone could not read (page cap x
page size is 4,000 by default), is answered with the same cards as with prefetch, by the service
run with its default settings: default caps, default page size and the default deadline
(`fetch_deadline_seconds`, 4 s), with the chart just loaded (the sandbox's first searches of it).

How long it takes is measured by bench/sandbox.py (against the sum of the service's searches and
the slowest one); here, the answer must simply arrive before the default deadline, or it would be
a 412."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.workloads import Chart as BenchChart
from bench.workloads import long_dialysis
from hooks.settings import Settings
from tests.realservers import ServiceProcess, service_process


@pytest.fixture(scope="module")
def dialysis20(fhir_sandbox: str) -> BenchChart:
    chart = long_dialysis()
    assert len(chart.of_type("Observation")) >= 10_000
    response = httpx.post(
        fhir_sandbox,
        json=chart.transaction(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=600,
    )
    assert response.status_code == 200, response.text[:500]
    return chart


@pytest.fixture(scope="module")
def default_service() -> Iterator[ServiceProcess]:
    """The service with its default fetch settings (authentication off, for a local test); they
    are written out so that the environment the tests run in cannot change them."""
    fields = Settings.model_fields
    env = {
        "CALCINOSIS_AUTH_DISABLED": "true",
        "CALCINOSIS_LOG_LEVEL": "WARNING",
        **{
            f"CALCINOSIS_{name.upper()}": str(fields[name].default)
            for name in (
                "fetch_deadline_seconds",
                "fhir_request_timeout_seconds",
                "fhir_page_size",
                "fhir_page_cap",
                "fhir_max_response_bytes",
                "fhir_max_request_bytes",
            )
        },
    }
    with service_process(env) as service:
        yield service


def call(service: ServiceProcess, chart: BenchChart, hook_instance: str, **kwargs: Any) -> httpx.Response:
    body = chart.request(**kwargs)
    body["hookInstance"] = hook_instance
    return httpx.post(f"{service.url}/cds-services/calcinosis", json=body, timeout=120)


def test_a_twenty_year_dialysis_chart_without_prefetch_gets_the_cards_prefetch_gets(
    default_service: ServiceProcess, fhir_sandbox: str, dialysis20: BenchChart
) -> None:
    hook_instance = str(uuid.uuid4())
    fetched = call(default_service, dialysis20, hook_instance, prefetch=False, fhir_server=fhir_sandbox.rstrip("/"))
    assert fetched.status_code == 200, fetched.text
    prefetched = call(default_service, dialysis20, hook_instance)
    assert prefetched.status_code == 200, prefetched.text
    assert fetched.json()["cards"], "calcinosis is documented: cards expected"
    assert fetched.json() == prefetched.json()
