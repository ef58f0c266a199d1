"""An audit trail of every hook call, shaped after FHIR R4 AuditEvent, written to the log stream
(logger `calcinosis_cds.audit`, one JSON object per line) so the hospital's log pipeline keeps it.

Who called (the verified issuer, tenant and subject), which service and hook, when, and the
outcome; the `hookInstance` ties it to the EHR's own audit. No patient identifier and no clinical
value is written: the EHR's audit already links the hookInstance to the patient.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from hooks.auth.verify import VerifiedToken

audit_log = logging.getLogger("calcinosis_cds.audit")

# FHIR R4 AuditEventOutcome: 0 success, 4 minor failure (the caller's fault), 8 serious failure
# (we could not do it), 12 major failure.
_OUTCOME = {2: "0", 4: "4", 5: "8"}


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
) -> None:
    """Write one AuditEvent-shaped record for a service call (also for rejected calls)."""
    who: dict[str, object] = {
        "display": "unauthenticated (authentication disabled)" if verified is None else verified.issuer
    }
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
        "subtype": [{"system": "urn:calcinosis-cds:cds-hooks", "code": hook}],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": _OUTCOME.get(status // 100, "12"),
        "outcomeDesc": f"HTTP {status}"
        + (f", {cards} cards" if cards is not None else "")
        + (f", {suppressed} suppressed" if suppressed else ""),
        "agent": [agent],
        "source": {"observer": {"display": f"calcinosis-cds/{service_id}"}},
    }
    if hook_instance:
        event["entity"] = [{"what": {"identifier": {"system": "urn:cds-hooks:hookInstance", "value": hook_instance}}}]
    # The message is the event's JSON (any formatter writes it whole); the JSON format embeds the
    # event itself as `auditEvent` rather than a string inside a string.
    audit_log.info(orjson.dumps(event).decode(), extra={"audit_event": event})
