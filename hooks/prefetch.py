"""Prefetch templates and their resolution per CDS Hooks 2.0.1.

For each template key:
- present with what the template asks for (the resource of a read, a searchset Bundle of a
  search): used, but filtered (only the resource type the key asked for; the mapping also drops
  other patients' resources and codes it does not know), and a Bundle's next link is followed on
  `fhirServer` because clients may page prefetch;
- present as `null`: "no data", not fetched again;
- absent, an OperationOutcome, or anything that does not satisfy the template (a resource of
  another type, a Bundle in the pre-1.0 `{response, resource}` wrapper, a string): not satisfied,
  so fetched from `fhirServer` with the bearer token. Data the service could not read is never
  taken as silence.
Keys the service did not request are ignored, whatever they hold.

When data cannot be completed (no usable `fhirServer` to fetch a missing or unreadable key, or to
follow a paged prefetch; a fetch that failed), a required key is answered 412 (a SHALL of the
spec), and an optional key is used as far as it goes and named in the cards as incomplete.
All fetches of a request run concurrently under one deadline. When the conditions show no
calcinosis, the other fetches are cancelled: the service will stay silent, so their data is moot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from calcinosis.findings import Analyte
from fhir_mapping.mapping import DEFAULT_LAB_RETENTION_DAYS, OBSERVATION_COUNTS, bundle_resources
from fhir_mapping.terminology import LOINC, Terminology
from hooks.fhir_client import ByteBudget, FhirClient, FhirFetchError, SearchResult
from hooks.models import FHIR_ID, HookRequest
from hooks.outbound import OutboundPolicy
from hooks.settings import Settings
from hooks.tracing import traced


@dataclass(frozen=True, slots=True)
class PrefetchKey:
    """One prefetch template: its key, FHIR query, resource type, whether it is required, and
    what the data is called in a card that has to say it was incomplete."""

    key: str
    query: str
    resource_type: str
    required: bool
    label: str = ""

    @property
    def is_read(self) -> bool:
        """True for an instance read (`Patient/{{context.patientId}}`), else a search."""
        return "?" not in self.query


SERVICE_REQUESTS_KEY = PrefetchKey(
    "serviceRequests",
    "ServiceRequest?patient={{context.patientId}}&status=active",
    "ServiceRequest",
    required=False,
    label="test orders not yet resulted",
)
"""Tests already ordered and not yet resulted (15.5 counts them as on file, like a result): both
services read them, patient-view so that its workup never suggests a test already ordered,
order-sign so that a draft repeating one is flagged. Optional: without them the workup suggests by
results alone."""

ENCOUNTER_TOKEN = "{{context.encounterId}}"
"""The encounter of order-sign's optional `encounterId` (CDS Hooks Library 1.0.1)."""


def observation_codes(terminology: Terminology) -> list[str]:
    """`system|code` for every lab code the rules read, for the Observation template."""
    codes: set[str] = set()
    for (system, code), findings in terminology.codes.items():
        if any(isinstance(f, Analyte) for f in findings):
            codes.add(f"{system}|{code}" if system != LOINC else f"{LOINC}|{code}")
    return sorted(codes)


def prefetch_keys(terminology: Terminology) -> tuple[PrefetchKey, ...]:
    """The templates advertised in discovery; all stay inside the spec's recommended subset
    (instance read, type search by patient reference, token equality with comma ORs)."""
    patient = "{{context.patientId}}"
    return (
        PrefetchKey("patient", f"Patient/{patient}", "Patient", required=True, label="patient record"),
        PrefetchKey("conditions", f"Condition?patient={patient}", "Condition", required=True, label="problem list"),
        PrefetchKey(
            "observations",
            f"Observation?patient={patient}&code={','.join(observation_codes(terminology))}",
            "Observation",
            required=True,
            label="laboratory results",
        ),
        PrefetchKey(
            "medicationRequests",
            f"MedicationRequest?patient={patient}",
            "MedicationRequest",
            required=False,
            label="medication orders",
        ),
        PrefetchKey(
            "medicationStatements",
            f"MedicationStatement?patient={patient}",
            "MedicationStatement",
            required=False,
            label="medication history",
        ),
        PrefetchKey(
            "medicationAdministrations",
            f"MedicationAdministration?patient={patient}",
            "MedicationAdministration",
            required=False,
            label="medication administrations",
        ),
        PrefetchKey("procedures", f"Procedure?patient={patient}", "Procedure", required=False, label="procedures"),
        SERVICE_REQUESTS_KEY,
    )


