"""The sandbox's indexed search (deploy/fhir-sandbox/indexed-repository.mjs) answers exactly what
Medplum's own search answers: two sandboxes hold the same data, one with `--plain-search` (the
engine's search untouched), and every search, followed page by page, gives the same entries in the
same order, the same totals and the same links, before and after writes (update, patch, delete,
update-as-create) that the index and the per-search cache must follow.

The searches are those the service sends (its date-cut Observation searches, the newest-older
search with `_sort=-date`, the per-analyte ones) and the search features the engine supports:
token forms (`sys|code`, `code`, `|code`, `sys|`, case, `:not`), every date prefix, reference
forms (bare id, typed, several, unknown), sorting, paging, `_include`, `_revinclude`, `_summary`,
chaining, `:missing`, parameters left to the engine (`value-quantity`, `_id`) and searches
without a patient. (Not `_sort=_lastUpdated`: each server stamps its own write times.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.sandbox import Sandbox
from bench.workloads import Chart, charts
from fhir_mapping.terminology import load_terminology
from hooks.prefetch import lab_window, observation_codes

REPO = Path(__file__).resolve().parents[2]
PATIENTS = sorted(
    p for p in (REPO / "deploy" / "fhir-sandbox" / "patients").glob("*.json") if p.name != "expected.json"
)
LOINC = "http://loinc.org"
CALCIUM, PHOSPHATE = f"{LOINC}|17861-6", f"{LOINC}|2777-1"
ESRD = "cc-metastatic-esrd"  # a scenario patient with labs (patients/metastatic-esrd-si-units.json)


@pytest.fixture(scope="module")
def typical() -> Chart:
    return charts()["typical"]


def edge_cases(patient_id: str) -> dict[str, Any]:
    """Observations on the edges of what the searches compare: dates on and around the days the
    searches name (date only, year only, time zone offsets, open periods, none), codes without a
    system or in upper case, text only, and references in other forms (absolute, versioned)."""
    base = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient_id}"}}
    calcium = {"coding": [{"system": LOINC, "code": "17861-6"}]}
    variants: list[dict[str, Any]] = [
        {"code": calcium, "effectiveDateTime": "2025-06-01"},
        {"code": calcium, "effectiveDateTime": "2026"},
        {"code": calcium, "effectiveDateTime": "2025-06-01T00:00:00Z"},
        {"code": calcium, "effectiveDateTime": "2025-05-31T23:59:59.999Z"},
        {"code": calcium, "effectiveDateTime": "2025-06-01T02:00:00+02:00"},
        {"code": calcium, "effectiveDateTime": "2025-12-31T23:30:00-05:00"},
        {"code": calcium, "effectivePeriod": {"start": "2025-06-01"}},
        {"code": calcium, "effectivePeriod": {"end": "2026-01-01T00:00:00Z"}},
        {"code": calcium, "effectiveInstant": "2024-12-04T00:00:00.000Z"},
        {"code": calcium, "issued": "2025-06-01T00:00:00Z"},
        {"code": {"coding": [{"code": "17861-6"}]}, "effectiveDateTime": "2025-06-01"},
        {"code": {"coding": [{"system": "HTTP://LOINC.ORG", "code": "2777-1"}]}, "effectiveDateTime": "2020"},
        {"code": {"text": "calcium"}, "effectiveDateTime": "2019-01-01"},
        {"code": {"coding": [{"system": LOINC}]}, "effectiveDateTime": "2019-01-01"},
        {"code": calcium, "status": "amended", "effectiveDateTime": "2010-01-01"},
        {"code": calcium, "status": "preliminary", "effectiveDateTime": "2010-01-01"},
        {"code": calcium, "subject": {"reference": f"https://example.org/fhir/Patient/{patient_id}"}},
        {"code": calcium, "subject": {"reference": f"Patient/{patient_id}/_history/1"}},
        {"code": calcium, "subject": {"reference": f"Group/{patient_id}"}},
        {"code": calcium, "subject": {"display": "no reference"}},
    ]
    entries = []
    for number, variant in enumerate(variants):
        resource = {**base, **variant, "id": f"edge-{number}"}
        entries.append({"resource": resource, "request": {"method": "PUT", "url": f"Observation/edge-{number}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
def servers(typical: Chart) -> Iterator[tuple[str, str]]:
    """(indexed, plain) sandbox bases, loaded with the same data."""
    with Sandbox(240.0) as indexed, Sandbox(240.0, ("--plain-search",)) as plain:
        for base in (indexed.base, plain.base):
            for patient in PATIENTS:
                load(base, patient.read_bytes())
            for bundle in (typical.transaction(), edge_cases(typical.patient_id)):
                response = httpx.post(base, json=bundle, timeout=120)
                assert response.status_code == 200, response.text[:300]
        yield indexed.base.rstrip("/"), plain.base.rstrip("/")


def load(base: str, bundle: bytes) -> None:
    response = httpx.post(base, content=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60)
    assert response.status_code == 200, response.text[:300]


def pages(http: httpx.Client, base: str, query: str) -> list[Any]:
    """Every page of a search, following next links, as what must be equal on both servers."""
    shapes: list[Any] = []
    url: str | None = f"{base}/{query}"
    while url is not None and len(shapes) < 60:
        response = http.get(url)
        body = response.json()
        if response.status_code != 200:
            shapes.append((response.status_code, [i.get("details", {}).get("text") for i in body.get("issue", [])]))
            break
        entries = [
            (e.get("search", {}).get("mode"), e["resource"]["resourceType"], e["resource"].get("id"))
            for e in body.get("entry", [])
        ]
        links = sorted((link["relation"], link["url"].removeprefix(base)) for link in body.get("link", []))
        shapes.append((body.get("total"), entries, links))
        url = next((link["url"] for link in body.get("link", []) if link["relation"] == "next"), None)
    return shapes


def queries(typical: Chart) -> list[str]:
    terminology = load_terminology()
    codes = ",".join(observation_codes(terminology))
    window = lab_window(terminology)
    now = datetime.now(UTC)
    p = typical.patient_id
    dated, older = window.queries(p, codes, now)
    analytes = [analyte for analyte, _ in window.analyte_codes]
    obs = f"Observation?patient={p}"
    return [
        *dated,
        older,
        *window.newest_older(p, analytes, now),
        *(q.replace(p, ESRD) for q in [*dated, older]),
        obs,
        f"{obs}&_count=7",
        f"Observation?subject=Patient/{p}&_count=50",
        f"Observation?patient={p},{ESRD}&code={CALCIUM}",
        f"Observation?patient=Patient/{ESRD}&code={codes}",
        f"Observation?patient=nobody&code={codes}",
        f"{obs}&code={CALCIUM},{PHOSPHATE}&_count=11",
        f"{obs}&code=HTTP://LOINC.ORG|17861-6",
        f"{obs}&code=17861-6",
        f"{obs}&code=|17861-6",
        f"{obs}&code=http://loinc.org|",
        f"{obs}&code=http://loinc.org|17861-6,http://snomed.info/sct|,|2777-1,1751-7",
        f"{obs}&code=Calcium",
        f"{obs}&code=http://loinc.org|17861-6,|17861-6&_count=100",
        f"Observation?patient=Patient/{p}&code=17861-6&_count=100",
        f"Observation?patient=https://example.org/fhir/Patient/{p}",
        f"Observation?subject={p}&_count=100",
        f"Observation?subject=Group/{p}",
        f"Observation?patient={p}&_sort=date&_count=100",
        f"{obs}&code:not={CALCIUM}",
        f"{obs}&code={codes}&status=final&_count=25",
        f"{obs}&status=final,amended",
        f"{obs}&status:not=final",
        f"{obs}&category=laboratory&_count=40",
        f"{obs}&_sort=date&_count=30",
        f"{obs}&_sort=-date&_count=30",
        f"{obs}&_sort=code,-date&_count=30",
        f"{obs}&_sort=-date,code&_count=30",
        *(
            f"{obs}&date={prefix}{day}"
            for prefix in ("", "eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")
            for day in ("2025-06-01", "2026", "2025-06-01T00:00:00Z", "2024-12-04", "2025-06-01,2019")
        ),
        f"{obs}&date=ge2025-01-01&date=lt2026-01-01&code={codes}",
        f"{obs}&_summary=count",
        f"{obs}&_count=0",
        f"{obs}&_sort=_id&_count=40",
        f"Observation?_id=edge-0,edge-3,{typical.of_type('Observation')[5]['id']}",
        f"{obs}&_lastUpdated=gt2020-01-01&_count=100",
        f"{obs}&value-quantity=gt5&_count=100",
        f"{obs}&encounter:missing=true&_count=100",
        f"{obs}&_include=Observation:patient&_count=20",
        f"Patient?_id={p}&_revinclude=Observation:patient",
        f"Observation?code={CALCIUM}&_count=100",
        "Observation?_count=100",
        f"Observation?subject:Patient.birthdate=ge1900-01-01&code={CALCIUM}&_count=100",
        "Observation?patient:missing=true",
        f"Condition?patient={ESRD}",
        f"Condition?patient={p}&clinical-status=active",
        f"MedicationRequest?patient={p}",
        "Patient?identifier=nothing|nothing",
    ]


def compare(indexed: str, plain: str, searches: list[str]) -> None:
    with httpx.Client(timeout=60) as http:
        differences = [q for q in searches if pages(http, indexed, q) != pages(http, plain, q)]
    assert not differences, f"{len(differences)} searches differ, e.g. {differences[:3]}"


def test_the_indexed_search_answers_what_the_engine_answers(servers: tuple[str, str], typical: Chart) -> None:
    indexed, plain = servers
    searches = queries(typical)
    compare(indexed, plain, searches)
    compare(indexed, plain, searches)  # again: from the cache of the indexed server


def test_after_writes_the_indexed_search_still_answers_what_the_engine_answers(
    servers: tuple[str, str], typical: Chart
) -> None:
    indexed, plain = servers
    observations = typical.of_type("Observation")
    moved, recoded, deleted, patched = observations[0], observations[1], observations[2], observations[3]
    for base in (indexed, plain):
        httpx.get(f"{base}/Observation?patient={typical.patient_id}&_count=5")  # warm the cache and index
        writes = [
            # to another patient, with another code and an old date
            httpx.put(
                f"{base}/Observation/{moved['id']}",
                json={
                    **moved,
                    "subject": {"reference": f"Patient/{ESRD}"},
                    "code": {"coding": [{"system": LOINC, "code": "2777-1"}]},
                    "effectiveDateTime": "2009-02-03T04:05:06Z",
                },
            ),
            httpx.put(
                f"{base}/Observation/{recoded['id']}",
                json={**recoded, "code": {"coding": [{"system": LOINC, "code": "1751-7"}]}},
            ),
            httpx.delete(f"{base}/Observation/{deleted['id']}"),
            httpx.patch(
                f"{base}/Observation/{patched['id']}",
                json=[{"op": "replace", "path": "/status", "value": "amended"}],
                headers={"Content-Type": "application/json-patch+json"},
            ),
            httpx.put(  # update-as-create: a new resource at the end
                f"{base}/Observation/added-late",
                json={**recoded, "id": "added-late", "effectiveDateTime": "2011-01-01"},
            ),
        ]
        assert [w.status_code for w in writes] == [200, 200, 200, 200, 201], [w.text[:200] for w in writes]
    compare(indexed, plain, queries(typical))
