"""Bounded work per worker: load shedding, and closing connections that never finish a header.

The handler is CPU-bound (it holds the event loop for 8-40 ms per call), so requests admitted
beyond what a worker can finish in time only queue, every caller waits longer, and EHR clients
time out. `LoadShedder` admits at most `limit` requests at once and answers the rest at once with
503 and Retry-After, which a load balancer or the EHR can act on; health checks are never shed (a
busy worker is alive and ready, just full). `Admission` counts what happened, for tests and the
benchmark: `peak` never exceeds `limit`.

`GuardedHttpToolsProtocol` is uvicorn's httptools protocol plus a header time-out: a connection
that has not delivered a complete request header within `header_timeout_seconds` of opening (or
of its previous response) is closed, so slow-header clients cannot hold connections open.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hooks.metrics import IN_FLIGHT, IN_FLIGHT_PEAK, SHED
from hooks.models import operation_outcome

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass
class Admission:
    """Requests in the worker now, the most there ever were, and how many were shed."""

    limit: int
    in_flight: int = 0
    peak: int = 0
    shed: int = 0


class LoadShedder:
    """ASGI middleware: at most `admission.limit` requests at once; the rest get 503 + Retry-After."""

    def __init__(self, app: Any, admission: Admission, retry_after_seconds: int) -> None:
        self.app = app
        self.admission = admission
        body = orjson.dumps(operation_outcome("transient", "service busy; retry later"))
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after_seconds).encode()),
        ]
        self._body = body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if admission.in_flight >= admission.limit:
            admission.shed += 1
            SHED.inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            return
        admission.in_flight += 1
        IN_FLIGHT.inc()
        if admission.in_flight > admission.peak:
            admission.peak = admission.in_flight
            IN_FLIGHT_PEAK.set(admission.peak)
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_flight -= 1
            IN_FLIGHT.dec()


@functools.cache
def _header_timeout() -> float:
    """The configured header time-out (read once per worker process)."""
    from hooks.settings import Settings

    try:
        return Settings().header_timeout_seconds
    except ValueError:  # settings are validated at start-up; here only the default matters
        return float(Settings.model_fields["header_timeout_seconds"].default)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections that do not finish a header in time."""

    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(_header_timeout(), self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's header (keep-alive closes idle ones sooner)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)
