"""Causes of abnormal calcium and phosphate metabolism that the record supports (clinical-knowledge.md
5.2, 2.3 and 10): the cause behind a metastatic pattern, named from the data, not guessed.

PTH-dependent versus PTH-independent is the central split of hypercalcemia (5.2): a suppressed PTH
with hypercalcemia points to malignancy, vitamin D or granulomatous disease, or calcium and
antacid intake (milk-alkali syndrome); a high or unsuppressed PTH to primary hyperparathyroidism,
or tertiary hyperparathyroidism in established CKD. High phosphate points to CKD-mineral and bone
disorder when CKD is established (KDIGO chronicity), and to hypoparathyroidism when PTH is low
without CKD. CKD is never stated from a single eGFR, one taken during an AKI, or in a
hypercalcemia that it does not explain (a suppressed PTH with a normal or low phosphate).
"""

from __future__ import annotations

from calcinosis.assessment import CauseFinding, Evidence, MetabolicCause, RuleFinding
from calcinosis.context import (
    HIGH,
    PatientContext,
    cite_medications,
    condition_evidence,
    lab_evidence,
)
from calcinosis.derived import is_above
from calcinosis.findings import Analyte, ClinicalConcept, DrugClass, LabResult

CAUSE_SOURCES = ("DermNet", "Medscape-CC", "StatPearls")
HYPERCALCEMIA_SOURCES = ("MSD", "StatPearls-Hypercalcemia")


def _status(ctx: PatientContext, lab: LabResult | None, upper_id: str | None = None) -> str | None:
    """High / low / normal by the lab's flag or range (or a fallback upper limit when given)."""
    if lab is None or lab.value is None:
        return None
    status, _ = ctx.judge(lab, lab.value, upper_id, None)
    return status


def _coded(ctx: PatientContext, *concepts: ClinicalConcept) -> tuple[Evidence, ...]:
    found = ctx.conditions(*concepts)
    return tuple(condition_evidence(c) for c in found[:3])


def _finding(
    cause: MetabolicCause, rule_id: str, statement: str, evidence: tuple[Evidence, ...], sources: tuple[str, ...]
) -> CauseFinding:
    return CauseFinding(cause, RuleFinding(rule_id, statement, evidence, sources))


def supported_causes(ctx: PatientContext) -> tuple[CauseFinding, ...]:
    """Every cause the record supports (computed once per patient context)."""
    if ctx.causes is None:
        ctx.causes = _supported_causes(ctx)
    return ctx.causes


