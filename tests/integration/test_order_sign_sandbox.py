"""The order-sign service over HTTP against the local FHIR sandbox: every draft-order scenario of
deploy/fhir-sandbox/draft-orders, once with no prefetch (the service fetches the chart through
`fhirServer`) and once with the prefetch an EHR would send (the test resolves the order-sign
service's discovery templates against the same server). Both answers must be the cards
expected.json records, or silence; and `check --draft-orders` gives the same from the command line."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.cli import load_sandbox, main
from hooks.models import HookResponse
from hooks.sandbox_data import OrderScenario, draft_orders_dir, load_order_scenarios
from tests.integration.test_scenarios_both_ways import read_all

ORDER_SCENARIOS = load_order_scenarios()
SERVICE = "calcinosis-order-sign"


@pytest.fixture(scope="module")
def loaded(fhir_sandbox: str) -> str:
    load_sandbox(fhir_sandbox, None, None, shift=True)
    return fhir_sandbox.rstrip("/")


def order_sign_prefetch(service_url: str, base: str, patient_id: str) -> dict[str, Any]:
    services = httpx.get(f"{service_url}/cds-services", timeout=10).json()["services"]
    templates = next(s for s in services if s["id"] == SERVICE)["prefetch"]
    return {
        key: read_all(f"{base}/{template.replace('{{context.patientId}}', patient_id)}")
        for key, template in templates.items()
        if "{{context.encounterId}}" not in template  # no encounter in these calls: the EHR omits the key
    }


def cards(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text[:500]
    found = []
    for card in HookResponse.model_validate(response.json()).cards:
        rule = (card.extension or {})["org.calcinosis-cds.order-check"]["rule"]
        found.append((card.indicator, card.source.topic.code if card.source.topic else "", rule))
    return found


@pytest.mark.parametrize("scenario", ORDER_SCENARIOS, ids=[s.name for s in ORDER_SCENARIOS])
def test_order_sign_with_and_without_prefetch(service_url: str, loaded: str, scenario: OrderScenario) -> None:
    context = {"userId": "Practitioner/it-1", "patientId": scenario.patient_id, "draftOrders": scenario.draft_orders}
    fetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "fhirServer": loaded, "context": context},
        timeout=60,
    )
    prefetched = httpx.post(
        f"{service_url}/cds-services/{SERVICE}",
        json={
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid4()),
            "context": context,
            "prefetch": order_sign_prefetch(service_url, loaded, scenario.patient_id),
        },
        timeout=60,
    )
    assert cards(fetched) == list(scenario.expected_cards)
    assert cards(prefetched) == list(scenario.expected_cards)


def test_check_command_with_draft_orders(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    warfarin = Path(draft_orders_dir()) / "warfarin-calciphylaxis-coded.json"
    assert (
        main(["check", "--fhir-server", loaded, "--patient", "cc-calciphylaxis-coded", "--draft-orders", str(warfarin)])
        == 0
    )
    assert "[warning] Calciphylaxis on file: warfarin sodium is a listed major risk factor" in capsys.readouterr().out
    ssc = Path(draft_orders_dir()) / "warfarin-ssc.json"
    assert main(["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", str(ssc)]) == 0
    assert "no cards (none of these draft orders needs one" in capsys.readouterr().out
    pth = Path(draft_orders_dir()) / "repeat-pth-ssc.json"
    assert main(["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", str(pth)]) == 0
    out = capsys.readouterr().out
    assert "[info] PTH result on file from" in out and "suggestion: Remove this draft order" in out
    assert (
        main(
            ["check", "--fhir-server", loaded, "--patient", "cc-dystrophic-ssc", "--draft-orders", "/nonexistent.json"]
        )
        == 1
    )
