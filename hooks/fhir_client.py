"""A small FHIR R4 read/search client over one shared `httpx.AsyncClient`.

Only what the prefetch fallback needs: a read, and a search that follows `Bundle.link[next]`
verbatim (HAPI pages with `_getpages` tokens, others with offsets or cursors, so page URLs are never
built here), with a page cap, a per-request timeout that never runs past the request's deadline,
and a response size cap. Redirects are not followed. Errors become `FhirFetchError` with a reason
that is safe to log (status and kind, never the body or the token).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fhir_mapping.wire import decode_resource
from hooks.metrics import FHIR_FETCHES, FHIR_LATENCY
from hooks.outbound import FhirScope

FHIR_JSON = "application/fhir+json, application/json;q=0.9"


class FhirFetchError(Exception):
    """A FHIR request failed; `reason` is fit for logs and OperationOutcome diagnostics."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class SearchResult:
    """Resources of all pages read, and whether the page cap cut the search short."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    truncated: bool = False


class FhirClient:
    """Reads and searches one FHIR server on behalf of one hook request."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        scope: FhirScope,
        access_token: str | None,
        deadline: float,
        request_timeout: float,
        max_bytes: int,
        page_cap: int,
    ) -> None:
        self.http = http
        self.scope = scope
        self.base_url = scope.base_url
        self.access_token = access_token
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.max_bytes = max_bytes
        self.page_cap = page_cap
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers

    async def get_json(self, url: str) -> dict[str, Any] | None:
        """GET a URL on this server; None for 404/410 (no such resource)."""
        started = time.perf_counter()
        outcome = "error"
        try:
            body = await self._get_json(url)
            outcome = "ok" if body is not None else "not-found"
            return body
        except FhirFetchError as error:
            outcome = (
                "timeout"
                if "timed out" in error.reason
                else f"http-{error.status // 100}xx"
                if error.status
                else "error"
            )
            raise
        finally:
            FHIR_FETCHES.labels(outcome).inc()
            FHIR_LATENCY.observe(time.perf_counter() - started)

    async def _get_json(self, url: str) -> dict[str, Any] | None:
        target = self.scope.resolve(url)
        if target is None:
            # The one check every outbound FHIR URL passes (reads, searches, next links): the
            # token is never sent outside the request's FHIR base.
            raise FhirFetchError("URL outside the FHIR server; not called")
        url = target
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FhirFetchError("deadline reached before the request")
        timeout = httpx.Timeout(min(self.request_timeout, remaining))
        self.requests += 1
        try:
            async with self.http.stream(
                "GET", url, headers=self._headers(), timeout=timeout, follow_redirects=False
            ) as response:
                if response.status_code in (404, 410):
                    return None
                if response.status_code in (401, 403):
                    raise FhirFetchError(f"FHIR server refused access ({response.status_code})", response.status_code)
                if 300 <= response.status_code < 400:
                    raise FhirFetchError(
                        f"FHIR server redirected ({response.status_code}); redirects are not followed",
                        response.status_code,
                    )
                if response.status_code >= 400:
                    raise FhirFetchError(f"FHIR server answered {response.status_code}", response.status_code)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FhirFetchError("FHIR response larger than the size cap")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FhirFetchError("FHIR response larger than the size cap")
                    chunks.append(chunk)
        except httpx.TimeoutException as error:
            raise FhirFetchError("FHIR request timed out") from error
        except httpx.HTTPError as error:
            raise FhirFetchError(f"FHIR server unreachable ({type(error).__name__})") from error
        try:
            body = decode_resource(b"".join(chunks))
        except orjson.JSONDecodeError as error:
            raise FhirFetchError("FHIR server answered with invalid JSON") from error
        if not isinstance(body, dict):
            raise FhirFetchError("FHIR server answered with a non-object JSON body")
        return body

    async def read(self, path: str) -> dict[str, Any] | None:
        """Read `Type/id`; None when it does not exist."""
        body = await self.get_json(f"{self.base_url}/{path}")
        if body is not None and body.get("resourceType") == "OperationOutcome":
            raise FhirFetchError("FHIR server answered with an OperationOutcome")
        return body

    async def search(self, query: str, page_size: int | None = None) -> SearchResult:
        """Run `Type?params` and follow next links up to the page cap."""
        first = f"{self.base_url}/{query}"
        if page_size is not None and "_count=" not in query:
            first += ("&" if "?" in query else "?") + f"_count={page_size}"
        return await self.follow(first, SearchResult())

    async def follow(self, url: str | None, result: SearchResult) -> SearchResult:
        """Read search pages from `url` on, following next links, until none is left or the page
        cap is reached (then `result.truncated`)."""
        while url:
            if result.pages >= self.page_cap:
                result.truncated = True
                break
            body = await self.get_json(url)
            result.pages += 1
            if body is None:
                # A search answers a Bundle even when nothing matches; 404 means the server
                # cannot search this type at all, which is not the same as "no data".
                raise FhirFetchError("FHIR search answered 404 (type not supported)", 404)
            url = self.add_bundle(body, result)
        return result

    def add_bundle(self, body: dict[str, Any], result: SearchResult) -> str | None:
        """Add a searchset page's resources to `result`; return its next link, if any.

        A next link pointing anywhere but under this server's base is not followed (it would send
        the service's bearer token elsewhere); `hooks.outbound` decides, after normalisation.
        """
        if body.get("resourceType") == "OperationOutcome":
            raise FhirFetchError("FHIR search answered with an OperationOutcome")
        if body.get("resourceType") != "Bundle" or not isinstance(body.get("entry", []), list):
            raise FhirFetchError("FHIR search did not answer with a Bundle")
        for entry in body.get("entry", []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                result.resources.append(resource)
        for link in body.get("link", []) or []:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                if self.scope.resolve(link["url"]) is not None:
                    return str(link["url"])
                raise FhirFetchError("next link points outside the FHIR server; not followed")
        return None
