"""The calcinosis service: one CDS Hooks service declared once (id, hook, title, prefetch) and the
handler that turns a validated request into cards.

The handler is shared by the HTTP route and the `evaluate` command, so both give the same answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from calcinosis.knowledge_base import KnowledgeBase, default_knowledge
from fhir_mapping.pipeline import assess_resources, documents_calcinosis, warm_up_validation
from fhir_mapping.terminology import Terminology, load_terminology
from hooks.card_ids import CardIds
from hooks.cards import render_cards, unreadable_card, warm_up_orders
from hooks.models import HookRequest, HookResponse, PatientViewContext, ServiceDescription
from hooks.outbound import OutboundPolicy
from hooks.prefetch import PrefetchResolver, ResolvedData, lab_window, prefetch_keys
from hooks.settings import Settings
from hooks.tracing import step

if TYPE_CHECKING:
    from hooks.registry import DeclaredService

SERVICE_ID = "calcinosis"
HOOK = "patient-view"
SPEC_VERSION = "2.0.1"
HOOK_VERSION = "1.0"  # patient-view in the CDS Hooks Library 1.0.1


class InvalidContextError(ValueError):
    """The hook context does not satisfy the hook's definition (answered 400)."""


C = TypeVar("C", bound=PatientViewContext)


def validate_context(model: type[C], request: HookRequest) -> C:
    """The hook's context as `model`, or `InvalidContextError` naming the fields (never values)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(request.context)
    except ValidationError as error:
        fields = sorted({"context." + ".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in error.errors()})
        raise InvalidContextError("; ".join(fields)) from error


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handled call: the response and how the data was obtained (for logs)."""

    response: HookResponse
    data: ResolvedData
    patient_id: str


def note_incomplete_data(response: HookResponse, incomplete: list[str]) -> None:
    """Say on the first card which optional data the assessment saw only in part: a suggestion
    may be missing, or a cause unseen, because of it (the clinician should know, not guess)."""
    if not incomplete or not response.cards:
        return
    card = response.cards[0]
    lines = "\n".join(f"- {item}" for item in incomplete)
    note = f"**Incomplete record**: this assessment did not see all of the patient's data.\n{lines}"
    card.detail = f"{card.detail}\n\n{note}" if card.detail else note


class CalcinosisService:
    """Holds what is loaded once (knowledge base, value sets, templates) and handles calls."""

    def __init__(
        self, settings: Settings, knowledge: KnowledgeBase | None = None, terminology: Terminology | None = None
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge or default_knowledge()
        self.terminology = terminology or load_terminology(settings.local_valuesets, settings.include_unconfirmed_codes)
        self.keys = prefetch_keys(self.terminology)
        self.window = lab_window(self.terminology)
        self.card_ids = CardIds(settings.card_id_key)
        warm_up_validation()
        warm_up_orders()

    def declaration(self) -> DeclaredService:
        """The patient-view service as the registry declares it (the one place its id, hook,
        title, description and prefetch are written)."""
        from hooks.registry import DeclaredService

        return DeclaredService(
            id=SERVICE_ID,
            hook=HOOK,
            title="Calcinosis cutis: subtype, workup and differentials",
            description=(
                "When calcinosis cutis or calciphylaxis is documented, suggests the likely subtype "
                "(dystrophic, metastatic, idiopathic, iatrogenic, calciphylaxis) with the evidence, the "
                "workup still missing as draft orders, and the differential diagnoses to exclude. Silent otherwise."
            ),
            prefetch=self.keys,
            handler=self.handle,
            usage_requirements=(
                "Needs the patient's Conditions and calcium/phosphate-related Observations; medications and "
                "procedures improve the assessment, and active ServiceRequests keep a test already ordered out of "
                "the workup. Missing prefetch is fetched from fhirServer."
            ),
            version=SPEC_VERSION,
            hook_version=HOOK_VERSION,
        )

    def describe(self) -> ServiceDescription:
        """The discovery entry."""
        return self.declaration().describe()

    def context(self, request: HookRequest) -> PatientViewContext:
        """The patient-view context, or `InvalidContextError`."""
        return validate_context(PatientViewContext, request)

    def documents_calcinosis(self, resources: list[dict[str, Any]]) -> bool:
        """Early-exit check used while fetching."""
        return documents_calcinosis(resources, self.terminology)

    async def handle(
        self,
        request: HookRequest,
        http: httpx.AsyncClient | None,
        policy: OutboundPolicy,
        as_of: datetime | None = None,
    ) -> Outcome:
        """Resolve data, assess, render cards. `policy` is the SSRF guard, with no default: the
        HTTP layer passes the verified caller's (`Authenticator.outbound_policy`), the command
        line exactly the server its user named."""
        context = self.context(request)
        resolver = PrefetchResolver(
            self.keys, self.settings, http, self.documents_calcinosis, policy, self.window, as_of
        )
        data = await resolver.resolve(request, context.patient_id)
        if data.silent:
            return Outcome(HookResponse(cards=[]), data, context.patient_id)
        response = self.respond(data.resources, context.patient_id, request.hook_instance, as_of)
        note_incomplete_data(response, list(data.incomplete.values()))
        return Outcome(response, data, context.patient_id)

    def respond(
        self, resources: list[dict[str, Any]], patient_id: str, hook_instance: uuid.UUID, as_of: datetime | None = None
    ) -> HookResponse:
        """Cards for resources already in hand (also used by `evaluate` on a Bundle)."""
        with step("assessment"):
            result = assess_resources(
                resources, as_of or datetime.now(UTC), patient_id, self.terminology, self.knowledge
            )
        with step("rendering") as span:
            if result.assessment is None and result.unreadable_documentation:
                cards = [unreadable_card(self.knowledge, hook_instance)]
            else:
                cards = render_cards(
                    result.assessment, self.knowledge, hook_instance, patient_id, self.settings.workup_cap
                )
            self.card_ids.sign_cards(cards)
            span.set_attribute("calcinosis.cards", len(cards))
        return HookResponse(cards=cards)
