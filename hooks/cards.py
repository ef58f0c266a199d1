"""Assessment to CDS Hooks cards: subtype, workup and differentials (at most three).

Readable and machine-readable at once: `summary` and markdown `detail` for the clinician, and an
`extension` with the structured assessment for the EHR. Wording follows the knowledge base's
section 11: "consider", "pattern consistent with", never "diagnosis of"; `critical` is never used.
Every piece of text that comes from the patient's record is escaped, because the CDS Hooks sandbox
renders raw HTML inside markdown.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

from calcinosis.assessment import (
    Assessment,
    CalciphylaxisStatus,
    DerivedValue,
    DifferentialAssessment,
    Evidence,
    Likelihood,
    Subtype,
    SubtypeAssessment,
    WorkupGap,
)
from calcinosis.knowledge_base import KnowledgeBase
from hooks.models import SUMMARY_MAX, Action, Card, Coding, Link, OverrideReason, Source, Suggestion

EXTENSION_KEY = "org.calcinosis-cds"
TOPIC_SYSTEM = "urn:calcinosis-cds:card-topic"
OVERRIDE_SYSTEM = "urn:calcinosis-cds:override-reason"
CARD_NAMESPACE = uuid.UUID("6f1c3a52-3d0e-4c55-9a53-2b8f0d7f4c11")
SOURCE_LABEL = "calcinosis-cds knowledge base"
SOURCE_URL = "https://www.ncbi.nlm.nih.gov/books/NBK448127/"
SUBTYPE_LABELS = {
    Subtype.DYSTROPHIC: "dystrophic",
    Subtype.METASTATIC: "metastatic",
    Subtype.IDIOPATHIC: "idiopathic",
    Subtype.IATROGENIC: "iatrogenic",
    Subtype.CALCIPHYLAXIS: "calciphylaxis",
}
RANK = {Likelihood.LIKELY: 0, Likelihood.POSSIBLE: 1, Likelihood.UNLIKELY: 2, Likelihood.UNDETERMINED: 3}
PRIORITY = (Subtype.CALCIPHYLAXIS, Subtype.METASTATIC, Subtype.IATROGENIC, Subtype.DYSTROPHIC, Subtype.IDIOPATHIC)
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


def shorten(text: str, limit: int = SUMMARY_MAX) -> str:
    """Cut at a word boundary to fit the summary limit."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:-")
    return cut + "…"


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


def _date(value: datetime | None) -> str:
    return value.date().isoformat() if value is not None else "date not recorded"


def _evidence_line(evidence: Evidence) -> str:
    parts = [md(evidence.display or evidence.code or evidence.reference)]
    if evidence.reported:
        parts.append(md(evidence.reported))
    parts.append(_date(evidence.date))
    if evidence.reference_range:
        parts.append(f"range {md(evidence.reference_range)}")
    if evidence.interpretation:
        parts.append(f"flag {md(evidence.interpretation)}")
    if evidence.note:
        parts.append(md(evidence.note))
    return ", ".join(parts) + f" ({md(evidence.reference)})"


def _source_links(kb: KnowledgeBase, keys: list[str]) -> list[Link] | None:
    links: list[Link] = []
    seen: set[str] = set()
    for key in keys:
        source = kb.sources.get(key)
        if source is None or not source.link or source.url is None or source.url in seen:
            continue
        seen.add(source.url)
        links.append(Link(label=source.citation[:120], url=source.url, type="absolute"))
        if len(links) == 5:
            break
    return links or None


def _overrides() -> list[OverrideReason]:
    return [OverrideReason(system=OVERRIDE_SYSTEM, code=code, display=display) for code, display in OVERRIDE_REASONS]


def _source(topic: str, display: str) -> Source:
    return Source(label=SOURCE_LABEL, url=SOURCE_URL, topic=Coding(system=TOPIC_SYSTEM, code=topic, display=display))


# ----- subtype card -----------------------------------------------------------------------------


def _headline(assessment: Assessment) -> tuple[SubtypeAssessment | None, str]:
    signal = assessment.calciphylaxis
    if signal is not None and signal.status in (CalciphylaxisStatus.SUSPECTED, CalciphylaxisStatus.RECORDED):
        # Suspected calciphylaxis (lesions, or coded) outranks every other subtype (11.4).
        return assessment.subtype(Subtype.CALCIPHYLAXIS), ""
    ranked = sorted(
        (s for s in assessment.subtypes if s.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE)),
        key=lambda s: (RANK[s.likelihood], PRIORITY.index(s.subtype)),
    )
    if not ranked:
        missing = next((s.missing for s in assessment.subtypes if s.missing), ())
        reason = f"missing {missing[0]}" if missing else "data missing"
        return None, f"Calcinosis cutis: cannot classify the subtype yet ({reason})"
    return ranked[0], ""