def _supported_causes(ctx: PatientContext) -> tuple[CauseFinding, ...]:
    kb = ctx.kb
    year_ago = ctx.year_start  # the yearly look-back of thresholds.json (annual-lookback-days)
    calcium, phosphate, kidney = ctx.calcium, ctx.phosphate, ctx.kidney
    calcium_high = calcium is not None and calcium.status == HIGH
    phosphate_high = phosphate is not None and phosphate.status == HIGH
    calcium_evidence: tuple[Evidence, ...] = (lab_evidence(calcium.calcium),) if calcium is not None else ()
    phosphate_evidence: tuple[Evidence, ...] = (lab_evidence(phosphate.lab),) if phosphate is not None else ()
    pth_state, pth, _ = ctx.pth_status()
    pth_evidence: tuple[Evidence, ...] = (lab_evidence(pth),) if pth is not None else ()
    pth_suppressed = ctx.pth_suppressed()  # the workup's reading too
    pth_high = pth_state == HIGH
    causes: list[CauseFinding] = []

    # Vitamin D toxicity: 25-OH vitamin D above 150 ng/mL, or coded.
    vitamin_d = ctx.latest(Analyte.VITAMIN_D_25OH, year_ago)
    toxic = (
        vitamin_d is not None
        and vitamin_d.value is not None
        and bool(is_above(vitamin_d.value, vitamin_d.comparator, kb.value("vitamin-d-25oh-toxic")))
    )
    coded_vitd = _coded(ctx, ClinicalConcept.HYPERVITAMINOSIS_D)
    if toxic and vitamin_d is not None:
        causes.append(
            _finding(
                MetabolicCause.VITAMIN_D_TOXICITY,
                "CC-MET-VITD",
                f"25-OH vitamin D {vitamin_d.reported} is above the toxicity level of "
                f"{kb.quantity('vitamin-d-25oh-toxic')}: vitamin D toxicity",
                (lab_evidence(vitamin_d),) + coded_vitd,
                ("Vit-D-tox",),
            )
        )
    elif coded_vitd:
        causes.append(
            _finding(
                MetabolicCause.VITAMIN_D_TOXICITY,
                "CC-MET-VITD",
                "Hypervitaminosis D is recorded",
                coded_vitd,
                ("Vit-D-tox",),
            )
        )

    # Malignancy: PTH-independent hypercalcemia (suppressed PTH or a raised PTHrP).
    malignancy = _coded(ctx, ClinicalConcept.MALIGNANCY, ClinicalConcept.MULTIPLE_MYELOMA)
    pthrp = ctx.latest(Analyte.PTHRP, year_ago)
    pthrp_high = _status(ctx, pthrp) == HIGH
    if calcium_high and (pthrp_high or (malignancy and pth_suppressed)):
        evidence = calcium_evidence + pth_evidence + ((lab_evidence(pthrp),) if pthrp is not None else ()) + malignancy
        parts = ["Hypercalcemia"]
        if pth_suppressed:
            parts.append("with a suppressed PTH")
        if pthrp_high:
            parts.append("and a raised PTHrP" if pth_suppressed else "with a raised PTHrP")
        what = " ".join(parts)
        where = " in a recorded malignancy" if malignancy else ""
        causes.append(
            _finding(
                MetabolicCause.MALIGNANCY,
                "CC-MET-MALIGNANCY",
                f"{what}{where}: hypercalcemia of malignancy (PTH-independent)",
                evidence,
                ("StatPearls-Hypercalcemia", "Medscape-CC"),
            )
        )
    elif malignancy:
        causes.append(
            _finding(
                MetabolicCause.MALIGNANCY,
                "CC-MET-CAUSE",
                "Malignancy is recorded (PTHrP, bone metastases, myeloma and lymphoma can raise calcium)",
                malignancy,
                CAUSE_SOURCES,
            )
        )

    # Granulomatous disease: sarcoidosis coded, or 1,25-dihydroxyvitamin D raised with a suppressed PTH.
    sarcoid = _coded(ctx, ClinicalConcept.SARCOIDOSIS)
    calcitriol = ctx.latest(Analyte.VITAMIN_D_1_25, year_ago)
    calcitriol_high = _status(ctx, calcitriol) == HIGH
    if sarcoid or (calcium_high and pth_suppressed and calcitriol_high and not malignancy):
        evidence = sarcoid + ((lab_evidence(calcitriol),) if calcitriol is not None and calcitriol_high else ())
        statement = (
            "Sarcoidosis is recorded: granulomatous disease raises 1,25-dihydroxyvitamin D and calcium"
            if sarcoid
            else "Hypercalcemia with a suppressed PTH and a raised 1,25-dihydroxyvitamin D: granulomatous disease "
            "or lymphoma"
        )
        causes.append(
            _finding(
                MetabolicCause.GRANULOMATOUS,
                "CC-MET-GRANULOMA",
                statement,
                evidence + (calcium_evidence if calcium_high else ()),
                ("Vit-D-tox", "Medscape-CC"),
            )
        )

    # Milk-alkali syndrome: calcium carbonate or antacid intake with hypercalcemia (off dialysis),
    # often with alkalosis and an acute kidney injury (5.2).
    intake = [
        m
        for m in ctx.medications(DrugClass.CALCIUM_BASED_BINDER)
        if m.status not in ("entered-in-error", "cancelled", "stopped", "completed")
    ]
    coded_milk = _coded(ctx, ClinicalConcept.MILK_ALKALI)
    if coded_milk or (calcium_high and intake and not kidney.on_dialysis and not pth_high):
        extras: list[str] = []
        evidence = coded_milk + calcium_evidence + cite_medications(intake, limit=2)
        bicarbonate = ctx.latest(Analyte.BICARBONATE, ctx.gate_start)
        if _status(ctx, bicarbonate) == HIGH and bicarbonate is not None:
            extras.append("a high bicarbonate (alkalosis)")
            evidence += (lab_evidence(bicarbonate),)
        if kidney.acute_kidney_injury or ctx.conditions(ClinicalConcept.ACUTE_KIDNEY_INJURY, active_only=True):
            extras.append("acute kidney injury")
            evidence += _coded(ctx, ClinicalConcept.ACUTE_KIDNEY_INJURY)
        if coded_milk:
            statement = "Milk-alkali syndrome is recorded"
        else:
            statement = "Calcium carbonate or calcium-containing antacid intake with hypercalcemia"
            if extras:
                statement += " and " + " and ".join(extras)
            statement += ": milk-alkali syndrome"
        causes.append(
            _finding(MetabolicCause.MILK_ALKALI, "CC-MET-MILK-ALKALI", statement, evidence, CAUSE_SOURCES + ("MSD",))
        )

    # Hyperparathyroidism: primary (no established CKD) or tertiary (hypercalcemia in established CKD).
    coded_primary = _coded(ctx, ClinicalConcept.HYPERPARATHYROIDISM_PRIMARY)
    coded_secondary = _coded(ctx, ClinicalConcept.HYPERPARATHYROIDISM_SECONDARY, ClinicalConcept.RENAL_OSTEODYSTROPHY)
    if calcium_high and pth_high and kidney.ckd_established:
        causes.append(
            _finding(
                MetabolicCause.TERTIARY_HYPERPARATHYROIDISM,
                "CC-MET-PTH",
                f"Hypercalcemia with intact PTH {pth.reported if pth else ''} above the upper limit in established "
                "kidney disease: tertiary hyperparathyroidism",
                calcium_evidence + pth_evidence + coded_secondary,
                ("Medscape-CPX", "DermNet"),
            )
        )
    elif coded_primary or (calcium_high and pth is not None and not pth_suppressed and not kidney.ckd_established):
        label = "above the upper limit" if pth_high else "not suppressed"
        statement = (
            "Primary hyperparathyroidism is recorded"
            if coded_primary and not (calcium_high and pth is not None)
            else f"Hypercalcemia with intact PTH {pth.reported if pth else ''} {label}: primary hyperparathyroidism"
        )
        causes.append(
            _finding(
                MetabolicCause.PRIMARY_HYPERPARATHYROIDISM,
                "CC-MET-PTH",
                statement,
                coded_primary + (calcium_evidence + pth_evidence if calcium_high else ()),
                ("MSD", "Medscape-CPX"),
            )
        )
    elif _coded(ctx, ClinicalConcept.HYPERPARATHYROIDISM_UNSPECIFIED):
        causes.append(
            _finding(
                MetabolicCause.PRIMARY_HYPERPARATHYROIDISM,
                "CC-MET-CAUSE",
                "Hyperparathyroidism is recorded (type not stated)",
                _coded(ctx, ClinicalConcept.HYPERPARATHYROIDISM_UNSPECIFIED),
                CAUSE_SOURCES,
            )
        )

    # CKD-mineral and bone disorder: established CKD with high phosphate, high PTH or a coded
    # secondary hyperparathyroidism; never for a hypercalcemia with a suppressed PTH.
    if (
        kidney.ckd_established
        and (phosphate_high or pth_high or coded_secondary)
        and not (calcium_high and pth_suppressed)
    ):
        stage = "G5D (dialysis)" if kidney.on_dialysis else (kidney.category or kidney.coded_stage or "established")
        if kidney.transplant and not kidney.on_dialysis and kidney.category is None:
            stage = "with a kidney transplant"
        signs = [s for s, present in (("high phosphate", phosphate_high), ("high PTH", pth_high)) if present]
        if coded_secondary and not signs:
            signs.append("secondary hyperparathyroidism recorded")
        evidence = kidney.reading_evidence() + kidney.dialysis_evidence + kidney.coded_evidence
        evidence += (
            (phosphate_evidence if phosphate_high else ()) + (pth_evidence if pth_high else ()) + coded_secondary
        )
        causes.append(
            _finding(
                MetabolicCause.CKD_MBD,
                "CC-MET-CKD",
                f"Chronic kidney disease {stage} with {' and '.join(signs)}: CKD-mineral and bone disorder, "
                "the commonest cause of metastatic calcification",
                evidence,
                ("DermNet", "Medscape-CC", "KDIGO-2017"),
            )
        )

    # Hypoparathyroidism (or pseudohypoparathyroidism) with high phosphate, outside CKD.
    coded_hypo = _coded(ctx, ClinicalConcept.HYPOPARATHYROIDISM, ClinicalConcept.PSEUDOHYPOPARATHYROIDISM)
    if phosphate_high and not calcium_high and not kidney.ckd_established and (coded_hypo or pth_suppressed):
        what = "recorded hypoparathyroidism" if coded_hypo else "a low PTH"
        causes.append(
            _finding(
                MetabolicCause.HYPOPARATHYROIDISM,
                "CC-MET-HYPOPARA",
                f"High phosphate with {what} and no established kidney disease: hypoparathyroidism "
                "(or pseudohypoparathyroidism) with hyperphosphatemia",
                phosphate_evidence + pth_evidence + coded_hypo,
                ("StatPearls", "DermNet"),
            )
        )
    elif coded_hypo:
        causes.append(
            _finding(
                MetabolicCause.HYPOPARATHYROIDISM,
                "CC-MET-CAUSE",
                "Hypoparathyroidism or pseudohypoparathyroidism is recorded",
                coded_hypo,
                CAUSE_SOURCES,
            )
        )

    tumor_lysis = _coded(ctx, ClinicalConcept.TUMOR_LYSIS)
    if tumor_lysis:
        causes.append(
            _finding(
                MetabolicCause.TUMOR_LYSIS,
                "CC-MET-CAUSE",
                "Tumor lysis syndrome is recorded (acute hyperphosphatemia)",
                tumor_lysis,
                CAUSE_SOURCES,
            )
        )
    return tuple(causes)
