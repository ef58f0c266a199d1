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
from typing import Any

import httpx

from calcinosis.findings import Analyte
from fhir_mapping.mapping import bundle_resources
from fhir_mapping.terminology import LOINC, Terminology
from hooks.fhir_client import FhirClient, FhirFetchError, SearchResult
from hooks.models import FHIR_ID, HookRequest
from hooks.outbound import OutboundPolicy
from hooks.settings import Settings


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
    )


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


class PrefetchResolver:
    """Resolves the prefetch of one request, fetching what is missing."""

    def __init__(
        self,
        keys: tuple[PrefetchKey, ...],
        settings: Settings,
        http: httpx.AsyncClient | None,
        documents_calcinosis: Callable[[list[dict[str, Any]]], bool],
        policy: OutboundPolicy,
    ) -> None:
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
        )

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
            result = await client.search(query, self.settings.fhir_page_size)
            if result.truncated:
                raise FhirFetchError(f"more than {client.page_cap} pages")
            return _of_type(result.resources, spec.resource_type)

        return run

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
