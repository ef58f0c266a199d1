"""The one entry point of the clinical core: findings in, assessment (or silence) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from calcinosis.assessment import Assessment, DataQuality, Evidence, Likelihood, Subtype, SubtypeAssessment
from calcinosis.causes import supported_causes
from calcinosis.context import PatientContext, condition_evidence
from calcinosis.differentials import assess_differentials
from calcinosis.distribution import assess_distribution
from calcinosis.findings import ClinicalConcept, PatientFindings
from calcinosis.knowledge_base import KnowledgeBase, default_knowledge
from calcinosis.risk import assess_risk
from calcinosis.subtypes import (
    assess_calciphylaxis,
    assess_dystrophic,
    assess_iatrogenic,
    assess_idiopathic,
    assess_metastatic,
    idiopathic_entities,
)
from calcinosis.workup import OrderedTest, workup_gaps

ENTRY_CONCEPTS = (
    ClinicalConcept.CALCINOSIS_CUTIS,
    ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA,
    ClinicalConcept.CALCINOSIS_UNIVERSALIS,
    ClinicalConcept.CALCIPHYLAXIS,
)


def entry_evidence(findings: PatientFindings) -> tuple[Evidence, ...]:
    """The active conditions that document calcinosis cutis or calciphylaxis (section 4).

    Resolved or inactive entries do not open an assessment: the service stays silent for a
    problem that is no longer current.
    """
    return tuple(condition_evidence(c) for c in findings.conditions if c.concept in ENTRY_CONCEPTS and c.active)


def _no_cause_recorded(subtypes: dict[Subtype, SubtypeAssessment]) -> bool:
    """Normal calcium and phosphate and nothing on record that explains the lesion: dystrophic
    (an uncoded injury) and idiopathic (a diagnosis of exclusion) both stay possible, and neither
    is the headline (issue 12 item 8): the statement is that no cause is on record."""
    suspected = (Likelihood.LIKELY, Likelihood.POSSIBLE)
    dystrophic = subtypes[Subtype.DYSTROPHIC]
    return (
        subtypes[Subtype.METASTATIC].likelihood is Likelihood.UNLIKELY
        and dystrophic.likelihood is Likelihood.POSSIBLE
        and "CC-DYS-NOCAUSE" in dystrophic.rule_ids
        and "CC-DYS-CAUSE" not in dystrophic.rule_ids
        and subtypes[Subtype.IATROGENIC].likelihood not in suspected
        and subtypes[Subtype.CALCIPHYLAXIS].likelihood not in suspected
    )


def assess(
    findings: PatientFindings, knowledge: KnowledgeBase | None = None, orders: Sequence[OrderedTest] = ()
) -> Assessment | None:
    """Assess one patient. Returns None when calcinosis is not documented (the silent case).
    `orders` are the lab tests ordered and not yet resulted: the workup does not suggest them."""
    entry = entry_evidence(findings)
    if not entry:
        return None
    kb = knowledge or default_knowledge()
    ctx = PatientContext(findings, kb)
    risk = assess_risk(ctx)
    metastatic = assess_metastatic(ctx)
    iatrogenic = assess_iatrogenic(ctx)
    dystrophic = assess_dystrophic(ctx, metastatic, iatrogenic)
    idiopathic = assess_idiopathic(ctx, dystrophic, metastatic, iatrogenic)
    calciphylaxis, signal = assess_calciphylaxis(ctx, risk)
    if signal.risk_section and not risk.applicable:
        risk = replace(risk, applicable=True)
    subtypes = {
        Subtype.DYSTROPHIC: dystrophic,
        Subtype.METASTATIC: metastatic,
        Subtype.IDIOPATHIC: idiopathic,
        Subtype.IATROGENIC: iatrogenic,
        Subtype.CALCIPHYLAXIS: calciphylaxis,
    }
    differentials = assess_differentials(ctx, subtypes)
    gaps, suppressed, pending = workup_gaps(ctx, subtypes, differentials, orders)
    derived = tuple(d for d in (ctx.calcium_derived(), ctx.caxp, ctx.kidney_derived()) if d is not None)
    severe = (
        ctx.calcium is not None and ctx.calcium.value >= kb.value("calcium-severe") and ctx.calcium.kind != "ionized"
    )
    return Assessment(
        as_of=findings.as_of,
        knowledge_version=kb.version,
        entry=entry,
        subtypes=tuple(subtypes[s] for s in Subtype),
        derived=derived,
        distribution=assess_distribution(ctx),
        workup=gaps,
        suppressed_workup=suppressed,
        pending_workup=pending,
        differentials=differentials,
        calciphylaxis_risk=risk,
        data_quality=DataQuality(
            findings.resources_seen,
            findings.resources_skipped,
            tuple(f"{i.resource}: {i.reason}" for i in findings.issues)
            + tuple(
                f"{lab.source.reference}: {lab.analyte.value} not usable: {lab.unusable_reason}"
                for lab in ctx.implausible
            ),
            implausible_values=len(ctx.implausible),
        ),
        severe_hypercalcemia=severe,
        calciphylaxis=signal,
        causes=supported_causes(ctx),
        no_cause_recorded=_no_cause_recorded(subtypes),
        idiopathic_entities=idiopathic_entities(ctx) if idiopathic.likelihood is Likelihood.POSSIBLE else (),
        suspected_only=all(c.suspected for c in findings.conditions if c.concept in ENTRY_CONCEPTS and c.active),
    )
