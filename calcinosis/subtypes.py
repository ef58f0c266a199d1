"""Subtype rules (clinical-knowledge.md section 5): one function per subtype, each returning the
likelihood with the rule findings that produced it.

Rule ids are stable (CC-DYS-*, CC-MET-*, CC-IDIO-*, CC-IAT-*, CC-CPX-*, CC-GATE) because cards,
feedback and audits refer to them. Every finding cites its sources by key from sources.json.
"""

from __future__ import annotations

from datetime import timedelta

from calcinosis.assessment import Comparison, Evidence, Likelihood, RuleFinding, Subtype, SubtypeAssessment
from calcinosis.context import (
    HIGH,
    LOW,
    PatientContext,
    condition_evidence,
    lab_evidence,
    medication_evidence,
    procedure_evidence,
)
from calcinosis.derived import is_above
from calcinosis.findings import Analyte, ClinicalConcept, ConditionFinding, DrugClass, ProcedureKind

ACTD = (
    ClinicalConcept.SYSTEMIC_SCLEROSIS,
    ClinicalConcept.DERMATOMYOSITIS,
    ClinicalConcept.LUPUS,
    ClinicalConcept.MCTD,
)
DYSTROPHIC_CAUSES = ACTD + (ClinicalConcept.PANNICULITIS, ClinicalConcept.GENODERMATOSIS)
METASTATIC_CAUSE_CONCEPTS = (
    ClinicalConcept.HYPERPARATHYROIDISM_PRIMARY,
    ClinicalConcept.HYPERPARATHYROIDISM_SECONDARY,
    ClinicalConcept.HYPERPARATHYROIDISM_UNSPECIFIED,
    ClinicalConcept.RENAL_OSTEODYSTROPHY,
    ClinicalConcept.SARCOIDOSIS,
    ClinicalConcept.HYPERVITAMINOSIS_D,
    ClinicalConcept.MILK_ALKALI,
    ClinicalConcept.TUMOR_LYSIS,
    ClinicalConcept.PSEUDOHYPOPARATHYROIDISM,
    ClinicalConcept.MALIGNANCY,
    ClinicalConcept.MULTIPLE_MYELOMA,
)
METASTATIC_SOURCES = ("Reiter-I", "StatPearls", "DermNet")
ABNORMAL_LAB_RULES = frozenset({"CC-MET-CA", "CC-MET-P", "CC-MET-CAXP"})


def gate_findings(ctx: PatientContext) -> tuple[bool, list[str], list[RuleFinding]]:
    """The data gate of 5.0: a current corrected/ionized calcium and a current phosphate.

    Returns whether the gate passed, what is missing, and a CC-GATE finding describing it.
    """
    missing: list[str] = []
    calcium = ctx.calcium
    if calcium is None:
        stale = ctx.latest(Analyte.CALCIUM_TOTAL) or ctx.latest(Analyte.CALCIUM_IONIZED)
        unusable = ctx.unusable(Analyte.CALCIUM_TOTAL, ctx.gate_start) + ctx.unusable(
            Analyte.CALCIUM_IONIZED, ctx.gate_start
        )
        if unusable:
            missing.append(f"calcium on file could not be used ({unusable[0].unusable_reason})")
        elif stale is not None:
            missing.append(
                f"calcium older than {ctx.kb.quantity('gate-lookback-days')} (last {stale.effective.date().isoformat()})"
            )
        else:
            missing.append("serum calcium")
    elif not calcium.gate_ok:
        missing.append(
            f"albumin within {ctx.kb.quantity('pairing-hours')} of the calcium (or an ionized calcium)"
            if calcium.kind == "total-uncorrected"
            else "a calcium value that can be compared with its range"
        )
    if ctx.phosphate is None or ctx.phosphate.status is None:
        stale_p = ctx.latest(Analyte.PHOSPHATE)
        unusable_p = ctx.unusable(Analyte.PHOSPHATE, ctx.gate_start)
        if unusable_p:
            missing.append(f"phosphate on file could not be used ({unusable_p[0].unusable_reason})")
        elif stale_p is not None and ctx.phosphate is None:
            missing.append(
                f"phosphate older than {ctx.kb.quantity('gate-lookback-days')} "
                f"(last {stale_p.effective.date().isoformat()})"
            )
        else:
            missing.append("serum phosphate")
    if not missing:
        return True, [], []
    finding = RuleFinding(
        rule_id="CC-GATE",
        statement="Cannot classify by mineral metabolism: missing " + "; ".join(missing),
        evidence=(),
        sources=("Reiter-I", "Design-GK"),
        supports=False,
    )
    return False, missing, [finding]


