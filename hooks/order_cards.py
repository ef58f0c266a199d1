"""Order-check advice to CDS Hooks cards: one card per draft order that needs one.

The statements come from `calcinosis.orders` (and its knowledge file); this module only lays them
out for a narrow EHR panel (clinical-knowledge.md 11.4): the summary says what the order does in
this patient, the detail opens with why, the values behind it (as the lab reported them, with
dates) and the alternative to discuss. Provenance (rule, section, how the order was resolved,
record references) travels in the extension only. A repeat lab offers one suggestion, removing
that draft (`delete` with `resourceId`); medication cards carry no action, because deleting a
binder or an anticoagulant could leave its indication untreated (15.6).
"""

from __future__ import annotations

import uuid
from typing import Any

from calcinosis.assessment import Evidence
from calcinosis.knowledge_base import KnowledgeBase
from calcinosis.orders import OrderAdvice, OrderCheck, OrderKnowledge
from calcinosis.statements import day
from hooks.cards import (
    EXTENSION_KEY,
    OVERRIDE_SYSTEM,
    SOURCE_LABEL,
    SOURCE_URL,
    TOPIC_SYSTEM,
    card_uuid,
    md,
    prune,
    shorten,
)
from hooks.models import Action, Card, Coding, Link, OverrideReason, Source, Suggestion

ORDER_CHECK_EXTENSION = f"{EXTENSION_KEY}.order-check"
"""The card extension that carries an order card's provenance (rule, classes, tests, evidence)."""
TOPICS = {"medication": "order-check", "precaution": "order-check", "repeat-lab": "repeat-lab"}
TOPIC_DISPLAY = {"order-check": "Order check", "repeat-lab": "Repeat laboratory test"}
MAX_EVIDENCE_LINES = 3


def _evidence_line(evidence: Evidence) -> str:
    """'Phosphate 2.55 mmol/L, 26 Oct 2026': the test's short name, the value as the lab reported
    it, and the date written as on the patient-view cards; no record ids, no converted ranges."""
    name = (evidence.display or "Record entry").split(" [")[0]
    value = f" {md(evidence.reported)}" if evidence.reported else ""
    flag = ", above the lab's range" if evidence.interpretation == "high" else ""
    return f"{md(name)}{value}{flag}, {day(evidence.date)}"


def _links(kb: KnowledgeBase, keys: tuple[str, ...]) -> list[Link] | None:
    links: list[Link] = []
    for key in keys:
        source = kb.sources.get(key)
        if source is None or not source.link or source.url is None or any(link.url == source.url for link in links):
            continue
        links.append(Link(label=shorten(source.citation, 120), url=source.url, type="absolute"))
        if len(links) == 3:
            break
    return links or None


def _detail(advice: OrderAdvice) -> str:
    order = advice.order
    lines = [f"**Draft order: {md(order.label or order.name)}** (decision support, not a diagnosis)"]
    lines.append(f"- Why: {md(advice.why[0])}")
    for evidence in advice.evidence[:MAX_EVIDENCE_LINES]:
        lines.append(f"- {_evidence_line(evidence)}")
    if advice.alternative:
        lines.append(f"- To discuss with the prescriber: {md(advice.alternative)}")
    for extra in advice.why[1:]:
        lines.append(f"- {md(extra)}")
    if advice.kind != "repeat-lab":
        lines.append("")
        lines.append("The order is unchanged unless you change it.")
    return "\n".join(lines)


def _extension(advice: OrderAdvice, check: OrderCheck) -> dict[str, Any]:
    order = advice.order
    extension: dict[str, Any] = prune(
        {
            ORDER_CHECK_EXTENSION: {
                "draftOrder": order.reference,
                "rule": advice.rule_id,
                "section": advice.section,
                "gates": list(check.settings),
                "resolvedBy": list(order.resolved_by),
                "drugClasses": [c.value for c in order.drug_classes],
                "tests": [a.value for a in order.analytes] + [p.value for p in order.procedures],
                "evidence": [
                    {
                        "reference": e.reference,
                        "code": e.code,
                        "display": e.display,
                        "value": e.value,
                        "unit": e.unit,
                        "reported": e.reported,
                        "date": e.date.isoformat() if e.date else None,
                        "referenceRange": e.reference_range,
                    }
                    for e in advice.evidence
                ],
                "sources": list(advice.sources),
            }
        }
    )
    return extension


def override_scope(card: dict[str, Any]) -> str | None:
    """What an override of an order card silences, beside its topic: the rule and the drug classes
    or tests of the order ('warfarin for calciphylaxis', 'a repeat PTH'), never the draft's id
    (each signing sends a new draft). So overriding the warfarin card leaves a calcium binder card,
    or an IV calcium card under the same rule, to be shown. None for a card of another service."""
    extension = (card.get("extension") or {}).get(ORDER_CHECK_EXTENSION)
    if not isinstance(extension, dict) or not isinstance(extension.get("rule"), str):
        return None
    kinds = sorted(str(k) for k in [*(extension.get("drugClasses") or []), *(extension.get("tests") or [])])
    return "/".join([extension["rule"], *kinds])


def order_card(
    advice: OrderAdvice,
    index: int,
    check: OrderCheck,
    kb: KnowledgeBase,
    knowledge: OrderKnowledge,
    hook_instance: uuid.UUID,
) -> Card:
    """The card of one draft order."""
    topic = TOPICS[advice.kind]
    name = f"{topic}/{advice.order.reference or index}"
    suggestions: list[Suggestion] | None = None
    if advice.delete_draft and advice.order.reference is not None:
        label = str(knowledge.repeat_card["suggestion"])
        suggestions = [
            Suggestion(
                label=label,
                uuid=card_uuid(hook_instance, f"{name}/remove"),
                actions=[
                    Action(
                        type="delete",
                        description=f"{label}: {advice.order.label or advice.order.name}",
                        resource_id=advice.order.reference,
                    )
                ],
            )
        ]
    reasons = knowledge.override_reasons["medication" if advice.kind == "medication" else advice.kind]
    return Card(
        uuid=card_uuid(hook_instance, name),
        summary=shorten(advice.summary),
        detail=_detail(advice),
        indicator="warning" if advice.indicator == "warning" else "info",
        source=Source(
            label=SOURCE_LABEL,
            url=SOURCE_URL,
            topic=Coding(system=TOPIC_SYSTEM, code=topic, display=TOPIC_DISPLAY[topic]),
        ),
        suggestions=suggestions,
        selection_behavior="at-most-one" if suggestions else None,
        override_reasons=[OverrideReason(system=OVERRIDE_SYSTEM, code=code, display=text) for code, text in reasons],
        links=_links(kb, advice.sources),
        extension=_extension(advice, check),
    )


def render_order_cards(
    check: OrderCheck, kb: KnowledgeBase, knowledge: OrderKnowledge, hook_instance: uuid.UUID
) -> list[Card]:
    """One card per draft order with advice, warnings first."""
    ordered = sorted(enumerate(check.advice), key=lambda item: (item[1].indicator != "warning", item[0]))
    return [order_card(advice, index, check, kb, knowledge, hook_instance) for index, advice in ordered]
