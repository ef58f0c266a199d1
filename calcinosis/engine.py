"""The one entry point of the clinical core: findings in, assessment (or silence) out."""

from __future__ import annotations

from calcinosis.assessment import Assessment, DataQuality, Evidence, Subtype
from calcinosis.context import PatientContext, condition_evidence
from calcinosis.differentials import assess_differentials
from calcinosis.distribution import assess_distribution
from calcinosis.findings import ClinicalConcept, PatientFindings
from calcinosis.knowledge_base import KnowledgeBase, default_knowledge
from calcinosis.risk import assess_risk, risk_evidence
from calcinosis.subtypes import (
    assess_calciphylaxis,
    assess_dystrophic,
    assess_iatrogenic,
    assess_idiopathic,
    assess_metastatic,
)
from calcinosis.workup import workup_gaps

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


def assess(findings: PatientFindings, knowledge: KnowledgeBase | None = None) -> Assessment | None:
    """Assess one patient. Returns None when calcinosis is not documented (the silent case)."""
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
    calciphylaxis = assess_calciphylaxis(ctx, risk.pattern == "met", risk_evidence(risk))
    subtypes = {
        Subtype.DYSTROPHIC: dystrophic,
        Subtype.METASTATIC: metastatic,
        Subtype.IDIOPATHIC: idiopathic,
        Subtype.IATROGENIC: iatrogenic,
        Subtype.CALCIPHYLAXIS: calciphylaxis,
    }
    differentials = assess_differentials(ctx, subtypes)
    gaps, suppressed = workup_gaps(ctx, subtypes, differentials)
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
    )
