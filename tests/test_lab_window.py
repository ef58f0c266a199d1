"""The date-cut Observation searches of the no-prefetch path (issue 13, item 7): what is asked,
that the searches run concurrently on one connection pool, that results found twice are kept once,
and that the cards equal those of a full prefetch. (The 20-year chart against the local FHIR
sandbox is in tests/integration/test_no_prefetch_scale.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import threading
import time
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import respx

from fhir_mapping.terminology import load_terminology
from hooks.models import HookRequest
from hooks.outbound import OutboundPolicy
from hooks.prefetch import LabWindow, lab_window
from hooks.service import CalcinosisService
from hooks.settings import Settings
from tests.charts import ICD10, Chart
from tests.hookclient import FHIR_BASE, cards_of, hook_request, make_app, post, searchset
from tests.realservers import FhirServer, fhir_server

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
KEY = "one-card-id-key-for-both-apps-0123456789"


def test_window_is_two_years_in_ranges_and_one_page_of_newest_older_results() -> None:
    window = lab_window(load_terminology())
    assert {analyte for analyte, _ in window.analyte_codes} >= {"calcium-total", "phosphate", "pth-intact"}
    recent, older = window.queries("p1", "http://loinc.org|17861-6", NOW)
    assert len(recent) == window.slices
    bounds = [parse_qs(urlsplit(q).query)["date"] for q in recent]
    start = date(2024, 12, 3)  # 731 days before: one day of margin for time zones
    assert bounds[0][0] == f"ge{start.isoformat()}"
    for previous, following in itertools.pairwise(bounds):
        assert previous[1] == "lt" + following[0].removeprefix("ge")  # contiguous, no gap, no overlap
    assert len(bounds[-1]) == 1  # the last range is open: results dated in the future are kept
    params = parse_qs(urlsplit(older).query)
    assert params["date"] == [f"lt{start.isoformat()}"] and params["_sort"] == ["-date"]
    assert params["status"] == ["amended,corrected,final"] and params["_count"] == [str(window.older_page)]
    (pth,) = window.newest_older("p1", ["pth-intact"], NOW)
    assert "2731-8" in pth and parse_qs(urlsplit(pth).query)["_count"] == ["2"]


def test_only_analytes_missing_from_a_full_older_page_get_their_own_search() -> None:
    window = LabWindow(
        (("calcium-total", "http://loinc.org|17861-6"), ("pth-intact", "http://loinc.org|2731-8")), older_page=2
    )
    calcium = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6"}]}}
    assert window.not_shown([calcium]) == []  # not full: every older result is there
    assert window.not_shown([calcium, calcium]) == ["pth-intact"]


def dialysis_chart() -> Chart:
    chart = Chart()
    chart.calcinosis(body_sites=["Left knee"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=5000)
    chart.mineral_panel(10.2, 4.0, 7.7, days_ago=5, egfr=7)
    chart.mineral_panel(9.1, 4.0, 4.1, days_ago=1500, egfr=9)  # older than the window
    chart.lab("2731-8", 900, "pg/mL", days_ago=3000)  # the only PTH: 8 years ago
    return chart


def test_windowed_fetch_answers_as_a_full_prefetch_does() -> None:
    chart = dialysis_chart()
    observations = [r for r in chart.resources if r["resourceType"] == "Observation"]
    by_id = {r["id"]: r for r in observations}
    asked: list[str] = []

    def observation_search(request: httpx.Request) -> httpx.Response:
        """A FHIR server's date search, on effectiveDateTime; sorted searches honour `_count`."""
        asked.append(str(request.url))
        params = parse_qs(request.url.query.decode())
        found = list(by_id.values())
        for bound in params.get("date", []):
            op, day = bound[:2], bound[2:]
            found = [r for r in found if (r["effectiveDateTime"][:10] >= day) == (op == "ge")]
        if params.get("_sort") == ["-date"]:
            codes = {c.split("|")[1] for c in params["code"][0].split(",")}
            found = [r for r in found if r["code"]["coding"][0]["code"] in codes]
            found = sorted(found, key=lambda r: r["effectiveDateTime"], reverse=True)[: int(params["_count"][0])]
        return httpx.Response(200, json=searchset(found))

    prefetch = hook_request(chart)["prefetch"]
    del prefetch["observations"]
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__regex=rf"{re.escape(FHIR_BASE)}/Observation\?.*").mock(side_effect=observation_search)
        app = make_app(local_fhir_servers=[FHIR_BASE], card_id_key=KEY)
        # A page of two newest older results: the PTH of 8 years ago is not on it, so it gets a
        # search of its own (the second step).
        app.state.service.window = dataclasses.replace(app.state.service.window, older_page=2)
        fetched = post(
            app,
            "/cds-services/calcinosis",
            hook_request(
                chart, prefetch=prefetch, with_server=True, hookInstance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
            ),
        )
    full = post(
        make_app(card_id_key=KEY),
        "/cds-services/calcinosis",
        hook_request(chart, hookInstance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"),
    )
    assert cards_of(fetched) == cards_of(full)
    assert any("date=ge" in url for url in asked) and any("_sort=-date" in url for url in asked)
    assert not any("date=" not in url for url in asked)  # never the whole history
    assert any("2731-8" in url and "_count=2" in url and "17861-6" not in url for url in asked)


def test_results_found_by_two_searches_are_kept_once() -> None:
    """A server that ignores the date parameters answers every search with everything: each
    Observation is still used once."""
    chart = dialysis_chart()
    observations = [r for r in chart.resources if r["resourceType"] == "Observation"]
    prefetch = hook_request(chart)["prefetch"]
    del prefetch["observations"]
    service = CalcinosisService(Settings(auth_disabled=True, feedback_database_url="memory://"))
    request = HookRequest.model_validate(hook_request(chart, prefetch=prefetch, with_server=True))

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            outcome = await service.handle(request, http, OutboundPolicy([FHIR_BASE]))
            return outcome.data.resources

    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url__regex=rf"{re.escape(FHIR_BASE)}/Observation\?.*").mock(
            return_value=httpx.Response(200, json=searchset(observations))
        )
        resources = asyncio.run(main())
        assert route.call_count > 1  # several searches ran, each answering everything
    used = [r["id"] for r in resources if r["resourceType"] == "Observation"]
    assert sorted(used) == sorted(r["id"] for r in observations)


