"""The CDS services this deployment offers, each declared once: id, hook, title, description,
prefetch templates and the handler that answers a call.

Discovery lists the declarations; the call and feedback routes look a service up here by the id in
the URL, so adding a service is adding a declaration, never a route. Both services share what is
loaded once per process (knowledge base, value sets, FHIR validators).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx

from hooks.models import HookRequest, ServiceDescription
from hooks.outbound import OutboundPolicy
from hooks.prefetch import PrefetchKey
from hooks.service import CalcinosisService, Outcome
from hooks.settings import Settings

Handler = Callable[[HookRequest, httpx.AsyncClient | None, OutboundPolicy, datetime | None], Awaitable[Outcome]]
"""Answers one validated call: the request, the shared HTTP client for FHIR fallback fetching,
the outbound policy of the verified client, and the moment to assess at (None: now)."""


@dataclass(frozen=True, slots=True)
class DeclaredService:
    """One CDS service as discovery describes it and as the routes call it."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...]
    handler: Handler
    usage_requirements: str | None = None
    version: str | None = None
    """The CDS Hooks specification version the service implements."""
    hook_version: str | None = None
    """The version of the hook's definition in the CDS Hooks Library."""

    def describe(self) -> ServiceDescription:
        """The discovery entry (CDS Hooks 2.0.1)."""
        return ServiceDescription(
            hook=self.hook,
            id=self.id,
            title=self.title,
            description=self.description,
            prefetch={key.key: key.query for key in self.prefetch},
            usage_requirements=self.usage_requirements,
            version=self.version,
            hook_version=self.hook_version,
        )


class ServiceRegistry:
    """The declared services by id, in discovery order."""

    def __init__(self, services: Iterable[DeclaredService]) -> None:
        self._services: dict[str, DeclaredService] = {}
        for service in services:
            if service.id in self._services:
                raise ValueError(f"CDS service id '{service.id}' is declared twice")
            self._services[service.id] = service

    def get(self, service_id: str) -> DeclaredService | None:
        """The service with this id, or None (the routes answer 404)."""
        return self._services.get(service_id)

    def __iter__(self) -> Iterator[DeclaredService]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)


def build_registry(settings: Settings, core: CalcinosisService | None = None) -> ServiceRegistry:
    """patient-view and order-sign over one loaded knowledge base and one set of value sets."""
    from hooks.order_sign import OrderSignService

    core = core or CalcinosisService(settings)
    return ServiceRegistry([core.declaration(), OrderSignService(core).declaration()])