def _calcium_finding(ctx: PatientContext, rule_id: str, statement: str) -> RuleFinding:
    assert ctx.calcium is not None
    evidence = [lab_evidence(ctx.calcium.calcium)]
    if ctx.calcium.albumin is not None:
        evidence.append(lab_evidence(ctx.calcium.albumin))
    return RuleFinding(rule_id, statement, tuple(evidence), ("MSD",))


def _limit(comparisons: tuple[Comparison, ...]) -> str:
    """'the upper limit <value> <unit> (fallback cut-off)' or 'the upper limit (lab flag)'."""
    if not comparisons:
        return "the upper limit"
    first = comparisons[0]
    if first.basis == "lab's own interpretation flag":
        return "the upper limit (lab flag)"
    return f"the upper limit {first.limit:g} {first.unit} ({first.basis})"


def _metabolic_state(ctx: PatientContext) -> tuple[bool | None, list[RuleFinding]]:
    """Whether Ca, P or Ca x P is abnormal (True), all normal (False) or undecidable (None)."""
    findings: list[RuleFinding] = []
    calcium, phosphate, caxp = ctx.calcium, ctx.phosphate, ctx.caxp
    if calcium is not None and calcium.status == HIGH:
        label = {
            "ionized": "Ionized calcium",
            "corrected": "Corrected calcium",
            "total-uncorrected": "Total calcium (uncorrected)",
        }[calcium.kind]
        findings.append(
            _calcium_finding(
                ctx, "CC-MET-CA", f"{label} {calcium.value:.1f} mg/dL is above {_limit(calcium.comparisons)}"
            )
        )
    if phosphate is not None and phosphate.status == HIGH:
        findings.append(
            RuleFinding(
                "CC-MET-P",
                f"Phosphate {phosphate.value:.1f} mg/dL is above {_limit(phosphate.comparisons)}",
                (lab_evidence(phosphate.lab),),
                ("StatPearls",),
            )
        )
    # Decided on the unrounded product (the comparison outcome), not on the displayed value.
    if caxp is not None and any(c.threshold == "caxp-metastatic" and c.outcome == "above" for c in caxp.comparisons):
        findings.append(
            RuleFinding(
                "CC-MET-CAXP",
                f"Ca x P {caxp.value:g} mg²/dL² is above {ctx.kb.number('caxp-metastatic')}",
                caxp.inputs,
                ("Medscape-CC", "StatPearls"),
            )
        )
    if findings:
        return True, findings
    calcium_known = calcium is not None and calcium.status is not None and (calcium.gate_ok or calcium.status == HIGH)
    phosphate_known = phosphate is not None and phosphate.status is not None
    if calcium_known and phosphate_known:
        return False, findings
    return None, findings


