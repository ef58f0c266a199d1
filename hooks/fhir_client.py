"""A small FHIR R4 read/search client over one shared `httpx.AsyncClient`.

Only what the prefetch fallback needs: a read, and a search that follows `Bundle.link[next]`
verbatim (HAPI pages with `_getpages` tokens, others with offsets or cursors, so page URLs are never
built here), with a page cap, a per-request timeout that never runs past the request's deadline,
and a response size cap. Redirects are not followed. Errors become `FhirFetchError` with a reason
that is safe to log (status and kind, never the body or the token).

A FHIR server's answer is bounded in memory and time before it is trusted with either:
- decompression is done here in steps of at most `DECODE_STEP` bytes, and the size cap is
  checked after each (a gzip bomb is stopped at the cap, not after inflating a network chunk a
  thousandfold);
- all answers of one hook request share one byte budget (`ByteBudget`), so pages whose next link
  points to themselves stop at it, whatever the page cap;
- the deadline is checked while reading, and the loop yields between steps, so a hostile answer
  neither outlives the deadline nor holds up other requests;
- a large answer is parsed in a worker thread, and the body is one buffer released as soon as it
  is parsed (no list of chunks, no join copy), so memory returns to its level after each answer.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fhir_mapping.wire import decode_resource
from hooks.metrics import FHIR_FETCHES, FHIR_LATENCY
from hooks.outbound import FhirScope
from hooks.tracing import fhir_fetch_attributes, traced

FHIR_JSON = "application/fhir+json, application/json;q=0.9"
ACCEPT_ENCODING = "gzip, deflate"  # only what `_decoder` can inflate in bounded steps
DECODE_STEP = 256 * 1024
"""Most bytes one decompression step produces before the caps are checked again."""
YIELD_EVERY_STEPS = 4
"""Steps between two yields to the event loop (about 1 MB of output)."""
PARSE_IN_THREAD_BYTES = 1_000_000
"""Answers above this are parsed in a worker thread rather than on the event loop."""


class FhirFetchError(Exception):
    """A FHIR request failed; `reason` is fit for logs and OperationOutcome diagnostics."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class ByteBudget:
    """Decoded bytes all FHIR answers of one hook request may still take (every page of every
    search, every read)."""

    remaining: int

    def spend(self, size: int) -> None:
        self.remaining -= size


Decoder = Callable[[bytes], tuple[bytes, bytes]]
"""Takes compressed input; returns at most `DECODE_STEP` bytes of output and the input not yet
consumed (fed again until empty)."""


