"""An audit trail of every hook call and every feedback call, shaped after FHIR R4 AuditEvent,
under a logger of its own (`calcinosis_cds.audit`, one event per line) that `serve` sends to its
own destination (`CALCINOSIS_AUDIT_LOG`: stderr, stdout or a file), so a site can route it to its
SIEM apart from the operational log.

Who called (the verified issuer, tenant and subject), which service and hook, when, and the
outcome; the `hookInstance` ties it to the EHR's own audit. No patient identifier and no clinical
value is written: the EHR's audit already links the hookInstance to the patient.
"""

from __future__ import annotations

import logging
import time

import orjson

from hooks.auth.verify import VerifiedToken
from hooks.logs import utc_timestamp

audit_log = logging.getLogger("calcinosis_cds.audit")

# FHIR R4 AuditEventOutcome: 0 success, 4 minor failure (the caller's fault), 8 serious failure
# (we could not do it), 12 major failure.
_OUTCOME = {2: "0", 4: "4", 5: "8"}


class _EventJson:
    """An AuditEvent as its JSON text, written only when a formatter reads the message."""

    __slots__ = ("event",)

    def __init__(self, event: dict[str, object]) -> None:
        self.event = event

    def __str__(self) -> str:
        return orjson.dumps(self.event).decode()


def audit_hook_call(
    *,
    service_id: str,
    hook: str,
    hook_instance: str | None,
    status: int,
    verified: VerifiedToken | None,
    client_address: str | None,
    cards: int | None = None,
    suppressed: int = 0,
    refused: bool = False,
) -> None:
    """Write one AuditEvent-shaped record for a service call (also for rejected calls; `refused`:
    the caller's token was not accepted, so the caller is unknown)."""
    description = (
        f"HTTP {status}"
        + (f", {cards} cards" if cards is not None else "")
        + (f", {suppressed} suppressed" if suppressed else "")
    )
    entity: list[dict[str, object]] | None = None
    if hook_instance:
        entity = [{"what": {"identifier": {"system": "urn:cds-hooks:hookInstance", "value": hook_instance}}}]
    _write(hook, "E", service_id, status, description, verified, client_address, entity, refused)


def audit_feedback_call(
    *,
    service_id: str,
    status: int,
    verified: VerifiedToken | None,
    client_address: str | None,
    received: int | None = None,
    new: int | None = None,
    rejected: int = 0,
    refused: bool = False,
) -> None:
    """Write one AuditEvent-shaped record for a feedback call, refused ones included (401, 400,
    404, 413, 503...): feedback writes to the store and can silence cards, so who sent it is on
    record as for a hook call. Subtype `feedback`, action C (create)."""
    description = (
        f"HTTP {status}"
        + (f", {received} items" if received is not None else "")
        + (f", {new} new" if new is not None else "")
        + (f", {rejected} rejected" if rejected else "")
    )
    _write("feedback", "C", service_id, status, description, verified, client_address, None, refused)


def _write(
    subtype: str,
    action: str,
    service_id: str,
    status: int,
    description: str,
    verified: VerifiedToken | None,
    client_address: str | None,
    entity: list[dict[str, object]] | None,
    refused: bool,
) -> None:
    if verified is not None:
        display = verified.issuer
    elif refused:
        display = "not authenticated (token not accepted)"
    else:
        display = "unauthenticated (authentication disabled)"
    who: dict[str, object] = {"display": display}
    if verified is not None:
        who["identifier"] = {"system": verified.issuer, "value": verified.subject or verified.issuer}
    agent: dict[str, object] = {"requestor": True, "who": who}
    if verified is not None and verified.tenant:
        agent["altId"] = verified.tenant
    if client_address:
        agent["network"] = {"address": client_address, "type": "2"}
    event: dict[str, object] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "urn:calcinosis-cds:cds-hooks", "code": subtype}],
        "action": action,
        "recorded": utc_timestamp(time.time()),
        "outcome": _OUTCOME.get(status // 100, "12"),
        "outcomeDesc": description,
        "agent": [agent],
        "source": {"observer": {"display": f"calcinosis-cds/{service_id}"}},
    }
    if entity:
        event["entity"] = entity
    # The message is the event's JSON (any formatter writes it whole); the JSON format embeds the
    # event itself as `auditEvent` rather than a string inside a string, so the message is only
    # serialised when a formatter asks for it.
    audit_log.info("%s", _EventJson(event), extra={"audit_event": event})
