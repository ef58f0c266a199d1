"""The default body cap against what a long dialysis history really sends (issue 13 item 8), over
HTTP to the service run by its own command line, not through the in-process test client.

The in-process tests check the default as a number and a small body over a small cap; here the
~28 MB prefetch of 30,000 Observations (bench/workloads.py `long_dialysis`, the chart the cap is
sized for) goes through uvicorn's real request reading and must be assessed, and a body about
1 MB over the default cap, built from the same chart, must get a 413 with an OperationOutcome.
Both bodies are generated at run time from the seeded chart builder; nothing large is committed.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from bench.workloads import Chart, long_dialysis
from hooks.settings import MAX_BODY_BYTES_DEFAULT
from tests.realservers import ServiceProcess, service_process

SERVICE = "/cds-services/calcinosis"
MEBIBYTE = 1024 * 1024
LONG_HISTORY = 30_000


@pytest.fixture(scope="module")
def chart() -> Chart:
    return long_dialysis(LONG_HISTORY)


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    """The service with its default body cap (no CALCINOSIS_MAX_BODY_BYTES in its environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CALCINOSIS_MAX_BODY_BYTES", raising=False)
        with service_process({"CALCINOSIS_AUTH_DISABLED": "true"}) as running:
            yield running


def request(chart: Chart) -> dict[str, Any]:
    body = chart.request()
    body["hookInstance"] = str(uuid.uuid4())
    return body


def post(service: ServiceProcess, data: bytes) -> httpx.Response:
    return httpx.post(service.url + SERVICE, content=data, headers={"Content-Type": "application/json"}, timeout=120)


def test_a_long_dialysis_history_under_the_default_cap_is_assessed(chart: Chart, service: ServiceProcess) -> None:
    body = request(chart)
    data = orjson.dumps(body)
    assert len(body["prefetch"]["observations"]["entry"]) == LONG_HISTORY
    assert 25 * MEBIBYTE < len(data) <= MAX_BODY_BYTES_DEFAULT, f"{len(data) / MEBIBYTE:.1f} MiB"
    response = post(service, data)
    assert response.status_code == 200, response.text[:500]
    cards = response.json()["cards"]
    assert cards, "calcinosis recorded on twenty years of dialysis: the chart is assessed, not only admitted"


def test_a_body_a_megabyte_over_the_default_cap_is_413_with_an_operation_outcome(
    chart: Chart, service: ServiceProcess
) -> None:
    """More of the same chart's Observations (copies with new ids) until the body is ~1 MB over."""
    body = request(chart)
    bundle = body["prefetch"]["observations"]
    originals = list(bundle["entry"])
    missing = MAX_BODY_BYTES_DEFAULT + MEBIBYTE - len(orjson.dumps(body))
    per_entry = len(orjson.dumps(originals[0])) + 1
    for index in range(math.ceil(missing / per_entry)):
        copy = orjson.loads(orjson.dumps(originals[index % len(originals)]))
        copy["resource"]["id"] = str(uuid.UUID(int=index, version=4))
        copy["fullUrl"] = copy["fullUrl"].rsplit("/", 1)[0] + "/" + copy["resource"]["id"]
        bundle["entry"].append(copy)
    bundle["total"] = len(bundle["entry"])
    data = orjson.dumps(body)
    assert MAX_BODY_BYTES_DEFAULT < len(data) < MAX_BODY_BYTES_DEFAULT + 2 * MEBIBYTE, f"{len(data) / MEBIBYTE:.1f} MiB"
    response = post(service, data)
    assert response.status_code == 413
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-costly"