def test_window_defaults_follow_the_mapping() -> None:
    from fhir_mapping.mapping import DEFAULT_LAB_RETENTION_DAYS

    assert LabWindow(()).retention_days == DEFAULT_LAB_RETENTION_DAYS


def test_the_searches_of_one_call_are_in_flight_together() -> None:
    """Against a real threaded FHIR server that holds each search a moment: the window's ranges,
    the older-results page and the other resources' searches overlap. Fetched one after another,
    at most one would ever be in flight."""
    chart = dialysis_chart()
    lock = threading.Lock()
    in_flight = 0
    most = 0

    def hold(path: str) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.3)
        with lock:
            in_flight -= 1

    def answer(path: str) -> tuple[int, Any] | None:
        hold(path)
        return None  # the server's default answer: every resource of the searched type

    server = FhirServer(resources=chart.resources, answer=answer)
    with fhir_server(server):
        body = hook_request(chart, prefetch={"patient": hook_request(chart)["prefetch"]["patient"]}, with_server=True)
        body["fhirServer"] = server.url
        service = CalcinosisService(Settings(auth_disabled=True, feedback_database_url="memory://"))
        request = HookRequest.model_validate(body)

        async def main() -> int:
            async with httpx.AsyncClient() as http:
                outcome = await service.handle(
                    request, http, OutboundPolicy([server.url], allow_http=True, loopback=True)
                )
                return len(outcome.data.resources)

        assert asyncio.run(main()) > 0
    searches = [seen.path for seen in server.seen if "?" in seen.path]
    # Two date ranges and the older page, beside conditions, medications, procedures and orders.
    assert sum("Observation?" in path for path in searches) >= 3
    assert most >= 6, f"at most {most} of {len(searches)} searches were in flight at once"
