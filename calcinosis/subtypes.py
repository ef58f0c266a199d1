"""Subtype rules (clinical-knowledge.md section 5): one function per subtype, each returning the
likelihood with the rule findings that produced it.

Rule ids are stable (CC-DYS-*, CC-MET-*, CC-IDIO-*, CC-IAT-*, CC-CPX-*, CC-GATE) because cards,
feedback and audits refer to them. Every finding cites its sources by key from sources.json.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from calcinosis.assessment import (
    CalciphylaxisRisk,
    CalciphylaxisSignal,
    CalciphylaxisStatus,
    Comparison,
    Evidence,
    IdiopathicEntity,
    Likelihood,
    RiskFactor,
    RuleFinding,
    Subtype,
    SubtypeAssessment,
)
from calcinosis.causes import supported_causes
from calcinosis.context import (
    HIGH,
    LOW,
    NORMAL,
    PatientContext,
    cite_medications,
    condition_evidence,
    lab_evidence,
    medication_evidence,
    procedure_evidence,
)
from calcinosis.derived import is_below
from calcinosis.distribution import body_regions, compare_sites
from calcinosis.findings import Analyte, ClinicalConcept, ConditionFinding, DrugClass, ProcedureKind, Sex

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
    """The causes the record supports (`calcinosis.causes`), as rule findings."""
    return [cause.finding for cause in supported_causes(ctx)]


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


def _lesion_sites(ctx: PatientContext) -> tuple[tuple[str, ...], frozenset[str]]:
    """Where the calcinosis is: its recorded body sites (or the entry's words), and SNOMED codes."""
    entries = ctx.conditions(
        ClinicalConcept.CALCINOSIS_CUTIS,
        ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA,
        ClinicalConcept.CALCINOSIS_UNIVERSALIS,
    )
    texts: list[str] = []
    for entry in entries:
        texts.extend(entry.body_sites or ((entry.text,) if entry.text else ()))
    return tuple(texts), frozenset(code for entry in entries for code in entry.body_site_codes)


def site_match(ctx: PatientContext, texts: tuple[str, ...], codes: tuple[str, ...]) -> tuple[bool | None, str]:
    """Whether an exposure's site (MedicationAdministration.dosage.site, Procedure.bodySite) is
    where the calcinosis is (5.4): the same SNOMED CT site, else the same body region and side
    from the texts. Returns the outcome and the words for it."""
    lesion_texts, lesion_codes = _lesion_sites(ctx)
    if lesion_codes & set(codes):
        return True, "at the same coded site as the calcinosis"
    outcome = compare_sites(texts, lesion_texts)
    where = ", ".join(texts)
    if outcome is True:
        return True, f"at the site of the calcinosis ({where})"
    if outcome is False:
        return False, f"at a different site ({where}) from the calcinosis"
    return None, "site not recorded for both, so a match cannot be assessed"


def iatrogenic_exposures(ctx: PatientContext) -> tuple[list[RuleFinding], list[RuleFinding]]:
    """Qualifying exposures (5.4), split into strong and weak support. An exposure close to onset
    is strong, within the window weak; a site matching the calcinosis raises it to strong, a site
    that differs lowers it one step (a weak one then no longer counts, and is reported against)."""
    onset = ctx.onset() or ctx.as_of
    window_start = onset - timedelta(days=ctx.kb.days("iatrogenic-lookback-days"))
    close_start = onset - timedelta(days=ctx.kb.days("iatrogenic-close-days"))
    strong: list[RuleFinding] = []
    weak: list[RuleFinding] = []

    def place(finding: RuleFinding, close: bool, match: bool | None) -> None:
        if match is True or (close and match is None):
            strong.append(finding)
        elif close or match is None:
            weak.append(finding)
        else:
            weak_against.append(replace(finding, supports=False))

    weak_against: list[RuleFinding] = []
    for medication in ctx.medications(DrugClass.IV_CALCIUM, DrugClass.PARENTERAL_PHOSPHATE):
        when = medication.start
        if when is None or not (window_start <= when <= onset):
            continue
        if medication.drug_class is DrugClass.IV_CALCIUM and not medication.parenteral:
            continue
        iv_calcium = medication.drug_class is DrugClass.IV_CALCIUM
        label = "IV calcium" if iv_calcium else "Parenteral phosphate"
        match, words = site_match(
            ctx, (medication.site,) if medication.site else (), (medication.site_code,) if medication.site_code else ()
        )
        finding = RuleFinding(
            "CC-IAT-CA" if iv_calcium else "CC-IAT-PHOS",
            f"{label} on {when.date().isoformat()}, before calcinosis was recorded, {words}",
            (medication_evidence(medication),),
            ("Ca-gluconate", "Reiter-I") if iv_calcium else ("DermNet",),
        )
        place(finding, when >= close_start and iv_calcium, match)
    for procedure in ctx.procedures(ProcedureKind.EEG_EMG):
        when = procedure.start
        if when is not None and window_start <= when <= onset:
            match, words = site_match(ctx, procedure.body_sites, procedure.body_site_codes)
            finding = RuleFinding(
                "CC-IAT-EEG",
                f"EEG/EMG on {when.date().isoformat()}: calcium-containing electrode paste can cause calcinosis at "
                f"electrode sites; {words}",
                (procedure_evidence(procedure),),
                ("DermNet",),
            )
            place(finding, False, match)
    age = ctx.findings.age_years_at(onset)
    if age is not None and age < ctx.kb.value("heel-stick-age-years"):
        for procedure in ctx.procedures(ProcedureKind.HEEL_STICK):
            strong.append(
                RuleFinding(
                    "CC-IAT-HEEL",
                    ctx.kb.phrase(
                        "Heel sticks in infancy: heel-stick calcinosis appears at {heel-stick-onset-months-from#}-"
                        "{heel-stick-onset-months-to} and resolves by {heel-stick-resolution-months-from#}-"
                        "{heel-stick-resolution-months-to}"
                    ),
                    (procedure_evidence(procedure),),
                    ctx.kb.threshold("heel-stick-onset-months-from").sources,
                )
            )
    return strong, weak + weak_against


def assess_iatrogenic(ctx: PatientContext) -> SubtypeAssessment:
    """CC-IAT: a qualifying treatment or procedure before onset (5.4)."""
    strong, weak = iatrogenic_exposures(ctx)
    if strong:
        return SubtypeAssessment(Subtype.IATROGENIC, Likelihood.LIKELY, tuple(strong + weak))
    if any(f.supports for f in weak):
        return SubtypeAssessment(Subtype.IATROGENIC, Likelihood.POSSIBLE, tuple(weak))
    if weak:
        return SubtypeAssessment(Subtype.IATROGENIC, Likelihood.UNLIKELY, tuple(weak))
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


def idiopathic_entities(ctx: PatientContext) -> tuple[IdiopathicEntity, ...]:
    """Recognised idiopathic entities whose picture fits (clinical-knowledge.md 5.3), from the
    calcinosis sites and words, sex and age: idiopathic scrotal (or vulvar) calcinosis, the
    subepidermal calcified nodule, milia-like idiopathic calcinosis cutis (a child with Down
    syndrome, or recorded as milia-like), and normophosphatemic tumoral calcinosis. hFTC, with its
    high phosphate, is a differential instead (section 8)."""
    texts, _ = _lesion_sites(ctx)
    entries = ctx.conditions(ClinicalConcept.CALCINOSIS_CUTIS, ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA)
    words = " ".join(texts + tuple(c.text or c.source.display or "" for c in entries)).lower()
    regions = set().union(*(body_regions(t) for t in texts)) if texts else set()
    sex = ctx.findings.sex
    onset = ctx.onset() or ctx.as_of
    age = ctx.age_at(onset)
    evidence = tuple(condition_evidence(c) for c in entries[:2])
    sources = ("StatPearls", "DermNet")
    found: list[IdiopathicEntity] = []

    def add(
        entity_id: str, label: str, why: str, more: tuple[Evidence, ...] = (), cited: tuple[str, ...] = sources
    ) -> None:
        finding = RuleFinding("CC-IDIO-ENTITY", f"{label}: {why}", evidence + more, cited)
        found.append(IdiopathicEntity(entity_id, label, finding))

    if "scrot" in words and sex is not Sex.FEMALE:
        add("idiopathic-scrotal-calcinosis", "Idiopathic scrotal calcinosis", "scrotal nodules with normal labs")
    if "vulv" in words and sex is not Sex.MALE:
        add("idiopathic-vulvar-calcinosis", "Idiopathic vulvar calcinosis", "vulvar nodules with normal labs")
    child = age is not None and age < ctx.kb.value("adult-age-years")
    if "subepidermal calcified nodule" in words or (child and regions == {"head and neck"}):
        add(
            "subepidermal-calcified-nodule",
            "Subepidermal calcified nodule",
            "a solitary nodule of the head or neck in a child" if child else "recorded as such",
        )
    down = ctx.conditions(ClinicalConcept.DOWN_SYNDROME)
    if "milia-like" in words or "milia like" in words or (child and down):
        add(
            "milia-like-idiopathic-calcinosis",
            "Milia-like idiopathic calcinosis cutis",
            "a child with Down syndrome" if child and down else "recorded as milia-like",
            tuple(condition_evidence(c) for c in down[:1]),
            ("regionalderm",),
        )
    periarticular = any(w in words for w in ("periarticular", "tumoral", "hip", "shoulder", "elbow"))
    if periarticular and ctx.phosphate is not None and ctx.phosphate.status == NORMAL:
        add("tumoral-calcinosis", "Tumoral calcinosis (normal phosphate)", "periarticular masses with normal phosphate")
    return tuple(found)


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
    entities = tuple(entity.finding for entity in idiopathic_entities(ctx))
    return SubtypeAssessment(Subtype.IDIOPATHIC, Likelihood.POSSIBLE, (exclusion, *entities), tuple(still))


NON_UREMIC_CONCEPTS = (
    (ClinicalConcept.HYPERPARATHYROIDISM_PRIMARY, "primary-hyperparathyroidism", "Primary hyperparathyroidism"),
    (ClinicalConcept.MALIGNANCY, "malignancy", "Malignancy"),
    (ClinicalConcept.MULTIPLE_MYELOMA, "multiple-myeloma", "Multiple myeloma"),
    (ClinicalConcept.LIVER_CIRRHOSIS, "liver-disease", "Alcoholic liver disease or cirrhosis"),
    (ClinicalConcept.PROTEIN_C_S_DEFICIENCY, "protein-c-s-deficiency", "Protein C or S deficiency"),
    (ClinicalConcept.OBESITY, "obesity", "Obesity"),
)
NON_UREMIC_SOURCES = ("Nigwekar-2008", "Kalajian-2009")
LESION_STATEMENT = "Ischemic or necrotic skin lesion recorded (livedo, retiform purpura, necrotic ulcer or eschar)"
LESION_HINT = "skin examination for painful, livedoid or necrotic lesions"


def non_uremic_factors(ctx: PatientContext) -> tuple[RiskFactor, ...]:
    """Predisposing features of non-uremic calciphylaxis found in the record (5.5.3)."""
    factors: list[RiskFactor] = []
    for concept, factor_id, label in NON_UREMIC_CONCEPTS + tuple(
        (c, "connective-tissue-disease", "Connective tissue disease") for c in ACTD
    ):
        found = ctx.conditions(concept, active_only=True)
        if found and factor_id not in {f.factor_id for f in factors}:
            factors.append(
                RiskFactor(
                    factor_id, label, "non-uremic", tuple(condition_evidence(c) for c in found[:2]), NON_UREMIC_SOURCES
                )
            )
    for drug_classes, factor_id, label in (
        ((DrugClass.GLUCOCORTICOID,), "glucocorticoids", "Systemic glucocorticoids"),
        ((DrugClass.WARFARIN,), "vitamin-k-antagonist", "Warfarin (vitamin K antagonist)"),
    ):
        taken = [m for m in ctx.medications(*drug_classes) if m.status not in ("entered-in-error", "cancelled")]
        if taken:
            factors.append(
                RiskFactor(factor_id, label, "non-uremic", cite_medications(taken, limit=2), NON_UREMIC_SOURCES)
            )
    albumin = ctx.latest(Analyte.ALBUMIN, ctx.gate_start)
    if (
        albumin is not None
        and albumin.value is not None
        and is_below(albumin.value, albumin.comparator, ctx.kb.value("albumin-low"))
    ):
        factors.append(
            RiskFactor(
                "hypoalbuminemia",
                f"Albumin {albumin.reported}",
                "non-uremic",
                (lab_evidence(albumin),),
                NON_UREMIC_SOURCES,
            )
        )
    if ctx.findings.sex is Sex.FEMALE:
        factors.append(
            RiskFactor(
                "female-sex", "Female sex (most non-uremic cases are women)", "non-uremic", (), ("Nigwekar-2008",)
            )
        )
    return tuple(factors)


def assess_calciphylaxis(ctx: PatientContext, risk: CalciphylaxisRisk) -> tuple[SubtypeAssessment, CalciphylaxisSignal]:
    """CC-CPX (5.5) and the calciphylaxis signal (see `CalciphylaxisSignal`).

    Coded calciphylaxis is `likely` (recorded) or, when coded as provisional or differential,
    `possible` (suspected). Typical ischemic or necrotic lesions make it suspected: `likely` in the
    uremic setting with the consensus risk pattern or a major factor (the consensus "clinical
    diagnosis" tier needs a risk factor and typical lesions), `possible` otherwise, including the
    non-uremic setting of 5.5.3. The risk pattern without lesions is only an elevated risk and
    leaves the subtype `unlikely`: a risk is not a lesion."""
    kidney = ctx.kidney
    lesions = tuple(
        condition_evidence(c) for c in ctx.conditions(ClinicalConcept.ISCHEMIC_SKIN_LESION, active_only=True)
    )
    uremic = kidney.advanced
    coded = [c for c in ctx.conditions(ClinicalConcept.CALCIPHYLAXIS) if c.active]
    # The predisposing features of 5.5.3 matter only where calciphylaxis is in question.
    nonuremic = non_uremic_factors(ctx) if not uremic and (lesions or coded) else ()
    setting = "uremic" if uremic else ("non-uremic" if lesions else None)
    if coded:
        confirmed = [c for c in coded if not c.suspected]
        status = CalciphylaxisStatus.RECORDED if confirmed else CalciphylaxisStatus.SUSPECTED
        statement = (
            "Calciphylaxis is recorded on the problem list"
            if confirmed
            else "Calciphylaxis is recorded as suspected (provisional or differential) on the problem list"
        )
        findings = [
            RuleFinding("CC-CPX-CODED", statement, tuple(condition_evidence(c) for c in coded), ("Nigwekar-NEJM-2018",))
        ]
        if lesions:
            findings.append(RuleFinding("CC-CPX-LESION", LESION_STATEMENT, lesions, ("Calciphylaxis-consensus",)))
        signal = CalciphylaxisSignal(
            status, setting or ("non-uremic" if kidney.known and not uremic else None), lesions, True, False, nonuremic
        )
        likelihood = Likelihood.LIKELY if confirmed else Likelihood.POSSIBLE
        return SubtypeAssessment(Subtype.CALCIPHYLAXIS, likelihood, tuple(findings)), signal
    findings = []
    if uremic:
        findings.append(
            RuleFinding(
                "CC-CPX-CKD",
                "Advanced kidney disease, dialysis or transplant: the setting of most calciphylaxis",
                kidney.reading_evidence() + kidney.dialysis_evidence + kidney.coded_evidence,
                ("Nigwekar-NEJM-2018",),
            )
        )
    if lesions:
        findings.append(RuleFinding("CC-CPX-LESION", LESION_STATEMENT, lesions, ("Calciphylaxis-consensus",)))
        if uremic:
            if risk.pattern == "met" or risk.major:
                findings.append(
                    RuleFinding(
                        "CC-CPX-RISK",
                        "Consensus risk pattern met"
                        if risk.pattern == "met"
                        else "Major calciphylaxis risk factor on record",
                        tuple(e for f in risk.major + risk.minor for e in f.evidence),
                        ("Calciphylaxis-consensus",),
                    )
                )
                likelihood = Likelihood.LIKELY
            else:
                likelihood = Likelihood.POSSIBLE
        else:
            findings.append(
                RuleFinding(
                    "CC-CPX-NONUREMIC",
                    (
                        # One eGFR in G4-G5 is not advanced CKD without chronicity (2.3), but say so.
                        "Ischemic skin lesion with an eGFR in the G4-G5 range whose chronicity the record does "
                        "not show: non-uremic calciphylaxis is rare but reported"
                        if kidney.category in ("G4", "G5")
                        else "Ischemic skin lesion without advanced kidney disease: non-uremic calciphylaxis is rare "
                        "but reported"
                    )
                    + (f" ({', '.join(f.label.lower() for f in nonuremic[:4])} on record)" if nonuremic else ""),
                    lesions + tuple(e for f in nonuremic for e in f.evidence),
                    ("Nigwekar-2008", "Kalajian-2009"),
                )
            )
            likelihood = Likelihood.POSSIBLE
        signal = CalciphylaxisSignal(CalciphylaxisStatus.SUSPECTED, setting, lesions, True, False, nonuremic)
        return SubtypeAssessment(Subtype.CALCIPHYLAXIS, likelihood, tuple(findings)), signal
    risk_section = kidney.on_dialysis or kidney.advanced
    if risk.pattern == "met":
        findings.append(
            RuleFinding(
                "CC-CPX-ELEVATED-RISK",
                "Consensus risk pattern met without any ischemic skin lesion recorded: elevated calciphylaxis risk, not a diagnosis",
                tuple(e for f in risk.major + risk.minor for e in f.evidence),
                ("Calciphylaxis-consensus",),
                supports=False,
            )
        )
        signal = CalciphylaxisSignal(CalciphylaxisStatus.ELEVATED_RISK, setting, (), True, True)
        return (
            SubtypeAssessment(Subtype.CALCIPHYLAXIS, Likelihood.UNLIKELY, tuple(findings), (LESION_HINT,)),
            signal,
        )
    if uremic:
        findings.append(
            RuleFinding(
                "CC-CPX-NOPATTERN",
                "No ischemic lesion is coded and the consensus risk pattern is not met",
                (),
                ("Calciphylaxis-consensus",),
                supports=False,
            )
        )
        signal = CalciphylaxisSignal(CalciphylaxisStatus.NOT_SUSPECTED, setting, (), risk_section, False)
        return SubtypeAssessment(Subtype.CALCIPHYLAXIS, Likelihood.UNLIKELY, tuple(findings)), signal
    if not kidney.known:
        finding = RuleFinding(
            "CC-CPX-NOKIDNEY",
            f"Kidney function is unknown (no eGFR or creatinine in {ctx.kb.quantity('gate-lookback-days')}, "
            "no CKD, dialysis or transplant record)",
            (),
            ("Nigwekar-NEJM-2018",),
            supports=False,
        )
        signal = CalciphylaxisSignal(CalciphylaxisStatus.UNKNOWN, None, (), False, False)
        return SubtypeAssessment(
            Subtype.CALCIPHYLAXIS, Likelihood.UNDETERMINED, (finding,), ("eGFR or creatinine",)
        ), signal
    finding = RuleFinding(
        "CC-CPX-NOCKD",
        "No advanced kidney disease and no ischemic skin lesion recorded; non-uremic calciphylaxis is rare",
        (),
        ("Nigwekar-2008",),
        supports=False,
    )
    signal = CalciphylaxisSignal(CalciphylaxisStatus.NOT_SUSPECTED, None, (), False, False)
    return SubtypeAssessment(Subtype.CALCIPHYLAXIS, Likelihood.UNLIKELY, (finding,)), signal