def _metastatic_causes(ctx: PatientContext) -> list[RuleFinding]:
    causes: list[RuleFinding] = []
    kidney = ctx.kidney
    if kidney.ckd_established:
        evidence: list[Evidence] = list(kidney.reading_evidence())
        evidence.extend(kidney.dialysis_evidence)
        evidence.extend(kidney.coded_evidence)
        stage = "G5D (dialysis)" if kidney.on_dialysis else (kidney.category or kidney.coded_stage or "advanced")
        causes.append(
            RuleFinding(
                "CC-MET-CKD",
                f"Chronic kidney disease {stage}: the commonest cause of metastatic calcification",
                tuple(evidence),
                ("DermNet", "Medscape-CC"),
            )
        )
    for first, cited in _by_concept(ctx, METASTATIC_CAUSE_CONCEPTS):
        causes.append(
            RuleFinding(
                "CC-MET-CAUSE",
                f"Recorded cause of abnormal Ca/P metabolism: {first.source.display or first.concept.value}",
                cited,
                ("DermNet", "Medscape-CC", "StatPearls"),
            )
        )
    pth_state, pth, _ = ctx.pth_status()
    if pth_state == HIGH and pth is not None:
        causes.append(
            RuleFinding(
                "CC-MET-PTH",
                f"Intact PTH {pth.reported} is above the upper limit (hyperparathyroidism)",
                (lab_evidence(pth),),
                ("Medscape-CPX", "DermNet"),
            )
        )
    vitamin_d = ctx.latest(Analyte.VITAMIN_D_25OH, ctx.year_start)
    if (
        vitamin_d is not None
        and vitamin_d.value is not None
        and is_above(vitamin_d.value, vitamin_d.comparator, ctx.kb.value("vitamin-d-25oh-toxic"))
    ):
        causes.append(
            RuleFinding(
                "CC-MET-VITD",
                f"25-OH vitamin D {vitamin_d.reported} is above {ctx.kb.quantity('vitamin-d-25oh-toxic')} "
                "(vitamin D toxicity)",
                (lab_evidence(vitamin_d),),
                ("Vit-D-tox",),
            )
        )
    return causes


def assess_metastatic(ctx: PatientContext) -> SubtypeAssessment:
    """CC-MET: high Ca, high P or Ca x P above the metastatic cut-off, ideally with a cause (5.2)."""
    abnormal, lab_findings = _metabolic_state(ctx)
    if abnormal is None:
        _, gate_missing, gate = gate_findings(ctx)
        return SubtypeAssessment(Subtype.METASTATIC, Likelihood.UNDETERMINED, tuple(gate), tuple(gate_missing))
    if not abnormal:
        statement = "Calcium, phosphate and Ca x P are within limits"
        evidence = [lab_evidence(ctx.calcium.calcium)] if ctx.calcium else []
        if ctx.phosphate:
            evidence.append(lab_evidence(ctx.phosphate.lab))
        return SubtypeAssessment(
            Subtype.METASTATIC,
            Likelihood.UNLIKELY,
            (RuleFinding("CC-MET-NORMAL", statement, tuple(evidence), METASTATIC_SOURCES, supports=False),),
        )
    causes = _metastatic_causes(ctx)
    only_calcium = all(f.rule_id == "CC-MET-CA" for f in lab_findings)
    findings = list(lab_findings) + causes
    missing: list[str] = []
    if only_calcium and not ctx.hypercalcemia_confirmed():
        findings.append(
            RuleFinding(
                "CC-MET-REPEAT",
                "A single high total calcium: confirm by a repeat or an ionized calcium before labelling",
                (),
                ("StatPearls-Hypercalcemia",),
                supports=False,
            )
        )
        missing.append("repeat or ionized calcium")
        likelihood = Likelihood.POSSIBLE
    elif causes:
        likelihood = Likelihood.LIKELY
    else:
        likelihood = Likelihood.POSSIBLE
        missing.append("a cause of abnormal Ca/P metabolism (PTH, vitamin D, kidney function)")
    return SubtypeAssessment(Subtype.METASTATIC, likelihood, tuple(findings), tuple(missing))


def _by_concept(
    ctx: PatientContext, concepts: tuple[ClinicalConcept, ...], limit: int = 3
) -> list[tuple[ConditionFinding, tuple[Evidence, ...]]]:
    """One entry per concept on record (the same diagnosis is often coded at every encounter):
    its first condition, and evidence from up to `limit` of them."""
    grouped = []
    for concept in concepts:
        found = ctx.conditions(concept)
        if found:
            grouped.append((found[0], tuple(condition_evidence(c) for c in found[:limit])))
    return grouped


