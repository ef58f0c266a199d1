"""Driving the service through real HTTP semantics: httpx against the ASGI app, and CDS Hooks
requests built the way an EHR (or the CDS Hooks sandbox) builds them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from hooks.app import create_app
from hooks.models import HookResponse
from hooks.settings import Settings
from tests.charts import Chart
from tests.fhir_chart import search_keys, searchset  # noqa: F401 (re-exported: tests import it from here)

FHIR_BASE = "https://fhir.example.org/r4"


def hook_request(
    chart: Chart | None = None, *, prefetch: dict[str, Any] | None = None, with_server: bool = False, **extra: Any
) -> dict[str, Any]:
    """A patient-view request; prefetch built from the chart by resource type unless given."""
    patient_id = chart.patient_id if chart else "pat-1"
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/doc-1", "patientId": patient_id},
    }
    if prefetch is None and chart is not None:
        prefetch = prefetch_of(chart)
    if prefetch is not None:
        body["prefetch"] = prefetch
    if with_server:
        body["fhirServer"] = FHIR_BASE
        body["fhirAuthorization"] = {
            "access_token": "secret-token-value",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        }
    body.update(extra)
    return body


KEY_TYPES = search_keys()
"""Prefetch search key -> resource type: the service's own templates (`tests.fhir_chart`)."""


def prefetch_of(chart: Chart) -> dict[str, Any]:
    """EHR-style prefetch: the Patient, and one searchset Bundle per template key."""
    return chart.prefetch()


def make_app(**settings: Any) -> Any:
    settings.setdefault("feedback_database_url", "memory://")
    settings.setdefault("auth_disabled", True)
    return create_app(Settings(**settings))


def run(app: Any, scenario: Callable[[httpx.AsyncClient], Awaitable[Any]], with_http: bool = True) -> Any:
    """Run `scenario` against the app; the app's outbound client is a real httpx client (respx
    intercepts it in the FHIR fallback tests)."""

    async def main() -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as outbound:
            app.state.http = outbound if with_http else None
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await scenario(client)

    return asyncio.run(main())


def post(app: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        if isinstance(body, bytes | str):
            return await client.post(path, content=body, headers=headers or {"Content-Type": "application/json"})
        return await client.post(path, json=body, headers=headers)

    result: httpx.Response = run(app, scenario)
    return result


def get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(path, headers=headers)

    result: httpx.Response = run(app, scenario)
    return result


def cards_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The cards, after checking the body against the spec models."""
    assert response.status_code == 200, response.text
    body = response.json()
    HookResponse.model_validate(body)
    cards: list[dict[str, Any]] = body["cards"]
    return cards
