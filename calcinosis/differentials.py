"""Differential diagnoses (clinical-knowledge.md section 8): what raises or lowers each in this
patient. Wording is "consider", never "rule out" (section 11.3)."""

from __future__ import annotations

from calcinosis.assessment import DifferentialAssessment, Likelihood, RuleFinding, Subtype, SubtypeAssessment
from calcinosis.context import HIGH, NORMAL, PatientContext, condition_evidence, lab_evidence, medication_evidence
from calcinosis.derived import is_above
from calcinosis.findings import Analyte, ClinicalConcept, DrugClass

#: The five the issue requires always, plus two shown only when relevant.
ALWAYS = ("gouty-tophus", "osteoma-cutis", "progressive-osseous-heteroplasia", "primary-hyperoxaluria", "xanthoma")


def _conditions(
    ctx: PatientContext, rule_id: str, what: str, sources: tuple[str, ...], *concepts: ClinicalConcept
) -> list[RuleFinding]:
    found = ctx.conditions(*concepts)
    if not found:
        return []
    return [
        RuleFinding(
            rule_id,
            f"{what}: {found[0].source.display or found[0].concept.value}",
            tuple(condition_evidence(c) for c in found[:3]),
            sources,
        )
    ]


def _gout(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("FNA-tophi",)
    raised = _conditions(ctx, "DX-GOUT-DX", "Gout recorded", sources, ClinicalConcept.GOUT)
    raised += _conditions(
        ctx, "DX-GOUT-HYPERURICEMIA", "Hyperuricemia recorded", sources, ClinicalConcept.HYPERURICEMIA
    )
    drugs = ctx.medications(DrugClass.URATE_LOWERING, DrugClass.COLCHICINE)
    if drugs:
        raised.append(
            RuleFinding(
                "DX-GOUT-DRUG",
                f"Gout treatment on record: {drugs[0].name or drugs[0].drug_class.value}",
                tuple(medication_evidence(m) for m in drugs[:3]),
                sources,
            )
        )
    lowered: list[RuleFinding] = []
    urate = ctx.latest(Analyte.URIC_ACID, ctx.year_start)
    if urate is not None and urate.value is not None:
        status, _ = ctx.judge(urate, urate.value, None, None)
        if status == HIGH:
            raised.append(
                RuleFinding(
                    "DX-GOUT-URATE",
                    f"Uric acid {urate.reported} above the lab's upper limit",
                    (lab_evidence(urate),),
                    sources,
                )
            )
        elif status == NORMAL:
            lowered.append(
                RuleFinding(
                    "DX-GOUT-URATE-NORMAL",
                    f"Uric acid {urate.reported} within range (lowers but does not exclude tophi: normal in "
                    f"{ctx.kb.number('tophi-normal-urate-count')} of {ctx.kb.number('tophi-series-size')} "
                    "in one aspiration series)",
                    (lab_evidence(urate),),
                    sources,
                    supports=False,
                )
            )
    return raised, lowered


def _osteoma(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("Manning-osteoma", "DermNet")
    raised = _conditions(ctx, "DX-OSTEOMA-DX", "Osteoma cutis recorded", sources, ClinicalConcept.OSTEOMA_CUTIS)
    raised += _conditions(
        ctx,
        "DX-OSTEOMA-AHO",
        "Pseudohypoparathyroidism (Albright hereditary osteodystrophy) recorded",
        sources,
        ClinicalConcept.PSEUDOHYPOPARATHYROIDISM,
    )
    return raised, []


def _poh(ctx: PatientContext, iatrogenic: SubtypeAssessment) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("POH",)
    raised = _conditions(
        ctx,
        "DX-POH-DX",
        "Progressive osseous heteroplasia recorded",
        sources,
        ClinicalConcept.PROGRESSIVE_OSSEOUS_HETEROPLASIA,
    )
    raised += _conditions(
        ctx,
        "DX-POH-GNAS",
        "GNAS-related disorder (pseudohypoparathyroidism) recorded",
        sources,
        ClinicalConcept.PSEUDOHYPOPARATHYROIDISM,
    )
    onset = ctx.onset()
    age = ctx.findings.age_years_at(onset) if onset is not None else None
    if age is not None and age < ctx.kb.value("poh-infancy-age-years"):
        raised.append(
            RuleFinding("DX-POH-INFANCY", f"Calcification recorded in infancy (age {age:.1f} years)", (), sources)
        )
        if iatrogenic.likelihood is Likelihood.LIKELY:
            lowered = RuleFinding(
                "DX-POH-EXPLAINED",
                "A recent iatrogenic exposure explains calcification in infancy; POH matters if lesions progress",
                (),
                sources,
                supports=False,
            )
            return raised, [lowered]
    return raised, []


def _oxalosis(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("Oxalosis",)
    raised = _conditions(
        ctx,
        "DX-OXALOSIS-DX",
        "Hyperoxaluria recorded",
        sources,
        ClinicalConcept.PRIMARY_HYPEROXALURIA,
        ClinicalConcept.SECONDARY_HYPEROXALURIA,
    )
    stones = ctx.conditions(ClinicalConcept.NEPHROLITHIASIS)
    if stones and ctx.kidney.at_least_g3a:
        raised.append(
            RuleFinding(
                "DX-OXALOSIS-STONES",
                "Kidney stones with chronic kidney disease",
                tuple(condition_evidence(c) for c in stones[:3]),
                sources,
            )
        )
    # Raised by its own signals only (section 8): hyperoxaluria on record, or kidney stones with
    # kidney disease. That oxalosis mimics calciphylaxis is part of its description, not a signal
    # in this record, so it no longer raises it on every dialysis chart.
    return raised, []


def _xanthoma(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("AccessMedicine-lipids",)
    raised = _conditions(ctx, "DX-XANTHOMA-DX", "Xanthoma recorded", sources, ClinicalConcept.XANTHOMA)
    raised += _conditions(ctx, "DX-XANTHOMA-LIPID", "Dyslipidemia recorded", sources, ClinicalConcept.HYPERLIPIDEMIA)
    year_ago = ctx.year_start
    measured = False
    for analyte, threshold_id, label in (
        (Analyte.CHOLESTEROL_TOTAL, "cholesterol-total-high", "Total cholesterol"),
        (Analyte.LDL_CHOLESTEROL, "ldl-high", "LDL cholesterol"),
        (Analyte.TRIGLYCERIDES, "triglycerides-high", "Triglycerides"),
    ):
        lab = ctx.latest(analyte, year_ago)
        if lab is None or lab.value is None:
            continue
        measured = True
        threshold = ctx.kb.threshold(threshold_id)
        if is_above(lab.value, lab.comparator, threshold.value, inclusive=True):
            eruptive = analyte is Analyte.TRIGLYCERIDES and lab.value > ctx.kb.value("triglycerides-eruptive")
            extra = f"; above {ctx.kb.quantity('triglycerides-eruptive')}: eruptive xanthomas" if eruptive else ""
            raised.append(
                RuleFinding(
                    "DX-XANTHOMA-LAB",
                    f"{label} {lab.reported} at or above {ctx.kb.quantity(threshold_id)}{extra}",
                    (lab_evidence(lab),),
                    threshold.sources,
                )
            )
    lowered: list[RuleFinding] = []
    if measured and not any(f.rule_id == "DX-XANTHOMA-LAB" for f in raised):
        lowered.append(
            RuleFinding(
                "DX-XANTHOMA-LAB-NORMAL",
                "Lipids in the last year are below the xanthoma cut-offs",
                (),
                sources,
                supports=False,
            )
        )
    return raised, lowered


def _hftc(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    sources = ("HFTC",)
    phosphate, calcium = ctx.phosphate, ctx.calcium
    if phosphate is None or phosphate.status != HIGH or calcium is None or calcium.status != NORMAL:
        return [], []
    if ctx.kidney.at_least_g3a or not ctx.kidney.known:
        return [], []
    return [
        RuleFinding(
            "DX-HFTC-P",
            f"High phosphate {phosphate.value:.1f} mg/dL with normal calcium and no advanced kidney disease",
            (lab_evidence(phosphate.lab), lab_evidence(calcium.calcium)) + ctx.kidney.reading_evidence(),
            sources,
        )
    ], []


def _mimics(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    warfarin = ctx.medications(DrugClass.WARFARIN)
    if warfarin:
        return [
            RuleFinding(
                "DX-MIMIC-WARFARIN",
                "Warfarin on record: warfarin-induced skin necrosis mimics calciphylaxis",
                tuple(medication_evidence(m) for m in warfarin[:2]),
                ("Calciphylaxis-consensus",),
            )
        ], []
    return [], []


def _infection_mimic(ctx: PatientContext, iatrogenic: SubtypeAssessment) -> tuple[list[RuleFinding], list[RuleFinding]]:
    """Calcium extravasation in an infant is mistaken for cellulitis, abscess, osteomyelitis or a
    calcified hematoma (section 8; JACEP 1977): raised when IV calcium before onset is on record
    in a child younger than the infant age of the knowledge base."""
    exposures = [f for f in iatrogenic.findings if f.rule_id == "CC-IAT-CA" and f.supports]
    onset = ctx.onset()
    age = ctx.findings.age_years_at(onset) if onset is not None else None
    if not exposures or age is None or age >= ctx.kb.value("infant-age-years"):
        return [], []
    return [
        RuleFinding(
            "DX-INFECTION-EXTRAVASATION",
            f"IV calcium in an infant (under {ctx.kb.quantity('infant-age-years')}) before the lesion: "
            "extravasation calcinosis is often mistaken for infection",
            tuple(e for f in exposures for e in f.evidence),
            ("Ca-gluconate",),
        )
    ], []


def assess_differentials(
    ctx: PatientContext, subtypes: dict[Subtype, SubtypeAssessment]
) -> tuple[DifferentialAssessment, ...]:
    """All applicable differentials, those raised by the record first."""
    calciphylaxis = subtypes[Subtype.CALCIPHYLAXIS]
    computed: dict[str, tuple[list[RuleFinding], list[RuleFinding]]] = {
        "gouty-tophus": _gout(ctx),
        "osteoma-cutis": _osteoma(ctx),
        "progressive-osseous-heteroplasia": _poh(ctx, subtypes[Subtype.IATROGENIC]),
        "primary-hyperoxaluria": _oxalosis(ctx),
        "xanthoma": _xanthoma(ctx),
    }
    hftc = _hftc(ctx)
    if hftc[0]:
        computed["hyperphosphatemic-tumoral-calcinosis"] = hftc
    infection = _infection_mimic(ctx, subtypes[Subtype.IATROGENIC])
    if infection[0]:
        computed["infection-mimic"] = infection
    if calciphylaxis.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE):
        computed["calciphylaxis-mimics"] = _mimics(ctx)
    results: list[DifferentialAssessment] = []
    for differential in ctx.kb.differentials:
        if differential.id not in computed:
            continue
        raised, lowered = computed[differential.id]
        results.append(
            DifferentialAssessment(
                differential.id,
                differential.label,
                tuple(raised),
                tuple(lowered),
                differential.separating_test,
                differential.test_code,
                differential.sources,
            )
        )
    results.sort(key=lambda d: 0 if d.raised_by else 1)
    return tuple(results)