def _dystrophic_causes(ctx: PatientContext) -> list[RuleFinding]:
    findings = []
    for first, evidence in _by_concept(ctx, DYSTROPHIC_CAUSES):
        findings.append(
            RuleFinding(
                "CC-DYS-CAUSE",
                f"Tissue-damaging condition on record: {first.source.display or first.concept.value}",
                evidence,
                ("StatPearls", "DermNet", "Balin-Mayo-2012"),
            )
        )
    features = (ClinicalConcept.RAYNAUD, ClinicalConcept.DIGITAL_ULCER, ClinicalConcept.ACROOSTEOLYSIS)
    for first, evidence in _by_concept(ctx, features):
        findings.append(
            RuleFinding(
                "CC-DYS-SSC-FEATURE",
                f"Feature associated with calcinosis in systemic sclerosis: {first.source.display or first.concept.value}",
                evidence,
                ("Valenzuela-Chung-2015", "SCTC-2016"),
            )
        )
    return findings


def _labs_normal_statement(ctx: PatientContext) -> RuleFinding:
    assert ctx.calcium is not None and ctx.phosphate is not None
    evidence = [lab_evidence(ctx.calcium.calcium), lab_evidence(ctx.phosphate.lab)]
    if ctx.calcium.albumin is not None:
        evidence.append(lab_evidence(ctx.calcium.albumin))
    return RuleFinding(
        "CC-DYS-LABS",
        f"{'Ionized' if ctx.calcium.kind == 'ionized' else 'Corrected'} calcium {ctx.calcium.value:.1f} mg/dL and phosphate {ctx.phosphate.value:.1f} mg/dL are not raised",
        tuple(evidence),
        ("Reiter-I", "StatPearls"),
    )


def assess_dystrophic(
    ctx: PatientContext, metastatic: SubtypeAssessment, iatrogenic: SubtypeAssessment
) -> SubtypeAssessment:
    """CC-DYS: normal Ca and P with a tissue-damaging condition (5.1). Undetermined without data.

    Without a coded cause it stays `possible` (local injury is rarely coded), unless a likely
    iatrogenic exposure already explains the lesion."""
    gate_ok, missing, gate = gate_findings(ctx)
    causes = _dystrophic_causes(ctx)
    has_cause = any(f.rule_id == "CC-DYS-CAUSE" for f in causes)
    if metastatic.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE) and any(
        f.rule_id in ABNORMAL_LAB_RULES for f in metastatic.findings
    ):
        if has_cause:
            note = RuleFinding(
                "CC-DYS-MIXED",
                "Abnormal Ca/P alongside a tissue-damaging condition: a mixed dystrophic and metastatic picture is possible",
                (),
                ("StatPearls", "DermNet"),
            )
            return SubtypeAssessment(Subtype.DYSTROPHIC, Likelihood.POSSIBLE, tuple(causes) + (note,))
        return SubtypeAssessment(
            Subtype.DYSTROPHIC,
            Likelihood.UNLIKELY,
            (
                RuleFinding(
                    "CC-DYS-ABNORMAL",
                    "Calcium or phosphate is raised: dystrophic calcinosis needs normal values",
                    (),
                    ("Reiter-I",),
                    supports=False,
                ),
            ),
        )
    if not gate_ok:
        return SubtypeAssessment(
            Subtype.DYSTROPHIC, Likelihood.UNDETERMINED, tuple(gate) + tuple(causes), tuple(missing)
        )
    assert ctx.calcium is not None
    labs = _labs_normal_statement(ctx)
    if ctx.calcium.status == LOW:
        low = RuleFinding(
            "CC-DYS-LOWCA",
            "Calcium is below the lower limit: not the normal calcium that dystrophic calcinosis requires",
            (lab_evidence(ctx.calcium.calcium),),
            ("Reiter-I",),
            supports=False,
        )
        return SubtypeAssessment(
            Subtype.DYSTROPHIC, Likelihood.POSSIBLE if has_cause else Likelihood.UNLIKELY, (labs, low) + tuple(causes)
        )
    if has_cause:
        return SubtypeAssessment(Subtype.DYSTROPHIC, Likelihood.LIKELY, (labs,) + tuple(causes))
    if iatrogenic.likelihood is Likelihood.LIKELY:
        explained = RuleFinding(
            "CC-DYS-EXPLAINED",
            "No damaging condition is coded and a recent iatrogenic exposure explains the lesion",
            (),
            ("Reiter-I",),
            supports=False,
        )
        return SubtypeAssessment(Subtype.DYSTROPHIC, Likelihood.UNLIKELY, (labs, explained) + tuple(causes))
    no_cause = RuleFinding(
        "CC-DYS-NOCAUSE",
        "No connective tissue disease or other damaging condition is coded; local injury, tumours and infections are rarely coded, so ask about them",
        (),
        ("DermNet", "StatPearls"),
        supports=False,
    )
    return SubtypeAssessment(
        Subtype.DYSTROPHIC,
        Likelihood.POSSIBLE,
        (labs, no_cause) + tuple(causes),
        ("history of local injury, surgery, burns or skin tumour",),
    )