def _why(subtype: SubtypeAssessment, assessment: Assessment) -> str:
    caxp = assessment.derived_value("calcium-phosphate-product")
    rules = set(subtype.rule_ids)
    if subtype.subtype is Subtype.METASTATIC:
        if "CC-MET-CAXP" in rules and caxp is not None:
            return f"Ca x P {caxp.value:g} mg²/dL²"
        first = next((f for f in subtype.findings if f.supports), None)
        return first.statement if first else ""
    if subtype.subtype is Subtype.CALCIPHYLAXIS:
        signal = assessment.calciphylaxis
        suspected = signal is not None and signal.status is CalciphylaxisStatus.SUSPECTED
        if "CC-CPX-CODED" in rules:
            return "suspected on the problem list" if suspected else "recorded on the problem list"
        if signal is not None and signal.lesions:
            lesion = signal.lesions[0].display or "ischemic skin lesion"
            setting = " without advanced kidney disease" if signal.setting == "non-uremic" else ""
            return f"{lesion}{setting}"
        factors = [f.label for f in assessment.calciphylaxis_risk.major][:2]
        return "; ".join(factors) if factors else "advanced kidney disease"
    first = next((f for f in subtype.findings if f.supports and f.rule_id not in ("CC-DYS-LABS",)), None)
    if subtype.subtype is Subtype.DYSTROPHIC and first is not None and first.evidence:
        return f"normal Ca/P with {first.evidence[0].display or 'a tissue-damaging condition'}"
    return first.statement if first else ""


def subtype_summary(assessment: Assessment) -> str:
    """One specific sentence under 140 characters."""
    top, fallback = _headline(assessment)
    if top is None:
        return shorten(fallback)
    if assessment.no_cause_recorded:
        return shorten("Calcinosis cutis with normal calcium and phosphate: no underlying cause is on record")
    if assessment.suspected_only and top.subtype is not Subtype.CALCIPHYLAXIS:
        name = SUBTYPE_LABELS[top.subtype]
        return shorten(f"Suspected calcinosis cutis: if confirmed, consider {name} ({_why(top, assessment)})")
    name = SUBTYPE_LABELS[top.subtype]
    why = _why(top, assessment)
    if top.subtype is Subtype.CALCIPHYLAXIS:
        signal = assessment.calciphylaxis
        recorded = signal is not None and signal.status is CalciphylaxisStatus.RECORDED
        lead = "Calciphylaxis" if recorded else "Consider calciphylaxis"
        text = f"{lead}: {why}" if why else lead
    elif top.likelihood is Likelihood.LIKELY:
        text = f"Pattern suggests {name} calcinosis: {why}" if why else f"Pattern suggests {name} calcinosis"
    else:
        text = f"Consider {name} calcinosis: {why}" if why else f"Consider {name} calcinosis"
    others = [
        SUBTYPE_LABELS[s.subtype] for s in assessment.subtypes if s is not top and s.likelihood is Likelihood.LIKELY
    ]
    if others:
        text += f" (also {', '.join(others)})"
    return shorten(" ".join(text.split()))


def _derived_lines(derived: DerivedValue) -> list[str]:
    value = f"{derived.value:g} {derived.unit or ''}".strip() if derived.value is not None else ""
    label = derived.name.replace("-", " ")
    head = f"- **{label}**: {md(value)}"
    if derived.category:
        head += f" ({md(derived.category)})"
    head += f" on {_date(derived.date)}. {md(derived.formula)}."
    lines = [head]
    for comparison in derived.comparisons:
        lines.append(
            f"  - {md(comparison.outcome)} {comparison.limit:g} {md(comparison.unit)} ({md(comparison.basis)})"
        )
    for evidence in derived.inputs:
        lines.append(f"  - input: {_evidence_line(evidence)}")
    if derived.note:
        lines.append(f"  - note: {md(derived.note)}")
    return lines


