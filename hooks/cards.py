"""Clinical statements to CDS Hooks cards: subtype, workup and differentials (at most three).

What a card says is decided in `calcinosis.statements`; this module only lays it out: `summary`,
markdown `detail` within the detail budget, suggestions that create draft orders, links to the
sources, and an `extension` with the full evidence (every value, rule, formula and input) for the
preview page and for machines. `critical` is never used. Every piece of text is escaped, because
the CDS Hooks sandbox renders raw HTML inside markdown.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

from calcinosis.assessment import Assessment, Evidence, WorkupGap
from calcinosis.knowledge_base import KnowledgeBase
from calcinosis.statements import (
    DEFAULT_WORKUP_CAP,
    DETAIL_BUDGET,
    EVIDENCE_LINE_LIMIT,
    CardStatements,
    Statement,
    card_statements,
    suspected_calciphylaxis,
)
from calcinosis.statements import (
    shorten as shorten,  # re-exported: the order-sign cards cut their text the same way
)
from hooks.models import Action, Card, Coding, Link, OverrideReason, Source, Suggestion

EXTENSION_KEY = "org.calcinosis-cds"
TOPIC_SYSTEM = "urn:calcinosis-cds:card-topic"
OVERRIDE_SYSTEM = "urn:calcinosis-cds:override-reason"
CARD_NAMESPACE = uuid.UUID("6f1c3a52-3d0e-4c55-9a53-2b8f0d7f4c11")
SOURCE_LABEL = "calcinosis-cds knowledge base"
SOURCE_URL = "https://www.ncbi.nlm.nih.gov/books/NBK448127/"
OVERRIDE_REASONS = (
    ("already-addressed", "Already evaluated or ordered"),
    ("not-relevant", "Not relevant to this patient now"),
    ("disagree-with-evidence", "Disagree with the evidence shown"),
    ("record-data-incorrect", "Record data shown is incorrect"),
)


_MARKDOWN_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "`": "'",
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
    }
)
"""One pass, each character replaced at most once (so an entity's `&` is not escaped again)."""


def md(text: object) -> str:
    """Text from the record made safe for GitHub-flavoured markdown in a table cell: no HTML,
    no table breaks, no emphasis surprises."""
    return " ".join(str(text).translate(_MARKDOWN_ESCAPES).split())


def prune(value: Any) -> Any:
    """Drop None, empty strings, lists and objects recursively: the spec forbids empty values,
    and the extension is built from optional parts."""
    if isinstance(value, dict):
        pruned = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        items = [prune(v) for v in value]
        return [v for v in items if v not in (None, "", [], {})]
    return value


def prune_object(value: dict[str, Any]) -> dict[str, Any]:
    """`prune` for an object, typed as one."""
    pruned: dict[str, Any] = prune(value)
    return pruned


TOPIC_SUFFIX = {"subtype": "01", "workup": "02", "differentials": "03", "order-check": "04", "repeat-lab": "05"}


def card_uuid(hook_instance: uuid.UUID, name: str) -> str:
    """Stable per hook call and card, so a retried call yields the same ids (feedback stays
    idempotent) and two calls never share one.

    The last two hex digits carry the card topic (01 subtype, 02 workup, 03 differentials), so the
    feedback report can tell which card an outcome is about without storing every card issued:
    stateless and the same on every replica. The version and variant bits are untouched.
    """
    digits = uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}/{name}").hex
    return str(uuid.UUID(digits[:-2] + TOPIC_SUFFIX[name.split("/")[0]]))


def order_id(hook_instance: uuid.UUID, item_id: str) -> str:
    """The id of a suggested draft order: validators require one on a created resource, and the
    EHR may reference it; stable per call and item, like the card ids."""
    return str(uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}/order/{item_id}"))


def _evidence_data(evidence: Evidence) -> dict[str, Any]:
    """One record entry for the extension: what it is and as reported (no record ids: the EHR
    sees the extension too)."""
    return prune_object(
        {
            "code": evidence.code,
            "display": evidence.display,
            "kind": evidence.kind,
            "reported": evidence.reported,
            "value": evidence.value,
            "unit": evidence.unit,
            "date": evidence.date.isoformat() if evidence.date else None,
            "labRange": evidence.reported_range,
            "range": evidence.reference_range,
            "interpretation": evidence.interpretation,
        }
    )