def iatrogenic_exposures(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    """Qualifying exposures (5.4), split into close to onset (strong) and within the window (weak)."""
    onset = ctx.onset() or ctx.as_of
    window_start = onset - timedelta(days=ctx.kb.days("iatrogenic-lookback-days"))
    close_start = onset - timedelta(days=ctx.kb.days("iatrogenic-close-days"))
    strong: list[RuleFinding] = []
    weak: list[RuleFinding] = []
    for medication in ctx.medications(DrugClass.IV_CALCIUM, DrugClass.PARENTERAL_PHOSPHATE):
        when = medication.start
        if when is None or not (window_start <= when <= onset):
            continue
        if medication.drug_class is DrugClass.IV_CALCIUM and not medication.parenteral:
            continue
        label = "IV calcium" if medication.drug_class is DrugClass.IV_CALCIUM else "Parenteral phosphate"
        finding = RuleFinding(
            "CC-IAT-CA" if medication.drug_class is DrugClass.IV_CALCIUM else "CC-IAT-PHOS",
            f"{label} on {when.date().isoformat()}, before calcinosis was recorded (site match not assessable from coded data)",
            (medication_evidence(medication),),
            ("Ca-gluconate", "Reiter-I") if medication.drug_class is DrugClass.IV_CALCIUM else ("DermNet",),
        )
        (strong if when >= close_start and medication.drug_class is DrugClass.IV_CALCIUM else weak).append(finding)
    for procedure in ctx.procedures(ProcedureKind.EEG_EMG):
        when = procedure.start
        if when is not None and window_start <= when <= onset:
            weak.append(
                RuleFinding(
                    "CC-IAT-EEG",
                    f"EEG/EMG on {when.date().isoformat()}: calcium-containing electrode paste can cause calcinosis at electrode sites",
                    (procedure_evidence(procedure),),
                    ("DermNet",),
                )
            )
    age = ctx.findings.age_years_at(onset)
    if age is not None and age < ctx.kb.value("heel-stick-age-years"):
        for procedure in ctx.procedures(ProcedureKind.HEEL_STICK):
            strong.append(
                RuleFinding(
                    "CC-IAT-HEEL",
                    "Heel sticks in infancy: heel-stick calcinosis appears at 4-12 months and resolves by 18-30 months",
                    (procedure_evidence(procedure),),
                    ("Heel-stick", "DermNet"),
                )
            )
    return strong, weak


def assess_iatrogenic(ctx: PatientContext) -> SubtypeAssessment:
    """CC-IAT: a qualifying treatment or procedure before onset (5.4)."""
    strong, weak = iatrogenic_exposures(ctx)
    if strong:
        return SubtypeAssessment(Subtype.IATROGENIC, Likelihood.LIKELY, tuple(strong + weak))
    if weak:
        return SubtypeAssessment(Subtype.IATROGENIC, Likelihood.POSSIBLE, tuple(weak))
    if not ctx.findings.has_medication_data and not ctx.findings.has_procedure_data:
        return SubtypeAssessment(
            Subtype.IATROGENIC,
            Likelihood.UNDETERMINED,
            (
                RuleFinding(
                    "CC-IAT-NODATA",
                    "No medication or procedure data was available to look for exposures",
                    (),
                    ("Reiter-I",),
                    supports=False,
                ),
            ),
            ("medication and procedure history",),
        )
    return SubtypeAssessment(
        Subtype.IATROGENIC,
        Likelihood.UNLIKELY,
        (
            RuleFinding(
                "CC-IAT-NONE",
                "No IV calcium, parenteral phosphate, EEG/EMG or heel-stick exposure found in the "
                f"{ctx.kb.quantity('iatrogenic-lookback-days')} before onset",
                (),
                ("Reiter-I", "DermNet"),
                supports=False,
            ),
        ),
    )


def assess_idiopathic(
    ctx: PatientContext, dystrophic: SubtypeAssessment, metastatic: SubtypeAssessment, iatrogenic: SubtypeAssessment
) -> SubtypeAssessment:
    """CC-IDIO: a diagnosis of exclusion (5.3): normal labs, no cause, no exposure, no CKD G4-G5D."""
    gate_ok, missing, gate = gate_findings(ctx)
    if not gate_ok:
        return SubtypeAssessment(Subtype.IDIOPATHIC, Likelihood.UNDETERMINED, tuple(gate), tuple(missing))
    against: list[RuleFinding] = []
    if metastatic.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE):
        against.append(
            RuleFinding(
                "CC-IDIO-METABOLIC", "Calcium/phosphate metabolism is abnormal", (), ("Reiter-I",), supports=False
            )
        )
    if ctx.calcium is not None and ctx.calcium.status == LOW:
        against.append(
            RuleFinding(
                "CC-IDIO-LOWCA",
                "Calcium is below the lower limit",
                (lab_evidence(ctx.calcium.calcium),),
                ("Reiter-I",),
                supports=False,
            )
        )
    causes = [f for f in dystrophic.findings if f.rule_id == "CC-DYS-CAUSE"]
    if causes:
        against.append(
            RuleFinding(
                "CC-IDIO-CAUSE",
                "A tissue-damaging condition is recorded",
                tuple(e for f in causes for e in f.evidence),
                ("Reiter-I",),
                supports=False,
            )
        )
    if iatrogenic.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE):
        against.append(
            RuleFinding(
                "CC-IDIO-EXPOSURE",
                "A qualifying iatrogenic exposure is recorded",
                tuple(e for f in iatrogenic.findings for e in f.evidence),
                ("Reiter-I",),
                supports=False,
            )
        )
    if ctx.kidney.advanced:
        against.append(
            RuleFinding(
                "CC-IDIO-CKD",
                "Advanced kidney disease (G4-G5D) is recorded",
                ctx.kidney.dialysis_evidence + ctx.kidney.coded_evidence,
                ("Design-GK",),
                supports=False,
            )
        )
    if against:
        return SubtypeAssessment(Subtype.IDIOPATHIC, Likelihood.UNLIKELY, tuple(against))
    exclusion = RuleFinding(
        "CC-IDIO-EXCLUSION",
        "Normal calcium and phosphate, no recorded cause or exposure: idiopathic calcinosis is a diagnosis of exclusion",
        _labs_normal_statement(ctx).evidence,
        ("Reiter-I", "DermNet", "StatPearls"),
    )
    still: list[str] = []
    if iatrogenic.likelihood is Likelihood.UNDETERMINED:
        still.append("medication and procedure history")
    return SubtypeAssessment(Subtype.IDIOPATHIC, Likelihood.POSSIBLE, (exclusion,), tuple(still))


