"""Pydantic models of the CDS Hooks 2.0.1 wire format (with the cheap 3.0 additions).

Field names are snake_case in Python and camelCase on the wire (aliases). Responses are serialised
with `by_alias=True, exclude_none=True`, and the validators enforce the spec's invariants
(cds-r-1, cds-resp-*, cds-fb-*) so that an invalid card cannot be produced, and an invalid request
or feedback is answered 400 with an OperationOutcome.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SUMMARY_MAX = 139  # "<140 characters"; the Inferno CRD kit rejects 140.


class SpecModel(BaseModel):
    """Base: camelCase aliases, population by either name, no extra fields dropped silently."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=False)

    def wire(self) -> dict[str, Any]:
        """The JSON object as the spec spells it: aliases, and no null optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ----- request ----------------------------------------------------------------------------------


class FhirAuthorization(SpecModel):
    """OAuth 2.0 access for the service to call `fhirServer` (never logged)."""

    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class PatientViewContext(SpecModel):
    """Context of `patient-view` (CDS Hooks Library 1.0.1).

    Only `patientId` is checked for shape, because the service uses it (in prefetch queries and
    the draft orders' subject). `userId` and `encounterId` are not used, so their shape is not a
    reason to refuse a call: EHRs send `Device/...` users, and encounter ids of their own form.
    """

    user_id: str = Field(alias="userId", min_length=1)
    patient_id: str = Field(alias="patientId")
    encounter_id: str | None = Field(default=None, alias="encounterId")

    @field_validator("patient_id")
    @classmethod
    def _bare_id(cls, value: str) -> str:
        if not FHIR_ID.match(value):
            raise ValueError("must be a bare FHIR id such as '123', not 'Patient/123'")
        return value


class OrderSignContext(PatientViewContext):
    """Context of `order-sign` (CDS Hooks Library 1.0.1): the patient-view fields plus
    `draftOrders`, a Bundle of the unsigned request resources (not a prefetch token). The Bundle's
    content is checked by `fhir_mapping.orders`, which names the field it rejects."""

    draft_orders: dict[str, Any] = Field(alias="draftOrders")


class HookRequest(SpecModel):
    """A CDS Hooks service call."""

    hook: str
    hook_instance: uuid.UUID = Field(alias="hookInstance")
    fhir_server: str | None = Field(default=None, alias="fhirServer")
    fhir_authorization: FhirAuthorization | None = Field(default=None, alias="fhirAuthorization")
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    """Values are checked against the templates by `hooks.prefetch`, key by key: a key the service
    did not request is ignored whatever it holds (the spec's own example sends `"user": "123"`),
    and a requested key holding something unreadable is treated as not satisfied."""
    extension: dict[str, Any] | None = None

    @field_validator("fhir_server")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
            raise ValueError("must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _authorization_needs_server(self) -> HookRequest:
        if self.fhir_authorization is not None and self.fhir_server is None:
            raise ValueError("fhirAuthorization requires fhirServer (cds-r-1)")
        return self


# ----- response ---------------------------------------------------------------------------------


class Coding(SpecModel):
    """The CDS Hooks Coding (a trimmed FHIR Coding)."""

    system: str
    code: str
    display: str | None = None


class Source(SpecModel):
    """Where the guidance comes from (the knowledge source, not the patient data)."""

    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(SpecModel):
    """One change a suggestion makes in the EHR."""

    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resource_id: str | None = Field(default=None, alias="resourceId")

    @model_validator(mode="after")
    def _resource_for_create(self) -> Action:
        if self.type in ("create", "update") and self.resource is None:
            raise ValueError("create and update actions carry the resource")
        if self.type == "delete" and self.resource_id is None:
            raise ValueError("delete actions carry resourceId")
        return self


class Suggestion(SpecModel):
    """A button the clinician can accept."""

    label: str = Field(min_length=1)
    uuid: str | None = None
    is_recommended: bool | None = Field(default=None, alias="isRecommended")
    actions: list[Action] | None = None


class Link(SpecModel):
    """A link shown with the card."""

    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]
    app_context: str | None = Field(default=None, alias="appContext")
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_for_smart(self) -> Link:
        if self.app_context is not None and self.type != "smart":
            raise ValueError("appContext is only for smart links (cds-resp-3)")
        return self


class OverrideReason(Coding):
    """An override reason: `display` is required here."""

    display: str = Field(min_length=1)


class Card(SpecModel):
    """A CDS Hooks card."""

    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=SUMMARY_MAX)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selection_behavior: Literal["at-most-one", "any"] | None = Field(default=None, alias="selectionBehavior")
    override_reasons: list[OverrideReason] | None = Field(default=None, alias="overrideReasons")
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _invariants(self) -> Card:
        if self.suggestions is not None and self.selection_behavior is None:
            raise ValueError("selectionBehavior is required with suggestions")
        for name in ("suggestions", "override_reasons", "links"):
            if getattr(self, name) == []:
                raise ValueError(f"{name} must be omitted rather than empty")
        return self


class HookResponse(SpecModel):
    """The service's answer: cards (possibly none)."""

    cards: list[Card]
    system_actions: list[Action] | None = Field(default=None, alias="systemActions")


# ----- discovery --------------------------------------------------------------------------------


class ServiceDescription(SpecModel):
    """One entry of the discovery document."""

    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usage_requirements: str | None = Field(default=None, alias="usageRequirements")
    version: str | None = None
    """The CDS Hooks specification version the service implements (3.0 puts it per service)."""
    hook_version: str | None = Field(default=None, alias="hookVersion")
    """The version of the hook's definition in the CDS Hooks Library (patient-view: 1.0)."""
    extension: dict[str, Any] | None = None


class Discovery(SpecModel):
    """`GET /cds-services`."""

    services: list[ServiceDescription]


# ----- feedback ---------------------------------------------------------------------------------


FEEDBACK_COMMENT_MAX = 2000
"""Longest override comment stored (characters): a clinician's reason, not a document."""
FEEDBACK_BATCH_MAX = 500
"""Most entries in one feedback call: an EHR batching a day's outcomes of one clinic stays well
under it, and one call cannot hold the store's write lock for long."""
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class AcceptedSuggestion(SpecModel):
    """A suggestion the clinician accepted, by its uuid."""

    id: str = Field(min_length=1, max_length=64)


class FeedbackCoding(SpecModel):
    """A coded override reason as the EHR sends it back: the spec's feedback allows a reason
    without `system` (then the code is read as one of this service's own override reasons)."""

    system: str | None = Field(default=None, max_length=256)
    code: str = Field(min_length=1, max_length=128)
    display: str | None = Field(default=None, max_length=FEEDBACK_COMMENT_MAX)


class FeedbackOverrideReason(SpecModel):
    """Why a card was overridden: a coded reason and/or a comment (cds-fb-3)."""

    reason: FeedbackCoding | None = None
    user_comment: str | None = Field(default=None, alias="userComment", max_length=FEEDBACK_COMMENT_MAX)

    @model_validator(mode="after")
    def _reason_or_comment(self) -> FeedbackOverrideReason:
        if self.reason is None and not self.user_comment:
            raise ValueError("overrideReason needs a reason or a userComment (cds-fb-3)")
        return self


class FeedbackItem(SpecModel):
    """One feedback entry."""

    card: str = Field(min_length=1, max_length=64)
    outcome: Literal["accepted", "overridden"]
    accepted_suggestions: list[AcceptedSuggestion] | None = Field(
        default=None, alias="acceptedSuggestions", max_length=100
    )
    override_reason: FeedbackOverrideReason | None = Field(default=None, alias="overrideReason")
    outcome_timestamp: str = Field(alias="outcomeTimestamp", max_length=64)

    @field_validator("outcome_timestamp")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        # RFC 3339 section 5.6 lets "T" and "Z" be lowercase.
        if not RFC3339.match(value):
            raise ValueError("must be an RFC 3339 timestamp such as 2026-11-01T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.accepted_suggestions:
            raise ValueError("accepted feedback lists acceptedSuggestions (cds-fb-2)")
        return self


class Feedback(SpecModel):
    """`POST /cds-services/{id}/feedback` as published (the OpenAPI document's request body)."""

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=FEEDBACK_BATCH_MAX)


class FeedbackBatch(SpecModel):
    """The same body as the route reads it: the envelope first, then each entry on its own
    (`FeedbackItem`), so that one bad entry does not cost the others their place."""

    feedback: list[Any] = Field(min_length=1, max_length=FEEDBACK_BATCH_MAX)


# ----- errors -----------------------------------------------------------------------------------


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """A FHIR OperationOutcome body for a non-2xx answer (CDS Hooks 3.0 convention).

    `diagnostics` must never contain patient data or request content: callers pass fixed text
    and field names only.
    """
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