def _source_links(kb: KnowledgeBase, keys: list[str] | tuple[str, ...]) -> list[Link] | None:
    """Free sources the card cites, each labelled with its complete citation."""
    links: list[Link] = []
    seen: set[str] = set()
    for key in keys:
        source = kb.sources.get(key)
        if source is None or not source.link or source.url is None or source.url in seen:
            continue
        seen.add(source.url)
        links.append(Link(label=source.citation, url=source.url, type="absolute"))
        if len(links) == 5:
            break
    return links or None


def _overrides() -> list[OverrideReason]:
    return [OverrideReason(system=OVERRIDE_SYSTEM, code=code, display=display) for code, display in OVERRIDE_REASONS]


def _source(topic: str, display: str) -> Source:
    return Source(label=SOURCE_LABEL, url=SOURCE_URL, topic=Coding(system=TOPIC_SYSTEM, code=topic, display=display))


def _bounded(line: str, limit: int) -> str:
    return line if len(line) <= limit else shorten(line, limit)


def detail_markdown(statement: Statement, budget: int = DETAIL_BUDGET, decision_note: bool = False) -> str:
    """The statement as markdown: a short first screen (headline, up to three evidence lines, what
    is missing, the next step, the caution), then further lines while the detail stays within
    `budget` characters. Record text is escaped, because some EHRs render HTML in markdown."""
    head = f"**{md(statement.headline)}**" + (" (decision support, not a diagnosis)" if decision_note else "")
    lines = [head]
    lines += [f"- {md(_bounded(line, EVIDENCE_LINE_LIMIT))}" for line in statement.evidence]
    tail = [md(text) for text in (statement.missing, statement.next_step) if text]
    if tail:
        lines += ["", "  \n".join(tail)]
    if statement.caution:
        lines += ["", f"**Caution**: {md(statement.caution)}"]
    text = "\n".join(lines)
    for extra in statement.further:
        candidate = text + "\n\n" + md(extra)
        if len(candidate) > budget:
            break
        text = candidate
    return text if len(text) <= budget else shorten(text, budget)


# ----- subtype card -----------------------------------------------------------------------------


def subtype_summary(assessment: Assessment, kb: KnowledgeBase | None = None) -> str:
    """The subtype card's summary (under 140 characters), as `calcinosis.statements` words it."""
    from calcinosis.knowledge_base import default_knowledge

    return card_statements(assessment, kb or default_knowledge()).subtype.summary


def assessment_extension(assessment: Assessment) -> dict[str, Any]:
    """The full evidence behind the cards: every subtype with its rules and the record entries
    they read, derived values with formulas and cut-offs, risk factors, distribution, and what
    could not be used (counts and reasons only: no other record's ids)."""
    risk = assessment.calciphylaxis_risk
    quality = assessment.data_quality

    def factor(f: Any) -> dict[str, Any]:
        return prune_object({"label": f.label, "note": f.note, "evidence": [_evidence_data(e) for e in f.evidence]})

    return prune_object(
        {
            "knowledgeVersion": assessment.knowledge_version,
            "entry": [_evidence_data(e) for e in assessment.entry],
            "subtypes": [
                {
                    "subtype": s.subtype.value,
                    "likelihood": s.likelihood.value,
                    "findings": [
                        {
                            "statement": f.statement,
                            "supports": f.supports,
                            "evidence": [_evidence_data(e) for e in f.evidence],
                        }
                        for f in s.findings
                    ],
                    "missing": list(s.missing),
                }
                for s in assessment.subtypes
            ],
            "derived": [
                {
                    "name": d.name,
                    "value": d.value,
                    "unit": d.unit,
                    "category": d.category,
                    "formula": d.formula,
                    "date": d.date.isoformat() if d.date else None,
                    "note": d.note,
                    "inputs": [_evidence_data(e) for e in d.inputs],
                    "comparisons": [
                        {
                            "limit": c.limit,
                            "unit": c.unit,
                            "basis": c.basis,
                            "outcome": c.outcome,
                        }
                        for c in d.comparisons
                    ],
                }
                for d in assessment.derived
            ],
            "distribution": {"label": assessment.distribution.label.value, "basis": assessment.distribution.basis},
            "calciphylaxisRisk": {
                "pattern": risk.pattern,
                "suspected": suspected_calciphylaxis(assessment),
                "major": [factor(f) for f in risk.major],
                "minor": [factor(f) for f in risk.minor],
                "additional": [factor(f) for f in risk.additional],
            },
            "dataQuality": {
                "resourcesSkipped": quality.resources_skipped,
                "valuesNotUsed": len(quality.issues),
            },
        }
    )