def subtype_card(assessment: Assessment, kb: KnowledgeBase, hook_instance: uuid.UUID) -> Card:
    """The subtype card with the evidence, derived values and the structured assessment."""
    calciphylaxis = assessment.subtype(Subtype.CALCIPHYLAXIS).likelihood
    warning = calciphylaxis in (Likelihood.LIKELY, Likelihood.POSSIBLE) or assessment.severe_hypercalcemia
    lines = ["**Suggested subtype of calcinosis cutis** (decision support, not a diagnosis)", ""]
    lines += ["| Subtype | Likelihood | Why |", "|---|---|---|"]
    for subtype in sorted(assessment.subtypes, key=lambda s: (RANK[s.likelihood], PRIORITY.index(s.subtype))):
        reasons = "; ".join(md(f.statement) for f in subtype.findings[:3]) or "-"
        if subtype.missing:
            reasons += f" (missing: {md(', '.join(subtype.missing))})"
        lines.append(f"| {SUBTYPE_LABELS[subtype.subtype]} | {subtype.likelihood.value} | {reasons} |")
    lines += ["", "**Documented calcinosis**"]
    lines += [f"- {_evidence_line(e)}" for e in assessment.entry]
    if assessment.derived:
        lines += ["", "**Values used**"]
        for derived in assessment.derived:
            lines += _derived_lines(derived)
    risk = assessment.calciphylaxis_risk
    # Only where they change what the clinician may do: dialysis, CKD G4-G5, or calciphylaxis
    # suspected or recorded (clinical-knowledge.md 11.4).
    if risk.applicable and (risk.major or risk.minor or risk.additional):
        pattern = {
            "met": "consensus risk pattern met",
            "not-met": "consensus risk pattern not met",
            "not-applicable": "scored for dialysis patients only",
        }[risk.pattern]
        lines += ["", f"**Calciphylaxis risk factors** ({pattern})"]
        for factor in risk.major:
            lines.append(f"- major: {md(factor.label)}" + (f" ({md(factor.note)})" if factor.note else ""))
        for factor in risk.minor:
            lines.append(f"- minor: {md(factor.label)}" + (f" ({md(factor.note)})" if factor.note else ""))
        for factor in risk.additional:
            lines.append(f"- also: {md(factor.label)}" + (f" ({md(factor.note)})" if factor.note else ""))
    lines += ["", f"**Distribution**: {assessment.distribution.label.value} ({md(assessment.distribution.basis)})"]
    quality = assessment.data_quality
    if quality.issues:
        lines += ["", f"**Data not used** ({len(quality.issues)}):"]
        lines += [f"- {md(issue)}" for issue in quality.issues[:5]]
    if calciphylaxis in (Likelihood.LIKELY, Likelihood.POSSIBLE):
        lines += [
            "",
            "**Caution**: skin biopsy is not suggested while calciphylaxis is suspected; it can trigger ulceration and infection.",
        ]
    lines += ["", f"_Knowledge base {kb.version}; thresholds tagged GK are unconfirmed and await clinician review._"]
    sources = [key for s in assessment.subtypes for f in s.findings for key in f.sources]
    extension = {
        f"{EXTENSION_KEY}.assessment": {
            "knowledgeVersion": assessment.knowledge_version,
            "subtypes": [
                {
                    "subtype": s.subtype.value,
                    "likelihood": s.likelihood.value,
                    "rules": list(s.rule_ids),
                    **({"missing": list(s.missing)} if s.missing else {}),
                }
                for s in assessment.subtypes
            ],
            "derived": [
                {
                    "name": d.name,
                    **({"value": d.value} if d.value is not None else {}),
                    **({"unit": d.unit} if d.unit else {}),
                    **({"category": d.category} if d.category else {}),
                    "inputs": [e.reference for e in d.inputs],
                    "comparisons": [
                        {"threshold": c.threshold, "limit": c.limit, "unit": c.unit, "outcome": c.outcome}
                        for c in d.comparisons
                    ],
                }
                for d in assessment.derived
            ],
            "distribution": assessment.distribution.label.value,
            "calciphylaxisRisk": {
                "pattern": assessment.calciphylaxis_risk.pattern,
                "major": [f.factor_id for f in risk.major],
                "minor": [f.factor_id for f in risk.minor],
            },
            "resourcesSkipped": quality.resources_skipped,
        }
    }
    return Card(
        uuid=card_uuid(hook_instance, "subtype"),
        summary=subtype_summary(assessment),
        detail="\n".join(lines),
        indicator="warning" if warning else "info",
        source=_source("subtype", "Calcinosis subtype"),
        override_reasons=_overrides(),
        links=_source_links(kb, sources),
        extension=prune(extension),
    )


# ----- workup card ------------------------------------------------------------------------------


_VALIDATED_ORDERS: dict[str, dict[str, Any]] = {}


