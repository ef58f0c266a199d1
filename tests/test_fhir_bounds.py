"""Memory and time bounds on FHIR answers (issue 14, item 3), against a hostile FHIR server run in
the test (tests/hostile_fhir.py): a gzip bomb is stopped at the size cap while it is being
inflated; pages whose next link points to themselves stop at the per-request byte budget; the
deadline holds under concurrency; other requests are served while a large answer is decoded; and
memory returns to its level after huge answers."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from typing import Any

import httpx
import pytest

from hooks.fhir_client import ByteBudget, FhirClient, FhirFetchError
from hooks.outbound import OutboundPolicy
from tests.charts import ICD10, Chart
from tests.hookclient import make_app, prefetch_of
from tests.hostile_fhir import MB, HostileServer, hostile_server

PAGE_CAP_BYTES = 8 * MB
REQUEST_CAP_BYTES = 16 * MB


@pytest.fixture(scope="module")
def hostile() -> Any:
    with hostile_server() as server:
        yield server


def client(http: httpx.AsyncClient, base: str, *, budget: int = 32 * MB, deadline: float = 30.0) -> FhirClient:
    scope = OutboundPolicy([base], allow_http=True).scope(base)
    assert scope is not None
    return FhirClient(http, scope, "token", time.monotonic() + deadline, 30.0, PAGE_CAP_BYTES, 50, ByteBudget(budget))


def test_a_gzip_bomb_is_stopped_at_the_cap_while_it_is_inflated(hostile: HostileServer) -> None:
    """1 GB decoded: refused at the 8 MB cap, with at most the cap (and one step) ever held."""

    async def scenario() -> int:
        async with httpx.AsyncClient() as http:
            fhir = client(http, f"{hostile.url}/bomb")
            tracemalloc.start()
            try:
                with pytest.raises(FhirFetchError, match="larger than the size cap"):
                    await fhir.search("Observation?patient=p1")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    peak = asyncio.run(scenario())
    assert peak < 3 * PAGE_CAP_BYTES  # the bytearray's growth may over-allocate; 1 GB was the risk


def test_pages_whose_next_link_is_themselves_stop_at_the_request_byte_budget(hostile: HostileServer) -> None:
    """Each page is ~2 MB and under the page cap; the budget (12 MB for the request) stops them
    long before the page cap of 50 would."""

    async def scenario() -> tuple[str, int]:
        async with httpx.AsyncClient() as http:
            fhir = client(http, f"{hostile.url}/loop", budget=12 * MB)
            with pytest.raises(FhirFetchError) as raised:
                await fhir.search("Observation?patient=p1")
            return raised.value.reason, fhir.requests

    reason, requests = asyncio.run(scenario())
    assert "per-request byte cap" in reason
    assert requests <= 7  # 12 MB / ~2 MB pages, plus the one that crossed the budget


def calcinosis_prefetch() -> dict[str, Any]:
    """Everything but the Observations, so that those are fetched from the hostile server."""
    chart = Chart(patient_id="p1")
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    prefetch = prefetch_of(chart)
    del prefetch["observations"]
    return prefetch


def hook_call(fhir_server: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": calcinosis_prefetch(),
    }


async def _serve(app: Any, scenario: Any) -> Any:
    async with httpx.AsyncClient(follow_redirects=False) as outbound:
        app.state.http = outbound
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as caller:
            return await scenario(caller)


def test_the_deadline_holds_for_four_concurrent_answers_that_never_end(hostile: HostileServer) -> None:
    """Four calls whose Observations trickle in forever (no single read ever times out): each is
    answered 412 for the deadline, and /healthz is answered while they wait."""
    app = make_app(local_fhir_servers=[hostile.url], fetch_deadline_seconds=2.0, fhir_request_timeout_seconds=2.0)
    order: list[str] = []

    async def scenario(caller: httpx.AsyncClient) -> list[httpx.Response]:
        async def call() -> httpx.Response:
            response = await caller.post("/cds-services/calcinosis", json=hook_call(f"{hostile.url}/trickle"))
            order.append("call")
            return response

        async def health() -> None:
            await asyncio.sleep(0.2)  # the calls are reading by now
            assert (await caller.get("/healthz")).status_code == 200
            order.append("healthz")

        calls = [asyncio.create_task(call()) for _ in range(4)]
        await health()
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=60)  # a hang guard, not a timing check

    responses = asyncio.run(_serve(app, scenario))
    assert [r.status_code for r in responses] == [412] * 4
    assert all("deadline" in r.json()["issue"][0]["diagnostics"] for r in responses)
    assert order[0] == "healthz"


def test_four_concurrent_gzip_bombs_are_412_and_memory_returns(hostile: HostileServer) -> None:
    app = make_app(
        local_fhir_servers=[hostile.url],
        fhir_max_response_bytes=PAGE_CAP_BYTES,
        fhir_max_request_bytes=REQUEST_CAP_BYTES,
        fetch_deadline_seconds=60.0,  # tracemalloc slows everything down; the caps are tested here
        fhir_request_timeout_seconds=60.0,
    )

    async def scenario(caller: httpx.AsyncClient) -> tuple[list[httpx.Response], int, int, int]:
        async def call() -> httpx.Response:
            return await caller.post("/cds-services/calcinosis", json=hook_call(f"{hostile.url}/bomb"))

        await call()  # warm up: first-call allocations are not what is measured
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            responses = await asyncio.gather(*(call() for _ in range(4)))
            gc.collect()
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return responses, before, after, peak

    responses, before, after, peak = asyncio.run(_serve(app, scenario))
    assert [r.status_code for r in responses] == [412] * 4
    assert all("cap" in r.json()["issue"][0]["diagnostics"] for r in responses), [r.json() for r in responses]
    # Each call holds at most its byte budget, plus one decoding step per search, the buffers'
    # growth margin and the copy while a buffer grows (under 3x the budget); four bombs once took
    # 1.3 GB.
    assert peak - before < 4 * 3 * REQUEST_CAP_BYTES
    assert after - before < 2 * MB  # nothing of the answers is kept


def test_other_requests_are_served_while_a_large_answer_is_decoded(hostile: HostileServer) -> None:
    """A 20 MB gzip answer (under the caps; the other searches answer empty) is inflated in steps
    and parsed off the event loop: /healthz, sent once the answer starts arriving, is answered
    before the call completes."""
    app = make_app(local_fhir_servers=[hostile.url], fhir_max_response_bytes=40 * MB, fetch_deadline_seconds=60.0)
    order: list[str] = []

    async def scenario(caller: httpx.AsyncClient) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await caller.post("/cds-services/calcinosis", json=hook_call(f"{hostile.url}/big"))
            order.append("call")
            return response

        hostile.started.clear()
        task = asyncio.create_task(call())
        while not hostile.started.is_set():
            await asyncio.sleep(0.001)
        assert (await caller.get("/healthz")).status_code == 200
        order.append("healthz")
        return await task

    response = asyncio.run(_serve(app, scenario))
    assert response.status_code == 200, response.text
    assert order == ["healthz", "call"]


def test_an_unsupported_content_encoding_is_refused(hostile: HostileServer) -> None:
    from hooks.fhir_client import _decoder

    with pytest.raises(FhirFetchError, match="Content-Encoding"):
        _decoder("br")
    piece, rest = _decoder("identity")(b"x" * 10)
    assert piece == b"x" * 10 and rest == b""


def test_a_connection_closed_before_any_answer_is_retried_once_on_a_new_one() -> None:
    """A kept-alive connection the server closed as it was reused (Node closes idle ones after
    5 s) fails before any answer: the GET is sent once more, and only once."""
    import respx

    base = "https://fhir.example.org/r4"
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": []}

    async def scenario(answers: list[Any]) -> tuple[str | None, int]:
        with respx.mock() as mock:
            route = mock.get(url__startswith=base).mock(side_effect=answers)
            async with httpx.AsyncClient() as http:
                scope = OutboundPolicy([base]).scope(base)
                assert scope is not None
                fhir = FhirClient(http, scope, None, time.monotonic() + 30, 30.0, MB, 5)
                try:
                    await fhir.search("Observation?patient=p1")
                    return None, route.call_count
                except FhirFetchError as error:
                    return error.reason, route.call_count

    retried = asyncio.run(scenario([httpx.ReadError("closed"), httpx.Response(200, json=bundle)]))
    assert retried == (None, 2)
    twice = asyncio.run(scenario([httpx.ReadError("closed"), httpx.RemoteProtocolError("closed")]))
    assert twice == ("FHIR server unreachable (RemoteProtocolError)", 2)