def subtype_card(
    assessment: Assessment,
    kb: KnowledgeBase,
    hook_instance: uuid.UUID,
    statements: CardStatements | None = None,
) -> Card:
    """The subtype card: the most urgent pattern first, the full evidence in the extension."""
    statements = statements or card_statements(assessment, kb)
    statement = statements.subtype
    return Card(
        uuid=card_uuid(hook_instance, "subtype"),
        summary=statement.summary,
        detail=detail_markdown(statement, decision_note=True),
        indicator="warning" if statement.indicator == "warning" else "info",
        source=_source("subtype", "Calcinosis subtype"),
        override_reasons=_overrides(),
        links=_source_links(kb, statement.sources),
        extension={f"{EXTENSION_KEY}.assessment": assessment_extension(assessment)},
    )


# ----- workup card ------------------------------------------------------------------------------


_VALIDATED_ORDERS: dict[str, dict[str, Any]] = {}


def service_request(gap: WorkupGap, patient_id: str) -> dict[str, Any]:
    """A draft, proposed ServiceRequest for one gap, validated as FHIR R4 before it is sent.

    It carries the code (where a confirmed one exists) and the test's name, and the reason; no
    note, because a note is written into the patient's record with the order and the provenance of
    a code belongs in the project's documentation, not there. Everything but the subject comes from
    the catalogue, so each item's order is validated once per process and copied per request.
    """
    template = _VALIDATED_ORDERS.get(gap.item_id + "|" + gap.reason)
    if template is None:
        code: dict[str, Any] = {"text": gap.label}
        if gap.code is not None:
            code["coding"] = [{"system": gap.code.system, "code": gap.code.code, "display": gap.code.display}]
        template = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "code": code,
            "subject": {"reference": "Patient/template"},
            "reasonCode": [{"text": shorten(gap.reason, 200)}],
        }
        ServiceRequest.model_validate(template)
        if len(_VALIDATED_ORDERS) < 1000:  # reasons can quote a unit from the record: stay bounded
            _VALIDATED_ORDERS[gap.item_id + "|" + gap.reason] = template
    resource = dict(template)
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    return resource


def warm_up_orders() -> None:
    """Build the ServiceRequest validator at start-up, with the elements `service_request` fills:
    fhir.resources builds the nested models on first use, which would otherwise fall on the first
    request that suggests a workup."""
    concept = {"coding": [{"system": "http://loinc.org", "code": "w", "display": "w"}], "text": "w"}
    ServiceRequest.model_validate(
        {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "code": concept,
            "subject": {"reference": "Patient/w"},
            "reasonCode": [{"text": "w"}],
        }
    )


def suggestion_label(gap: WorkupGap) -> str:
    """ "Order 25-hydroxyvitamin D": the test's name, cut at a word boundary if ever too long."""
    return shorten(f"Order {gap.label}", 80)


def workup_summary(gaps: tuple[WorkupGap, ...]) -> str:
    """The summary of a workup card for these suggestions (kept for callers of the old API)."""
    names = ", ".join(g.label for g in gaps)
    return shorten(f"Calcinosis workup: {len(gaps)} tests suggested ({names})")