def assess_calciphylaxis(
    ctx: PatientContext, risk_pattern_met: bool, risk_evidence: tuple[Evidence, ...]
) -> SubtypeAssessment:
    """CC-CPX (5.5): coded calciphylaxis; or advanced kidney disease with ischemic lesions or the
    consensus risk pattern. Never more than `possible` without a coded diagnosis."""
    coded = ctx.conditions(ClinicalConcept.CALCIPHYLAXIS)
    active_coded = [c for c in coded if c.active]
    if active_coded:
        return SubtypeAssessment(
            Subtype.CALCIPHYLAXIS,
            Likelihood.LIKELY,
            (
                RuleFinding(
                    "CC-CPX-CODED",
                    "Calciphylaxis is recorded on the problem list",
                    tuple(condition_evidence(c) for c in active_coded),
                    ("Nigwekar-NEJM-2018",),
                ),
            ),
        )
    kidney = ctx.kidney
    lesions = ctx.conditions(ClinicalConcept.ISCHEMIC_SKIN_LESION, active_only=True)
    findings: list[RuleFinding] = []
    if kidney.advanced:
        evidence: tuple[Evidence, ...] = kidney.reading_evidence()
        evidence += kidney.dialysis_evidence + kidney.coded_evidence
        findings.append(
            RuleFinding(
                "CC-CPX-CKD",
                "Advanced kidney disease, dialysis or transplant: the setting of most calciphylaxis",
                evidence,
                ("Nigwekar-NEJM-2018",),
            )
        )
        if lesions:
            findings.append(
                RuleFinding(
                    "CC-CPX-LESION",
                    "Ischemic skin lesion recorded (livedo, retiform purpura, necrotic ulcer or eschar)",
                    tuple(condition_evidence(c) for c in lesions),
                    ("Calciphylaxis-consensus",),
                )
            )
        if risk_pattern_met:
            findings.append(
                RuleFinding(
                    "CC-CPX-RISK",
                    f"Consensus risk pattern met ({ctx.kb.number('calciphylaxis-pattern-major')} major, or 1 major "
                    f"and {ctx.kb.number('calciphylaxis-pattern-minor-with-major')} minor factors)",
                    risk_evidence,
                    ("Calciphylaxis-consensus",),
                )
            )
        if lesions or risk_pattern_met:
            return SubtypeAssessment(
                Subtype.CALCIPHYLAXIS,
                Likelihood.POSSIBLE,
                tuple(findings),
                ("skin examination for painful, livedoid or necrotic lesions",),
            )
        return SubtypeAssessment(
            Subtype.CALCIPHYLAXIS,
            Likelihood.UNLIKELY,
            tuple(findings)
            + (
                RuleFinding(
                    "CC-CPX-NOPATTERN",
                    "No ischemic lesion is coded and the consensus risk pattern is not met",
                    (),
                    ("Calciphylaxis-consensus",),
                    supports=False,
                ),
            ),
        )
    if not kidney.known:
        return SubtypeAssessment(
            Subtype.CALCIPHYLAXIS,
            Likelihood.UNDETERMINED,
            (
                RuleFinding(
                    "CC-CPX-NOKIDNEY",
                    f"Kidney function is unknown (no eGFR in {ctx.kb.quantity('gate-lookback-days')}, "
                    "no CKD, dialysis or transplant record)",
                    (),
                    ("Nigwekar-NEJM-2018",),
                    supports=False,
                ),
            ),
            ("eGFR",),
        )
    if lesions:
        return SubtypeAssessment(
            Subtype.CALCIPHYLAXIS,
            Likelihood.POSSIBLE,
            (
                RuleFinding(
                    "CC-CPX-NONUREMIC",
                    "Ischemic skin lesion without advanced kidney disease: non-uremic calciphylaxis is rare but reported",
                    tuple(condition_evidence(c) for c in lesions),
                    ("Nigwekar-2008",),
                ),
            ),
        )
    return SubtypeAssessment(
        Subtype.CALCIPHYLAXIS,
        Likelihood.UNLIKELY,
        (
            RuleFinding(
                "CC-CPX-NOCKD",
                "No advanced kidney disease and no ischemic skin lesion recorded; non-uremic calciphylaxis is rare",
                (),
                ("Nigwekar-2008",),
                supports=False,
            ),
        ),
    )