def service_request(gap: WorkupGap, patient_id: str) -> dict[str, Any]:
    """A draft, proposed ServiceRequest for one gap, validated as FHIR R4 before it is sent.

    Everything but the subject comes from the catalogue, so each item's order is validated once
    per process and copied per request; the subject is a reference to the request's patientId,
    which the request model has already checked as a FHIR id.
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
            "reasonCode": [{"text": gap.reason[:200]}],
            "note": [
                {
                    "text": "Proposed by calcinosis-cds (calcinosis cutis workup)."
                    + (f" {gap.code_note}." if gap.code_note else "")
                }
            ],
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
            "note": [{"text": "w"}],
        }
    )


def workup_summary(gaps: tuple[WorkupGap, ...]) -> str:
    """E.g. 'Calcinosis workup: 4 items not on file (PTH, phosphate, ...)'."""
    names = ", ".join(g.label for g in gaps)
    noun = "item" if len(gaps) == 1 else "items"
    return shorten(f"Calcinosis workup: consider {len(gaps)} {noun} not on file ({names})")


def workup_card(assessment: Assessment, kb: KnowledgeBase, hook_instance: uuid.UUID, patient_id: str) -> Card | None:
    """One suggestion per missing item, each a create of a draft ServiceRequest."""
    if not assessment.workup:
        return None
    suggestions: list[Suggestion] = []
    lines = [
        "**Workup not found in its look-back window**",
        "",
        "| Item | Why | Window | Last result |",
        "|---|---|---|---|",
    ]
    for gap in assessment.workup:
        window = f"{gap.lookback_days} days" if gap.lookback_days else "ever"
        last = _evidence_line(gap.last_result) if gap.last_result else "none on file"
        code = f" (LOINC {gap.code.code})" if gap.code is not None and gap.code.system == "http://loinc.org" else ""
        if gap.code is None:
            code = " (no confirmed code: order by name)"
        lines.append(f"| {md(gap.label)}{code} | {md(gap.reason)} | {window} | {last} |")
        suggestions.append(
            Suggestion(
                label=f"Order {gap.label}"[:80],
                uuid=card_uuid(hook_instance, f"workup/{gap.item_id}"),
                actions=[
                    Action(
                        type="create",
                        description=f"Propose {gap.label} (draft order)",
                        resource=service_request(gap, patient_id) | {"id": order_id(hook_instance, gap.item_id)},
                    )
                ],
            )
        )
    for withheld in assessment.suppressed_workup:
        lines += ["", f"**Not suggested**: {md(withheld.label)}: {md(withheld.reason)}"]
    sources = [key for gap in assessment.workup for key in gap.sources]
    return Card(
        uuid=card_uuid(hook_instance, "workup"),
        summary=workup_summary(assessment.workup),
        detail="\n".join(lines),
        indicator="info",
        source=_source("workup", "Calcinosis workup"),
        suggestions=suggestions,
        selection_behavior="any",
        override_reasons=_overrides(),
        links=_source_links(kb, sources),
        extension={
            f"{EXTENSION_KEY}.workup": [
                {"item": g.item_id, **({"code": g.code.code} if g.code else {})} for g in assessment.workup
            ]
        },
    )


# ----- differentials card -----------------------------------------------------------------------


def differentials_summary(differentials: tuple[DifferentialAssessment, ...]) -> str:
    """E.g. 'Differentials to consider: gouty tophus (raised by the record), xanthoma, ...'."""
    parts = []
    for differential in differentials:
        label = differential.label.split(" (")[0].split(" /")[0].lower()
        parts.append(f"{label} (raised)" if differential.raised_by else label)
    return shorten("Differentials to consider: " + ", ".join(parts))


def differentials_card(assessment: Assessment, kb: KnowledgeBase, hook_instance: uuid.UUID) -> Card | None:
    """Each differential, what raises or lowers it here, and the test that separates it."""
    if not assessment.differentials:
        return None
    lines = [
        "**Differential diagnoses worth excluding**",
        "",
        "| Differential | In this record | Separating test |",
        "|---|---|---|",
    ]
    for differential in assessment.differentials:
        notes = [f"raised: {md(f.statement)}" for f in differential.raised_by] + [
            f"lowered: {md(f.statement)}" for f in differential.lowered_by
        ]
        lines.append(
            f"| {md(differential.label)} | {'; '.join(notes) or 'nothing recorded for or against'} | {md(differential.separating_test)} |"
        )
    sources = [key for d in assessment.differentials for key in d.sources]
    return Card(
        uuid=card_uuid(hook_instance, "differentials"),
        summary=differentials_summary(assessment.differentials),
        detail="\n".join(lines),
        indicator="info",
        source=_source("differentials", "Calcinosis differential diagnoses"),
        override_reasons=_overrides(),
        links=_source_links(kb, sources),
        extension={
            f"{EXTENSION_KEY}.differentials": [
                {
                    "code": d.differential_id,
                    "consideration": d.consideration,
                    **({"raisedBy": [f.rule_id for f in d.raised_by]} if d.raised_by else {}),
                    **({"loweredBy": [f.rule_id for f in d.lowered_by]} if d.lowered_by else {}),
                }
                for d in assessment.differentials
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
    assessment: Assessment | None, kb: KnowledgeBase, hook_instance: uuid.UUID, patient_id: str
) -> list[Card]:
    """Up to three cards; none when calcinosis is not documented."""
    if assessment is None:
        return []
    cards = [subtype_card(assessment, kb, hook_instance)]
    for card in (
        workup_card(assessment, kb, hook_instance, patient_id),
        differentials_card(assessment, kb, hook_instance),
    ):
        if card is not None:
            cards.append(card)
    return cards
