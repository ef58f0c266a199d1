"""Calciphylaxis risk factors (clinical-knowledge.md sections 5.5.2 and 9, consensus Table 3).

The consensus table scores dialysis patients; for others the factors are listed but the pattern is
`not-applicable`. The pattern is a risk statement, never a diagnosis.
"""

from __future__ import annotations

from calcinosis.assessment import CalciphylaxisRisk, Evidence, RiskFactor
from calcinosis.context import HIGH, PatientContext, cite_medications, condition_evidence, lab_evidence
from calcinosis.derived import is_above, is_below
from calcinosis.findings import Analyte, ClinicalConcept, DrugClass, Sex

CONSENSUS = ("Calciphylaxis-consensus",)


def assess_risk(ctx: PatientContext) -> CalciphylaxisRisk:
    """Collect major, minor and display-only factors and decide whether the pattern is met."""
    kb = ctx.kb
    major: list[RiskFactor] = []
    minor: list[RiskFactor] = []
    additional: list[RiskFactor] = []
    kidney = ctx.kidney
    year_ago = ctx.year_start

    if kidney.on_dialysis:
        vintage_years = (ctx.as_of - kidney.dialysis_start).days / 365.25 if kidney.dialysis_start else None
        limit = kb.value("dialysis-vintage-major-years")
        if vintage_years is not None and vintage_years > limit:
            major.append(
                RiskFactor(
                    "dialysis-over-5y",
                    f"Dialysis for {vintage_years:.1f} years (more than {kb.quantity('dialysis-vintage-major-years')})",
                    "major",
                    kidney.dialysis_evidence,
                    CONSENSUS,
                )
            )
        else:
            vintage = kb.quantity("dialysis-vintage-major-years")
            note = None if vintage_years is not None else f"start of dialysis not recorded; counted as under {vintage}"
            label = (
                f"Dialysis for {vintage_years:.1f} years (under {vintage})"
                if vintage_years is not None
                else "Dialysis (duration unknown)"
            )
            minor.append(RiskFactor("dialysis-under-5y", label, "minor", kidney.dialysis_evidence, CONSENSUS, note))

    warfarin = [m for m in ctx.medications(DrugClass.WARFARIN) if m.status not in ("entered-in-error", "cancelled")]
    if warfarin:
        days = ctx.exposure_days(warfarin)
        evidence = cite_medications(warfarin)
        if days >= kb.value("warfarin-long-term-days"):
            major.append(
                RiskFactor(
                    "warfarin-long-term",
                    f"Warfarin for about {days / 30.4:.0f} months",
                    "major",
                    evidence,
                    CONSENSUS,
                    f"'long-term' taken as at least {kb.quantity('warfarin-long-term-days')}",
                )
            )
        else:
            additional.append(
                RiskFactor(
                    "warfarin-short",
                    f"Warfarin (under {kb.quantity('warfarin-long-term-days')} on record)",
                    "additional",
                    evidence,
                    ("PMC2952095",),
                )
            )

    # Calcium carbonate or acetate is a phosphate binder only in kidney disease; without it, it is
    # calcium intake (milk-alkali syndrome, `calcinosis.causes`), not a calciphylaxis factor.
    binders = [
        m for m in ctx.medications(DrugClass.CALCIUM_BASED_BINDER) if m.status not in ("entered-in-error", "cancelled")
    ]
    if not kidney.at_least_g3a:
        binders = []
    if binders:
        days = ctx.exposure_days(binders)
        evidence = cite_medications(binders)
        if days > kb.value("binder-duration-days"):
            major.append(
                RiskFactor(
                    "calcium-binder-over-6m",
                    f"Calcium-based phosphate binder for about {days / 30.4:.0f} months",
                    "major",
                    evidence,
                    CONSENSUS,
                    "high dose not verified from the record",
                )
            )
        else:
            additional.append(
                RiskFactor(
                    "calcium-binder",
                    f"Calcium-based phosphate binder (up to {kb.quantity('binder-duration-days')} on record)",
                    "additional",
                    evidence,
                    ("PMC2952095",),
                )
            )

    active_d = [
        m for m in ctx.medications(DrugClass.ACTIVE_VITAMIN_D) if m.status not in ("entered-in-error", "cancelled")
    ]
    if active_d:
        dose_limit = kb.value("active-vitamin-d-dose")
        high = [m for m in active_d if m.daily_dose_mcg is not None and m.daily_dose_mcg > dose_limit]
        if high:
            major.append(
                RiskFactor(
                    "active-vitamin-d-high",
                    f"Active vitamin D {high[0].daily_dose_mcg:g} µg/day (more than {kb.quantity('active-vitamin-d-dose')})",
                    "major",
                    cite_medications(high),
                    CONSENSUS,
                )
            )
        else:
            doses = [m.daily_dose_mcg for m in active_d if m.daily_dose_mcg is not None]
            note = f"{max(doses):g} µg/day" if doses else "dose not derivable from the record"
            additional.append(
                RiskFactor(
                    "active-vitamin-d",
                    "Active vitamin D",
                    "additional",
                    cite_medications(active_d),
                    CONSENSUS,
                    note,
                )
            )

    for condition in ctx.conditions(ClinicalConcept.PROTEIN_C_S_DEFICIENCY):
        major.append(
            RiskFactor(
                "protein-c-s-deficiency",
                "Protein C or S deficiency",
                "major",
                (condition_evidence(condition),),
                CONSENSUS,
            )
        )

    pth = ctx.latest(Analyte.PTH_INTACT, year_ago)
    if pth is not None and pth.value is not None:
        if is_above(pth.value, pth.comparator, kb.value("pth-major")):
            major.append(
                RiskFactor(
                    "pth-over-1000",
                    f"Intact PTH {pth.reported} (above {kb.quantity('pth-major')})",
                    "major",
                    (lab_evidence(pth),),
                    CONSENSUS,
                )
            )
        elif is_below(pth.value, pth.comparator, kb.value("pth-minor-low")):
            minor.append(
                RiskFactor(
                    "pth-under-300",
                    f"Intact PTH {pth.reported} (below {kb.quantity('pth-minor-low')})",
                    "minor",
                    (lab_evidence(pth),),
                    CONSENSUS,
                )
            )

    obesity = ctx.conditions(ClinicalConcept.OBESITY, active_only=True)
    bmi = ctx.latest(Analyte.BMI, year_ago)
    if obesity:
        minor.append(
            RiskFactor("obesity", "Obesity", "minor", tuple(condition_evidence(c) for c in obesity[:3]), CONSENSUS)
        )
    elif (
        bmi is not None
        and bmi.value is not None
        and is_above(bmi.value, bmi.comparator, kb.value("bmi-obesity"), inclusive=True)
    ):
        minor.append(
            RiskFactor(
                "obesity",
                f"BMI {bmi.reported} (at least {kb.quantity('bmi-obesity')})",
                "minor",
                (lab_evidence(bmi),),
                ("Calciphylaxis-consensus", "Design-GK"),
            )
        )

    diabetes = ctx.conditions(ClinicalConcept.DIABETES)
    if diabetes:
        minor.append(
            RiskFactor("diabetes", "Diabetes", "minor", tuple(condition_evidence(c) for c in diabetes[:3]), CONSENSUS)
        )

    albumin = ctx.latest(Analyte.ALBUMIN, ctx.gate_start)
    if (
        albumin is not None
        and albumin.value is not None
        and is_below(albumin.value, albumin.comparator, kb.value("albumin-low"))
    ):
        minor.append(
            RiskFactor(
                "hypoalbuminemia",
                f"Albumin {albumin.reported} (below {kb.quantity('albumin-low')})",
                "minor",
                (lab_evidence(albumin),),
                ("Calciphylaxis-consensus", "Mazhar-2001"),
            )
        )

    immuno = [
        m
        for m in ctx.medications(DrugClass.GLUCOCORTICOID, DrugClass.IMMUNOSUPPRESSANT)
        if m.status not in ("entered-in-error", "cancelled")
    ]
    if immuno and ctx.exposure_days(immuno) >= kb.value("immunosuppression-long-term-days"):
        minor.append(
            RiskFactor(
                "immunosuppression",
                "Long-term glucocorticoids or immunosuppressants",
                "minor",
                cite_medications(immuno),
                CONSENSUS,
                f"'long-term' taken as at least {kb.quantity('immunosuppression-long-term-days')}",
            )
        )

    if ctx.calcium is not None and ctx.calcium.status == HIGH:
        minor.append(
            RiskFactor(
                "hypercalcemia",
                f"Hypercalcemia ({ctx.calcium.value:.1f} mg/dL)",
                "minor",
                (lab_evidence(ctx.calcium.calcium),),
                CONSENSUS,
            )
        )
    if ctx.phosphate is not None and ctx.phosphate.status == HIGH:
        minor.append(
            RiskFactor(
                "hyperphosphatemia",
                f"Hyperphosphatemia ({ctx.phosphate.value:.1f} mg/dL)",
                "minor",
                (lab_evidence(ctx.phosphate.lab),),
                CONSENSUS,
            )
        )

    alp = ctx.latest(Analyte.ALKALINE_PHOSPHATASE, year_ago)
    if alp is not None and alp.value is not None:
        status, _ = ctx.judge(alp, alp.value, None, None)
        if status == HIGH:
            minor.append(
                RiskFactor(
                    "high-alp",
                    f"Alkaline phosphatase {alp.reported} above the lab's upper limit",
                    "minor",
                    (lab_evidence(alp),),
                    CONSENSUS,
                )
            )

    injections = [
        m
        for m in ctx.medications(DrugClass.INSULIN, DrugClass.HEPARIN)
        if m.status not in ("entered-in-error", "cancelled")
    ]
    if injections:
        minor.append(
            RiskFactor(
                "sc-insulin-heparin",
                "Subcutaneous insulin or heparin",
                "minor",
                cite_medications(injections),
                CONSENSUS,
            )
        )

    iron = ctx.medications(DrugClass.IRON_PARENTERAL)
    if iron:
        additional.append(
            RiskFactor(
                "parenteral-iron",
                "Parenteral iron",
                "additional",
                cite_medications(iron),
                ("Medscape-CPX",),
            )
        )

    if ctx.findings.sex is Sex.FEMALE:
        additional.append(
            RiskFactor(
                "female-sex",
                f"Female sex (OR {kb.number('female-sex-calciphylaxis-odds-ratio')} in one ESRD cohort)",
                "additional",
                (),
                kb.threshold("female-sex-calciphylaxis-odds-ratio").sources,
            )
        )

    if not kidney.on_dialysis:
        pattern = "not-applicable"
    elif len(major) >= kb.value("calciphylaxis-pattern-major") or (
        major and len(minor) >= kb.value("calciphylaxis-pattern-minor-with-major")
    ):
        pattern = "met"
    else:
        pattern = "not-met"
    return CalciphylaxisRisk(
        kidney.on_dialysis, tuple(major), tuple(minor), tuple(additional), pattern, applicable=kidney.advanced
    )


def risk_evidence(risk: CalciphylaxisRisk) -> tuple[Evidence, ...]:
    """All evidence behind the scored factors (for the CC-CPX-RISK finding)."""
    return tuple(e for factor in risk.major + risk.minor for e in factor.evidence)