def workup_card(
    assessment: Assessment,
    kb: KnowledgeBase,
    hook_instance: uuid.UUID,
    patient_id: str,
    statements: CardStatements | None = None,
) -> Card | None:
    """One button per ranked suggestion (a draft ServiceRequest each); the rest listed without."""
    statements = statements or card_statements(assessment, kb)
    workup = statements.workup
    if workup is None:
        return None
    suggestions = [
        Suggestion(
            label=suggestion_label(gap),
            uuid=card_uuid(hook_instance, f"workup/{gap.item_id}"),
            actions=[
                Action(
                    type="create",
                    description=f"Propose {gap.label} (draft order)",
                    resource=service_request(gap, patient_id) | {"id": order_id(hook_instance, gap.item_id)},
                )
            ],
        )
        for gap in workup.orders
    ]
    return Card(
        uuid=card_uuid(hook_instance, "workup"),
        summary=workup.statement.summary,
        detail=detail_markdown(workup.statement),
        indicator="info",
        source=_source("workup", "Calcinosis workup"),
        suggestions=suggestions,
        selection_behavior="any",
        override_reasons=_overrides(),
        links=_source_links(kb, workup.statement.sources),
        extension={
            f"{EXTENSION_KEY}.workup": prune(
                [
                    {
                        "item": g.item_id,
                        "label": g.label,
                        "suggested": g in workup.orders,
                        "code": g.code.code if g.code else None,
                        "codeSystem": g.code.system if g.code else None,
                        "lookbackDays": g.lookback_days,
                        "reason": g.reason,
                        "lastResult": _evidence_data(g.last_result) if g.last_result else None,
                    }
                    for g in workup.orders + workup.later
                ]
                + [
                    {
                        "item": p.item_id,
                        "label": p.label,
                        "suggested": False,
                        "orderedOn": p.ordered.date().isoformat(),
                        "resultPending": True,
                    }
                    for p in assessment.pending_workup
                ]
            )
        },
    )


# ----- differentials card -----------------------------------------------------------------------


def differentials_card(
    assessment: Assessment,
    kb: KnowledgeBase,
    hook_instance: uuid.UUID,
    statements: CardStatements | None = None,
) -> Card | None:
    """Only when this record raises a differential, or the subtype cannot be classified."""
    statements = statements or card_statements(assessment, kb)
    statement = statements.differentials
    if statement is None:
        return None
    return Card(
        uuid=card_uuid(hook_instance, "differentials"),
        summary=statement.summary,
        detail=detail_markdown(statement),
        indicator="info",
        source=_source("differentials", "Calcinosis differential diagnoses"),
        override_reasons=_overrides(),
        links=_source_links(kb, statement.sources),
        extension={
            f"{EXTENSION_KEY}.differentials": [
                prune(
                    {
                        "code": d.differential_id,
                        "consideration": d.consideration,
                        "raisedBy": [f.statement for f in d.raised_by],
                        "loweredBy": [f.statement for f in d.lowered_by],
                        "separatingTest": d.separating_test,
                    }
                )
                for d in statements.differentials_shown
            ]
        },
    )


def unreadable_card(kb: KnowledgeBase, hook_instance: uuid.UUID) -> Card:
    """The answer when an entry naming calcinosis or calciphylaxis could not be read (malformed or
    failing FHIR validation): saying so, rather than falling silent as if nothing were documented.
    No resource ids or validation details reach the clinician; they are in the service's log."""
    return Card(
        uuid=card_uuid(hook_instance, "subtype"),
        summary="Calcinosis may be documented, but its problem-list entry could not be read",
        detail=(
            "A problem-list entry naming calcinosis cutis or calciphylaxis could not be read by the "
            "decision support service, so no subtype, workup or differential suggestions were made. "
            "Check the entry in the record; suggestions follow once it can be read."
        ),
        indicator="info",
        source=_source("subtype", "Calcinosis subtype"),
        override_reasons=_overrides(),
    )


def render_cards(
    assessment: Assessment | None,
    kb: KnowledgeBase,
    hook_instance: uuid.UUID,
    patient_id: str,
    workup_cap: int = DEFAULT_WORKUP_CAP,
) -> list[Card]:
    """Up to three cards; none when calcinosis is not documented."""
    if assessment is None:
        return []
    statements = card_statements(assessment, kb, workup_cap)
    cards = [subtype_card(assessment, kb, hook_instance, statements)]
    for card in (
        workup_card(assessment, kb, hook_instance, patient_id, statements),
        differentials_card(assessment, kb, hook_instance, statements),
    ):
        if card is not None:
            cards.append(card)
    return cards