def _decoder(content_encoding: str | None) -> Decoder:
    """A bounded-step decoder for the answer's Content-Encoding (identity, gzip or deflate)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):

        def identity(data: bytes) -> tuple[bytes, bytes]:
            return data[:DECODE_STEP], data[DECODE_STEP:]

        return identity
    if encoding in ("gzip", "x-gzip", "deflate"):
        # 32 + MAX_WBITS: a gzip or zlib header, detected; what "deflate" means in practice.
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)

        def inflate(data: bytes) -> tuple[bytes, bytes]:
            try:
                return inflater.decompress(data, DECODE_STEP), inflater.unconsumed_tail
            except zlib.error as error:
                raise FhirFetchError("FHIR answer could not be decompressed") from error

        return inflate
    raise FhirFetchError("FHIR answer has an unsupported Content-Encoding")


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
        budget: ByteBudget | None = None,
    ) -> None:
        self.http = http
        self.scope = scope
        self.base_url = scope.base_url
        self.access_token = access_token
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.max_bytes = max_bytes
        self.page_cap = page_cap
        self.budget = budget or ByteBudget(max_bytes * page_cap)
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON, "Accept-Encoding": ACCEPT_ENCODING}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers

    @traced("FHIR fetch", lambda self, url: fhir_fetch_attributes(url))
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
        for attempt in (1, 2):
            timeout = httpx.Timeout(min(self.request_timeout, max(0.001, self.deadline - time.monotonic())))
            self.requests += 1
            answered = False
            try:
                async with self.http.stream(
                    "GET", url, headers=self._headers(), timeout=timeout, follow_redirects=False
                ) as response:
                    answered = True
                    if response.status_code in (404, 410):
                        return None
                    self._check_status(response.status_code)
                    body = await self._read_body(response)
                break
            except httpx.TimeoutException as error:
                raise FhirFetchError("FHIR request timed out") from error
            except (httpx.RemoteProtocolError, httpx.ReadError) as error:
                # A kept-alive connection the server closed just as it was reused fails before
                # any answer: a GET is safe to send once more, on a new connection.
                if answered or attempt == 2 or time.monotonic() >= self.deadline:
                    raise FhirFetchError(f"FHIR server unreachable ({type(error).__name__})") from error
            except httpx.HTTPError as error:
                raise FhirFetchError(f"FHIR server unreachable ({type(error).__name__})") from error
        try:
            if len(body) > PARSE_IN_THREAD_BYTES:
                # A large answer is parsed in a worker thread: the event loop keeps serving other
                # requests and keeps the deadline's timer running meanwhile.
                decoded = await asyncio.to_thread(decode_resource, body)
            else:
                decoded = decode_resource(body)
        except orjson.JSONDecodeError as error:
            raise FhirFetchError("FHIR server answered with invalid JSON") from error
        finally:
            del body
        if not isinstance(decoded, dict):
            raise FhirFetchError("FHIR server answered with a non-object JSON body")
        return decoded

    @staticmethod
    def _check_status(status: int) -> None:
        if status in (401, 403):
            raise FhirFetchError(f"FHIR server refused access ({status})", status)
        if 300 <= status < 400:
            raise FhirFetchError(f"FHIR server redirected ({status}); redirects are not followed", status)
        if status >= 400:
            raise FhirFetchError(f"FHIR server answered {status}", status)

    async def _read_body(self, response: httpx.Response) -> bytearray:
        """The decoded body, within the page cap and what is left of the request's byte budget,
        and before the deadline.

        Decompression is done here, not by httpx, because httpx inflates each network chunk in
        one call: a 64 KB chunk of a gzip bomb becomes 64 MB before any cap can look at it. Here
        every step produces at most `DECODE_STEP` bytes, the caps are checked after each, and the
        loop yields between steps so that other requests (and the deadline) are not held up.
        """
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > min(self.max_bytes, self.budget.remaining):
            raise self._too_large(int(declared))
        decoder = _decoder(response.headers.get("content-encoding"))
        body = bytearray()
        steps = 0
        async for raw in response.aiter_raw():
            data = raw
            while True:
                piece, data = decoder(data)
                body += piece
                # Spent as it is read: concurrent searches of one call share the budget.
                self.budget.spend(len(piece))
                if len(body) > self.max_bytes or self.budget.remaining < 0:
                    raise self._too_large(len(body))
                steps += 1
                if steps % YIELD_EVERY_STEPS == 0:
                    if time.monotonic() > self.deadline:
                        raise FhirFetchError("FHIR request timed out (deadline reached while reading)")
                    await asyncio.sleep(0)
                if not data and len(piece) < DECODE_STEP:
                    break  # input used up and no output left waiting (a full step may have more)
            if time.monotonic() > self.deadline:
                raise FhirFetchError("FHIR request timed out (deadline reached while reading)")
        return body

    def _too_large(self, size: int) -> FhirFetchError:
        if size > self.max_bytes:
            return FhirFetchError("FHIR response larger than the size cap")
        return FhirFetchError("FHIR answers larger in total than the per-request byte cap")

    async def read(self, path: str) -> dict[str, Any] | None:
        """Read `Type/id`; None when it does not exist."""
        body = await self.get_json(f"{self.base_url}/{path}")
        if body is not None and body.get("resourceType") == "OperationOutcome":
            raise FhirFetchError("FHIR server answered with an OperationOutcome")
        return body

    async def search(self, query: str, page_size: int | None = None, first_page_only: bool = False) -> SearchResult:
        """Run `Type?params` and follow next links up to the page cap (or read only the first
        page, for a search that asks for the newest few results)."""
        first = f"{self.base_url}/{query}"
        if page_size is not None and "_count=" not in query:
            first += ("&" if "?" in query else "?") + f"_count={page_size}"
        if first_page_only:
            result = SearchResult()
            body = await self.get_json(first)
            if body is None:
                raise FhirFetchError("FHIR search answered 404 (type not supported)", 404)
            result.pages = 1
            self.add_bundle(body, result)
            return result
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