@dataclass(frozen=True, slots=True)
class LabWindow:
    """How the service searches Observations itself (no prefetch): only what the rules read.

    The mapping uses every result of the last `retention_days` and, of each analyte, the newest
    older one (`fhir_mapping.mapping`). So the search is cut by date:
    - the window, split into `slices` date ranges searched concurrently (each paged on its own);
    - at the same time, one search for the newest older results of every analyte (`_sort=-date`,
      the statuses the mapping counts, one page of `older_page`): the first result of an analyte
      there is its newest older one, and if the page is not full it holds them all;
    - then, only for analytes that page did not show (when it was full), one search each for
      its newest older result.
    A 20-year dialysis chart is then a few pages of the last two years, one page of older results
    and a handful of one-result searches, instead of 10,000+ Observations read page after page.

    The `date` search parameter indexes `effective[x]`: an Observation with only `issued` (no
    effective time) is not found by a date-cut search. US Core requires an effective time on
    laboratory results; the prefetch template, which EHRs resolve, is not cut by date.
    """

    analyte_codes: tuple[tuple[str, str], ...]
    """(analyte, comma-separated `system|code` list) for the newest-older searches."""
    retention_days: int = DEFAULT_LAB_RETENTION_DAYS
    slices: int = 2
    older_page: int = 200
    counted_statuses: str = ",".join(sorted(OBSERVATION_COUNTS))

    def start(self, now: datetime) -> date:
        """First day of the window. One day of margin for time zones: the mapping's cut-off is a
        moment, search dates are days; results in the margin are read as older ones anyway."""
        return (now - timedelta(days=self.retention_days + 1)).date()

    def queries(self, patient_id: str, codes: str, now: datetime) -> tuple[list[str], str]:
        """The window's searches, and the search for the newest older results of all analytes."""
        start = self.start(now)
        span = (now.date() - start).days + 1
        edges = [start + timedelta(days=span * i // self.slices) for i in range(self.slices)]
        base = f"Observation?patient={patient_id}&code={codes}"
        window = []
        for i, edge in enumerate(edges):
            # The last range is open: results dated in the future are kept too.
            upper = f"&date=lt{edges[i + 1].isoformat()}" if i + 1 < len(edges) else ""
            window.append(f"{base}&date=ge{edge.isoformat()}{upper}")
        older = f"{base}&status={self.counted_statuses}&date=lt{start.isoformat()}&_sort=-date&_count={self.older_page}"
        return window, older

    def newest_older(self, patient_id: str, analytes: list[str], now: datetime) -> list[str]:
        """One search per analyte for its newest older result."""
        start = self.start(now).isoformat()
        codes = dict(self.analyte_codes)
        return [
            f"Observation?patient={patient_id}&code={codes[analyte]}&status={self.counted_statuses}"
            f"&date=lt{start}&_sort=-date&_count=2"
            for analyte in analytes
        ]

    def not_shown(self, older: list[dict[str, Any]]) -> list[str]:
        """Analytes without a result in a full page of newest older results."""
        if len(older) < self.older_page:
            return []  # the page held every older result: nothing more to find
        seen: set[str] = set()
        for resource in older:
            concept = resource.get("code")
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                if isinstance(coding, dict):
                    seen.add(f"{coding.get('system')}|{coding.get('code')}")
        return [analyte for analyte, codes in self.analyte_codes if not seen & set(codes.split(","))]


def lab_window(terminology: Terminology) -> LabWindow:
    """The date-cut Observation searches for the analytes the rules read."""
    by_analyte: dict[str, set[str]] = {}
    for (system, code), findings in terminology.codes.items():
        for finding in findings:
            if isinstance(finding, Analyte):
                by_analyte.setdefault(finding.value, set()).add(f"{system}|{code}")
    return LabWindow(tuple((analyte, ",".join(sorted(codes))) for analyte, codes in sorted(by_analyte.items())))


Job = Callable[[], Coroutine[Any, Any, list[dict[str, Any]]]]
"""A deferred fetch returning resources."""


class DataUnobtainableError(Exception):
    """Required data could not be obtained (answered 412); the message is safe to return."""


@dataclass(slots=True)
class ResolvedData:
    """Resources gathered for one request and how each key was satisfied (for logs)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)
    fhir_requests: int = 0
    notes: list[str] = field(default_factory=list)
    silent: bool = False
    incomplete: dict[str, str] = field(default_factory=dict)
    """Optional data used incompletely: the key's card label and why, in the clinician's words."""


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def _bundle_is_outcome_only(value: dict[str, Any]) -> bool:
    entries = value.get("entry") or []
    return bool(entries) and all(isinstance(e, dict) and _is_outcome(e.get("resource")) for e in entries)


def unreadable_reason(value: Any, spec: PrefetchKey) -> str | None:
    """Why a prefetch value does not satisfy its template (None when it does). The reasons name
    shapes only, never content: they go to logs and 412 diagnostics."""
    if not isinstance(value, dict):
        return "not a FHIR resource"
    kind = value.get("resourceType")
    if kind == "OperationOutcome":
        return "an OperationOutcome (the EHR could not fetch it)"
    if not isinstance(kind, str):
        return "not a FHIR resource (no resourceType; the pre-1.0 {response, resource} wrapper?)"
    if spec.is_read:
        return None if kind == spec.resource_type else f"a {kind} where a {spec.resource_type} was requested"
    if kind != "Bundle":
        return f"a {kind} where a searchset Bundle was requested"
    entries = value.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("resource"), dict) for e in entries
    ):
        return "a Bundle whose entries are not resources"
    if _bundle_is_outcome_only(value):
        return "a Bundle of OperationOutcomes (the EHR could not fetch it)"
    return None


def _of_type(resources: Iterable[Any], resource_type: str) -> list[dict[str, Any]]:
    """Keep only the resource type the key asked for (an over-broad prefetch is not trusted), and
    for medication keys the Medications the orders reference (`_include`)."""
    also = "Medication" if resource_type.startswith("Medication") else resource_type
    kept: list[dict[str, Any]] = []
    for resource in resources:
        if isinstance(resource, dict):
            kind = resource.get("resourceType")  # may be any JSON value, a list included
            if kind in (resource_type, also):  # a tuple: equality, no hashing
                kept.append(resource)
    return kept


async def _all(searches: list[Coroutine[Any, Any, SearchResult]]) -> list[SearchResult]:
    """Run searches concurrently; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(search) for search in searches]
    except* FhirFetchError as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


class PrefetchResolver:
    """Resolves the prefetch of one request, fetching what is missing."""

    def __init__(
        self,
        keys: tuple[PrefetchKey, ...],
        settings: Settings,
        http: httpx.AsyncClient | None,
        documents_calcinosis: Callable[[list[dict[str, Any]]], bool],
        policy: OutboundPolicy,
        window: LabWindow | None = None,
        as_of: datetime | None = None,
    ) -> None:
        self.window = window
        self.as_of = as_of
        self.policy = policy
        self.keys = keys
        self.settings = settings
        self.http = http
        self.documents_calcinosis = documents_calcinosis

    def _client(self, request: HookRequest) -> FhirClient | None:
        if request.fhir_server is None or self.http is None:
            return None
        scope = self.policy.scope(request.fhir_server)
        if scope is None:
            # Never call (or send the token to) a server that is not trusted for this client.
            return None
        token = request.fhir_authorization.access_token if request.fhir_authorization else None
        return FhirClient(
            self.http,
            scope,
            token,
            time.monotonic() + self.settings.fetch_deadline_seconds,
            self.settings.fhir_request_timeout_seconds,
            self.settings.fhir_max_response_bytes,
            self.settings.fhir_page_cap,
            ByteBudget(self.settings.fhir_max_request_bytes),
        )

    @traced("prefetch resolution")
    async def resolve(self, request: HookRequest, patient_id: str) -> ResolvedData:
        """All data for the request, or `DataUnobtainableError`."""
        data = ResolvedData()
        client = self._client(request)
        prefetch = request.prefetch or {}
        to_fetch: dict[str, Job] = {}
        encounter_id = request.context.get("encounterId")
        if not (isinstance(encounter_id, str) and FHIR_ID.match(encounter_id)):
            encounter_id = None  # only a bare FHIR id is ever put into a URL
        for spec in self.keys:
            if ENCOUNTER_TOKEN in spec.query and encounter_id is None:
                # The context names no encounter (or not as a FHIR id): the template cannot be filled.
                data.how[spec.key] = "no-encounter"
                continue
            present = spec.key in prefetch
            value = prefetch.get(spec.key)
            if present and value is None:
                data.how[spec.key] = "null"
                continue
            problem = unreadable_reason(value, spec) if present else "missing"
            if problem is None and isinstance(value, dict):
                resources, next_url = self._from_prefetch(value, spec)
                if next_url is None:
                    data.resources.extend(resources)
                    data.how[spec.key] = "prefetch"
                elif client is not None:
                    to_fetch[spec.key] = self._continue_paging(client, value, spec)
                    data.how[spec.key] = "prefetch+paged"
                else:
                    self._incomplete(request, data, spec, "was sent in pages and only the first arrived")
                    data.resources.extend(resources)
                    data.how[spec.key] = "prefetch-first-page"
                continue
            if present:
                data.notes.append(f"{spec.key}: prefetch held {problem}")
            if client is not None:
                to_fetch[spec.key] = self._fetch(client, spec, patient_id, encounter_id)
            elif not present and not spec.required:
                data.how[spec.key] = "unavailable"  # not sent, nothing to fetch it with: not requested data
            else:
                self._incomplete(request, data, spec, "is missing" if not present else f"could not be read ({problem})")
                data.how[spec.key] = "unreadable"
        if to_fetch:
            assert client is not None
            await self._run(to_fetch, data, client)
        return data

    def _incomplete(self, request: HookRequest, data: ResolvedData, spec: PrefetchKey, what: str) -> None:
        """Data that cannot be completed: 412 for a required key, a card note for an optional one."""
        if spec.required:
            why = (
                "the request's fhirServer is not a FHIR server trusted for this client"
                if request.fhir_server is not None and self.http is not None
                else "no fhirServer was given to fetch it"
            )
            raise DataUnobtainableError(f"prefetch '{spec.key}' {what} and {why}")
        data.incomplete[spec.key] = f"{spec.label}: {'only part was sent' if 'pages' in what else 'could not be read'}"

    def _from_prefetch(self, value: dict[str, Any], spec: PrefetchKey) -> tuple[list[dict[str, Any]], str | None]:
        if value.get("resourceType") == "Bundle":
            next_url = None
            for link in value.get("link", []) or []:
                if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                    next_url = link["url"]
            return _of_type(bundle_resources(value), spec.resource_type), next_url
        return _of_type([value], spec.resource_type), None

    def _continue_paging(self, client: FhirClient, bundle: dict[str, Any], spec: PrefetchKey) -> Job:
        async def run() -> list[dict[str, Any]]:
            result = SearchResult()
            result = await client.follow(client.add_bundle(bundle, result), result)
            if result.truncated:
                raise FhirFetchError(f"more than {client.page_cap} pages")
            return _of_type(result.resources, spec.resource_type)

        return run

    def _fetch(self, client: FhirClient, spec: PrefetchKey, patient_id: str, encounter_id: Any = None) -> Job:
        query = spec.query.replace("{{context.patientId}}", patient_id)
        if isinstance(encounter_id, str):
            query = query.replace(ENCOUNTER_TOKEN, encounter_id)

        async def run() -> list[dict[str, Any]]:
            if spec.is_read:
                resource = await client.read(query)
                return [] if resource is None else _of_type([resource], spec.resource_type)
            if spec.resource_type == "Observation" and self.window is not None:
                return await self._windowed(client, query, patient_id)
            result = await client.search(query, self.settings.fhir_page_size)
            if result.truncated:
                raise FhirFetchError(f"more than {client.page_cap} pages")
            return _of_type(result.resources, spec.resource_type)

        return run

    async def _windowed(self, client: FhirClient, query: str, patient_id: str) -> list[dict[str, Any]]:
        """The Observations the rules read, by date-cut searches run concurrently (`LabWindow`)."""
        assert self.window is not None
        now = self.as_of or datetime.now(UTC)
        codes = query.split("&code=", 1)[1].split("&", 1)[0] if "&code=" in query else ""
        window, older = self.window.queries(patient_id, codes, now)
        searches = [client.search(q, self.settings.fhir_page_size) for q in window]
        results = await _all(searches + [client.search(older, first_page_only=True)])
        missing = self.window.not_shown(results[-1].resources)
        if missing:
            newest = self.window.newest_older(patient_id, missing, now)
            results += await _all([client.search(q, first_page_only=True) for q in newest])
        if any(result.truncated for result in results):
            raise FhirFetchError(f"more than {client.page_cap} pages")
        seen: set[str] = set()
        resources: list[dict[str, Any]] = []
        for result in results:
            for resource in _of_type(result.resources, "Observation"):
                ident = resource.get("id")
                key = ident if isinstance(ident, str) else str(id(resource))
                if key not in seen:  # found by two searches (a Period across a range edge)
                    seen.add(key)
                    resources.append(resource)
        return resources

    async def _run(self, jobs: dict[str, Job], data: ResolvedData, client: FhirClient) -> None:
        """Run the fetches concurrently under the deadline; stop early when there is no calcinosis."""
        tasks = {key: asyncio.create_task(job()) for key, job in jobs.items()}
        required = {spec.key for spec in self.keys if spec.required}
        try:
            await self._wait(tasks, data, client)
        finally:
            # Whatever happened (an unexpected error included), no fetch outlives the request.
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        self._collect(tasks, required, data, client)

    async def _wait(
        self, tasks: dict[str, asyncio.Task[list[dict[str, Any]]]], data: ResolvedData, client: FhirClient
    ) -> None:
        """Wait for the fetches under the deadline; stop early when there is no calcinosis."""
        try:
            async with asyncio.timeout(max(0.0, client.deadline - time.monotonic())):
                if "conditions" in tasks:
                    await asyncio.wait([tasks["conditions"]])
                    if tasks["conditions"].exception() is None:
                        known = data.resources + tasks["conditions"].result()
                        if not self.documents_calcinosis(known):
                            data.silent = True
                            for task in tasks.values():
                                task.cancel()
                elif not self.documents_calcinosis(data.resources):
                    data.silent = True
                    for task in tasks.values():
                        task.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
        except TimeoutError:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _collect(
        self,
        tasks: dict[str, asyncio.Task[list[dict[str, Any]]]],
        required: set[str],
        data: ResolvedData,
        client: FhirClient,
    ) -> None:
        """Fold the finished fetches into `data`; a required one that failed is a 412."""
        data.fhir_requests += client.requests
        for key, task in tasks.items():
            if task.cancelled():
                if data.silent:
                    data.how[key] = "skipped"
                    continue
                if key in required:
                    raise DataUnobtainableError(
                        f"fetching '{key}' from the FHIR server did not finish before the deadline"
                    )
                data.how[key] = "timeout"
                data.notes.append(f"{key}: not fetched before the deadline")
                data.incomplete[key] = f"{self._label(key)}: not fetched in time"
                continue
            error = task.exception()
            if error is None:
                data.resources.extend(task.result())
                data.how.setdefault(key, "fetched")
                continue
            reason = error.reason if isinstance(error, FhirFetchError) else "unexpected error"
            if key in required:
                raise DataUnobtainableError(f"fetching '{key}' from the FHIR server failed: {reason}")
            data.how[key] = "failed"
            data.notes.append(f"{key}: {reason}")
            data.incomplete[key] = f"{self._label(key)}: could not be fetched"

    def _label(self, key: str) -> str:
        return next(spec.label for spec in self.keys if spec.key == key)
