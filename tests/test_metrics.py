"""Metrics that count failures: a 500 reaches the counters, store and replay-cache errors are
counted, the process, Python and build information are published, and the metrics are served on
a port of their own, never on the port the EHR calls."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hooks import __version__
from hooks.metrics import REGISTRY, metrics_app
from hooks.service import CalcinosisService
from tests.hookclient import get, hook_request, make_app, post
from tests.realservers import free_port, service_process
from tests.test_api import metastatic_chart


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics endpoint, read through the metrics ASGI app itself."""

    async def fetch() -> str:
        transport = httpx.ASGITransport(app=metrics_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            return response.text

    return parse(asyncio.run(fetch()))


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_an_unhandled_error_is_answered_500_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a defect in the service")

    # A defect inside the service's handler (the registry binds the handler when the app is built).
    monkeypatch.setattr(CalcinosisService, "handle", broken)
    app = make_app()
    endpoint = {"endpoint": "/cds-services/{service_id}", "status": "500"}
    before = value(scrape(), "calcinosis_requests_total", **endpoint)

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/cds-services/calcinosis", json=hook_request(metastatic_chart()))

    # raise_app_exceptions=False: the client sees what an EHR would see, the 500 answer.
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await call(client)

    answer = asyncio.run(main())
    assert answer.status_code == 500
    assert answer.json()["resourceType"] == "OperationOutcome"
    after = scrape()
    assert value(after, "calcinosis_requests_total", **endpoint) == before + 1
    assert value(after, "calcinosis_request_seconds_count", endpoint="/cds-services/{service_id}") > 0


def test_statuses_are_counted_by_route_template_without_patient_data() -> None:
    app = make_app()
    chart = metastatic_chart()
    before = scrape()
    assert post(app, "/cds-services/calcinosis", hook_request(chart)).status_code == 200
    assert post(app, "/cds-services/nope", hook_request(chart)).status_code == 404
    assert get(app, "/no/such/path").status_code == 404
    after = scrape()
    for labels, increase in (
        ({"endpoint": "/cds-services/{service_id}", "status": "200"}, 1),
        ({"endpoint": "/cds-services/{service_id}", "status": "404"}, 1),
        ({"endpoint": "unmatched", "status": "404"}, 1),
    ):
        name = "calcinosis_requests_total"
        assert value(after, name, **labels) - value(before, name, **labels) == increase, labels
    text = " ".join(f"{name} {labels}" for name, labels in after)
    assert chart.patient_id not in text and "Practitioner" not in text and "/no/such/path" not in text


def test_process_python_and_build_information_are_published() -> None:
    app = make_app()
    samples = scrape()
    names = {name for name, _labels in samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} <= names
    assert "python_gc_collections_total" in names and "python_info" in names
    builds = [dict(labels) for name, labels in samples if name == "calcinosis_build_info"]
    assert builds == [
        {
            "version": __version__,
            "knowledge_base": app.state.service.knowledge.version,
            "python": builds[0]["python"],
        }
    ]
    assert "calcinosis_cards_suppressed_total" in {family.name + "_total" for family in REGISTRY.collect()}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_replay_cache_and_feedback_store_errors_are_counted() -> None:
    """A Redis that does not answer (nothing listens on its port): the failure to record a token
    and the failed readiness ping are counted. How the call is answered is the auth layer's
    business (a 5xx in any case, itself counted)."""
    from hooks.auth.replay import RedisReplayCache

    cache = RedisReplayCache(f"redis://127.0.0.1:{_closed_port()}/0")
    before = scrape()

    async def use() -> bool:
        try:
            return await cache.first_use("issuer|jti-1", 2_000_000_000.0)
        finally:
            await cache.close()

    with pytest.raises(Exception, match=r"(?i)connect"):
        asyncio.run(use())
    after = scrape()
    name = "calcinosis_store_errors_total"
    labels = {"store": "replay_cache", "operation": "first_use"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1

    # Readiness reporting an unreachable replay cache (authentication on) counts a failed ping.
    clients = '{"clients": [{"issuer": "https://ehr.example.org", "jku": ["https://ehr.example.org/jwks"]}]}'
    app = make_app(
        auth_disabled=False,
        trusted_clients=clients,
        public_base_url="https://cds.example.org",
        replay_cache_url=f"redis://127.0.0.1:{_closed_port()}/0",
    )
    ready = get(app, "/readyz")
    assert ready.status_code == 503
    labels = {"store": "replay_cache", "operation": "ping"}
    assert value(scrape(), name, **labels) - value(after, name, **labels) == 1


def test_metrics_have_their_own_port_and_not_the_service_port() -> None:
    port = free_port()
    env = {"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_METRICS_PORT": str(port)}
    with service_process(env) as service:
        assert httpx.get(service.url + "/metrics", timeout=10).status_code == 404
        assert (
            httpx.post(
                service.url + "/cds-services/calcinosis", json=hook_request(metastatic_chart()), timeout=30
            ).status_code
            == 200
        )
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200
        samples = parse(scraped.text)
        assert value(samples, "calcinosis_requests_total", endpoint="/cds-services/{service_id}", status="200") == 1
        assert value(samples, "calcinosis_requests_total", endpoint="unmatched", status="404") == 1
        assert httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=10).status_code == 404
