"""The order-sign service: checks the unsigned orders of a patient with calcinosis cutis,
calciphylaxis or the consensus risk pattern (clinical-knowledge.md section 15).

EHRs fire order-sign synchronously as the clinician clicks Sign, so the usual answer (no draft
order that any table names) is given before any chart is read or fetched. Otherwise the chart is
obtained exactly as for patient-view (the same prefetch templates, the same fallback fetching
under the same outbound policy, the patient's active test orders included: a test ordered and not
yet resulted is "on file" for 15.5 like a result), plus the encounter when the context names one
(its class sets the re-test intervals of 15.5).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from calcinosis.orders import DraftOrder, EncounterSetting, load_order_knowledge
from fhir_mapping.orders import DraftOrdersError, check_draft_orders, encounter_setting, read_draft_orders
from hooks.models import HookRequest, HookResponse, OrderSignContext
from hooks.order_cards import render_order_cards
from hooks.outbound import OutboundPolicy
from hooks.prefetch import PrefetchKey, PrefetchResolver, ResolvedData
from hooks.registry import DeclaredService
from hooks.service import (
    SPEC_VERSION,
    CalcinosisService,
    InvalidContextError,
    Outcome,
    note_incomplete_data,
    validate_context,
)
from hooks.tracing import step

ORDER_SIGN_SERVICE_ID = "calcinosis-order-sign"
ORDER_SIGN_HOOK = "order-sign"
ORDER_SIGN_HOOK_VERSION = "1.0"  # order-sign in the CDS Hooks Library 1.0.1
ENCOUNTER_KEY = PrefetchKey("encounter", "Encounter/{{context.encounterId}}", "Encounter", required=False)
ORDER_SIGN_KEYS = (ENCOUNTER_KEY,)
"""The order-sign service's templates beyond those it shares with patient-view (which include the
active test orders, `hooks.prefetch.SERVICE_REQUESTS_KEY`: patient-view's workup reads them too)."""


class OrderSignService:
    """Shares the patient-view service's knowledge base, value sets and prefetch templates."""

    def __init__(self, core: CalcinosisService) -> None:
        self.core = core
        self.order_knowledge = load_order_knowledge(core.knowledge)
        self.keys = (*core.keys, *ORDER_SIGN_KEYS)

    def declaration(self) -> DeclaredService:
        """The order-sign service as the registry declares it."""
        return DeclaredService(
            id=ORDER_SIGN_SERVICE_ID,
            hook=ORDER_SIGN_HOOK,
            title="Calcinosis and calciphylaxis: orders that feed calcification",
            description=(
                "For a patient with calcinosis cutis, calciphylaxis or the calciphylaxis risk pattern, checks the "
                "unsigned orders: warfarin, calcium, active vitamin D, phosphate and other orders the sources list as "
                "risk factors get a card with the reason and the alternative to discuss; a lab test repeated within "
                "its usual interval gets a card that offers to remove it. Silent otherwise."
            ),
            prefetch=self.keys,
            handler=self.handle,
            version=SPEC_VERSION,
            hook_version=ORDER_SIGN_HOOK_VERSION,
            usage_requirements=(
                "Sends draftOrders (MedicationRequest coded in RxNorm or named, ServiceRequest coded in LOINC). Uses "
                "the same chart data as the patient-view service; missing prefetch is fetched from fhirServer."
            ),
        )

    def context(self, request: HookRequest) -> OrderSignContext:
        """The order-sign context, or `InvalidContextError`."""
        return validate_context(OrderSignContext, request)

    def draft_orders(
        self, context: OrderSignContext, chart: list[dict[str, Any]] | None = None
    ) -> tuple[DraftOrder, ...]:
        """The draft orders, resolved; `InvalidContextError` when `draftOrders` is not a Bundle."""
        try:
            return read_draft_orders(context.draft_orders, self.core.terminology, chart or ())
        except DraftOrdersError as error:
            raise InvalidContextError(str(error)) from error

    async def handle(
        self,
        request: HookRequest,
        http: httpx.AsyncClient | None,
        policy: OutboundPolicy,
        as_of: datetime | None = None,
    ) -> Outcome:
        """Check the draft orders: silent at once when none is one the tables name, else resolve
        the chart (prefetch, then fetching) and check."""
        context = self.context(request)
        drafts = self.draft_orders(context)
        if not any(d.relevant or d.unresolved for d in drafts):
            return Outcome(
                HookResponse(cards=[]), ResolvedData(how={"draftOrders": "nothing to check"}), context.patient_id
            )
        resolver = PrefetchResolver(
            self.keys, self.core.settings, http, lambda resources: True, policy, self.core.window, as_of
        )
        data = await resolver.resolve(request, context.patient_id)
        if any(d.unresolved for d in drafts):
            drafts = self.draft_orders(context, data.resources)
        response = self.respond(data.resources, drafts, context.patient_id, request.hook_instance, as_of)
        note_incomplete_data(response, list(data.incomplete.values()))
        return Outcome(response, data, context.patient_id)

    def respond(
        self,
        resources: list[dict[str, Any]],
        drafts: tuple[DraftOrder, ...],
        patient_id: str,
        hook_instance: uuid.UUID,
        as_of: datetime | None = None,
    ) -> HookResponse:
        """Cards for a chart already in hand (also used by `evaluate` and `check`)."""
        encounter = next(
            (encounter_setting(r) for r in resources if isinstance(r, dict) and r.get("resourceType") == "Encounter"),
            EncounterSetting.UNKNOWN,
        )
        with step("assessment"):
            result = check_draft_orders(
                resources,
                drafts,
                as_of or datetime.now(UTC),
                patient_id,
                self.core.terminology,
                self.core.knowledge,
                self.order_knowledge,
                encounter,
            )
        with step("rendering") as span:
            cards = render_order_cards(result.check, self.core.knowledge, self.order_knowledge, hook_instance)
            self.core.card_ids.sign_cards(cards)  # feedback is stored only for cards this service issued
            span.set_attribute("calcinosis.cards", len(cards))
        return HookResponse(cards=cards)
