"""What the cards say: the clinical statements, decided here from the assessment and the knowledge
base (clinical-knowledge.md 11.3 and 11.4). `hooks.cards` only lays them out as CDS Hooks JSON and
markdown; a clinician reads this module to know what a card will say.

A card is read in a narrow side panel in about ten seconds, so each statement has:
- a summary (under 140 characters, cut at a word boundary) naming the most urgent pattern:
  suspected calciphylaxis first, then severe hypercalcemia, then the best-supported subtype;
- a short first screen: the pattern, its two or three strongest pieces of evidence as the lab
  reported them (its unit and range, a converted value in brackets), what is missing, and the one
  next step, and the biopsy caution where it applies;
- further lines, shown only while the card stays within the detail budget.

Nothing internal is stated: no record or rule ids, evidence tags or notes about the knowledge
base. Those travel in the card's extension (see `hooks.cards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from calcinosis.assessment import (
    Assessment,
    CalciphylaxisStatus,
    DerivedValue,
    DifferentialAssessment,
    Evidence,
    Likelihood,
    MetabolicCause,
    RiskFactor,
    Subtype,
    SubtypeAssessment,
    WorkupGap,
)
from calcinosis.context import METHOD_REPORTED
from calcinosis.knowledge_base import KnowledgeBase, display_unit

SUMMARY_LIMIT = 139
"""CDS Hooks: a summary is under 140 characters."""
DETAIL_BUDGET = 1500
"""Characters of a card's detail (clinical-knowledge.md 11.4: a short card; the rest is in the extension)."""
EVIDENCE_LINE_LIMIT = 300
"""Characters of one line of a card's first screen (longer lines are cut at a word boundary)."""
DEFAULT_WORKUP_CAP = 5
"""Workup suggestions with a button (about five, 11.4); the rest are listed without one."""

SUBTYPE_NAMES = {
    Subtype.DYSTROPHIC: "dystrophic calcinosis",
    Subtype.METASTATIC: "metastatic calcification",
    Subtype.IDIOPATHIC: "idiopathic calcinosis",
    Subtype.IATROGENIC: "iatrogenic calcinosis",
    Subtype.CALCIPHYLAXIS: "calciphylaxis",
}
PRIORITY = (Subtype.CALCIPHYLAXIS, Subtype.METASTATIC, Subtype.IATROGENIC, Subtype.DYSTROPHIC, Subtype.IDIOPATHIC)
RANK = {Likelihood.LIKELY: 0, Likelihood.POSSIBLE: 1, Likelihood.UNLIKELY: 2, Likelihood.UNDETERMINED: 3}
SUSPECTED = (Likelihood.LIKELY, Likelihood.POSSIBLE)

#: Rules whose firing means calciphylaxis is suspected, not merely a risk (coded, or skin lesions).
CALCIPHYLAXIS_SIGNALS = frozenset({"CC-CPX-CODED", "CC-CPX-LESION", "CC-CPX-NONUREMIC"})

#: Short names of what the record holds, instead of LOINC long names.
SHORT_NAMES = {
    "calcium-total": "Calcium",
    "calcium-ionized": "Ionized calcium",
    "albumin": "Albumin",
    "phosphate": "Phosphate",
    "pth-intact": "PTH",
    "vitamin-d-25oh": "25-OH vitamin D",
    "vitamin-d-1-25": "1,25-(OH)₂ vitamin D",
    "creatinine": "Creatinine",
    "egfr": "eGFR",
    "alkaline-phosphatase": "Alkaline phosphatase",
    "magnesium": "Magnesium",
    "uric-acid": "Uric acid",
    "cholesterol-total": "Total cholesterol",
    "ldl-cholesterol": "LDL cholesterol",
    "triglycerides": "Triglycerides",
    "bmi": "BMI",
    "creatine-kinase": "Creatine kinase",
    "urine-calcium-24h": "24-hour urine calcium",
    "bicarbonate": "Bicarbonate",
}

#: Which workup yields most for this picture: items for the leading pattern first, then the labs
#: that classify, then causes, then mimics, imaging last within each group (clinical-knowledge.md
#: 5.7 evaluation order and 6).
TRIGGER_YIELD = (
    "calciphylaxis-suspected",
    "always",
    "hypercalcemia-low-pth",
    "hypercalcemia-pth-not-low",
    "hypercalcemia",
    "hypercalcemia-or-hyperphosphatemia",
    "metabolic",
    "suspected-ctd",
    "gout-raised",
    "xanthoma-raised",
    "diagnosis-uncertain",
)


@dataclass(frozen=True, slots=True)
class Statement:
    """The words of one card, in reading order."""

    topic: str
    indicator: str
    summary: str
    headline: str
    evidence: tuple[str, ...]
    pattern: str = ""
    """The pattern the summary names (it leads the summary, so no cut can remove it)."""
    missing: str | None = None
    next_step: str | None = None
    caution: str | None = None
    further: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkupStatement:
    """The workup card: the ranked suggestions with a button, the rest without, and what is withheld."""

    statement: Statement
    orders: tuple[WorkupGap, ...]
    later: tuple[WorkupGap, ...]


@dataclass(frozen=True, slots=True)
class CardStatements:
    """Everything the cards of one assessment say."""

    subtype: Statement
    workup: WorkupStatement | None
    differentials: Statement | None
    differentials_shown: tuple[DifferentialAssessment, ...]


# ----- wording helpers ---------------------------------------------------------------------------


def shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """Cut at a word boundary (preferring a clause boundary) and mark the cut with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    for mark in (": ", "; ", ", ", " "):
        at = cut.rfind(mark)
        if at >= limit // 2:
            return cut[:at].rstrip(",;:- ") + "…"
    return cut.rsplit(" ", 1)[0].rstrip(",;:- ") + "…"


def day(value: datetime | None) -> str:
    """'28 Nov 2026' (unambiguous in every locale); 'date not recorded' without a date."""
    if value is None:
        return "date not recorded"
    return f"{value.day} {value:%b %Y}"


def converted(value: float) -> str:
    """A converted value at the precision a clinician reads it: 7.9, 9.6, 780, 0.85."""
    if not math.isfinite(value):
        return "?"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _unit_of(reported: str) -> tuple[str, str]:
    """('2.55', 'mmol/L') from '2.55 mmol/L'."""
    number, _, unit = reported.partition(" ")
    return number, unit


def as_reported(evidence: Evidence) -> str:
    """The value as the lab reported it, in its unit spelled one way, with the converted value in
    brackets when the rules read it in another unit: "2.55 mmol/L (7.9 mg/dL)"."""
    if not evidence.reported:
        return ""
    number, unit = _unit_of(evidence.reported)
    text = f"{number} {display_unit(unit)}".strip()
    if (
        evidence.value is not None
        and evidence.unit
        and evidence.reported_unit is not None
        and evidence.reported_unit != evidence.unit
        and display_unit(evidence.reported_unit) != display_unit(evidence.unit)
    ):
        text += f" ({converted(evidence.value)} {display_unit(evidence.unit)})"
    return text


def lab_range(evidence: Evidence) -> str:
    """The lab's own range in its own unit, or '' when the lab gave none."""
    if not evidence.reported_range:
        return ""
    number, unit = _unit_of(evidence.reported_range)
    return f"{number} {display_unit(unit)}".strip()


def name_of(evidence: Evidence) -> str:
    """A short name ("Phosphate", "Gout"), never a LOINC long name."""
    if evidence.kind in SHORT_NAMES:
        return SHORT_NAMES[evidence.kind]
    return evidence.display or "Record entry"


def lab_line(evidence: Evidence, verdict: str = "") -> str:
    """ "Phosphate 2.55 mmol/L (7.9 mg/dL), above the lab's range 0.81-1.45 mmol/L, 28 Nov 2026"."""
    parts = [f"{name_of(evidence)} {as_reported(evidence)}".strip()]
    ranged = lab_range(evidence)
    if verdict and ranged:
        parts.append(f"{verdict} the lab's range {ranged}")
    elif verdict:
        parts.append(verdict)
    elif ranged:
        parts.append(f"range {ranged}")
    parts.append(day(evidence.date))
    return ", ".join(parts)


def record_line(evidence: Evidence, prefix: str = "") -> str:
    """A condition, medication or procedure: its name and when it was recorded."""
    name = evidence.display or "Record entry"
    return f"{prefix}{name}, {'since' if evidence.date else ''} {day(evidence.date)}".replace(",  ", ", ")


def lower_first(text: str) -> str:
    """A statement continued mid-sentence: "Gout recorded" -> "gout recorded", but acronyms and
    units keep their case ("IV calcium", "PTH 1240 pg/mL", "CKD G4")."""
    if not text or (len(text) > 1 and (text[1].isupper() or text[1].isdigit())):
        return text
    return text[0].lower() + text[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ----- what the assessment means -----------------------------------------------------------------


def suspected_calciphylaxis(assessment: Assessment) -> bool:
    """Calciphylaxis coded, or ischemic or necrotic skin lesions in its setting (5.5): the headline
    of a warning card. A risk pattern alone is "elevated calciphylaxis risk" (9), not this."""
    signal = assessment.calciphylaxis
    if signal is not None:
        return signal.status in (CalciphylaxisStatus.SUSPECTED, CalciphylaxisStatus.RECORDED)
    cpx = assessment.subtype(Subtype.CALCIPHYLAXIS)
    if cpx.likelihood is Likelihood.LIKELY:
        return True
    return cpx.likelihood is Likelihood.POSSIBLE and any(f.rule_id in CALCIPHYLAXIS_SIGNALS for f in cpx.findings)


def elevated_calciphylaxis_risk(assessment: Assessment) -> bool:
    """The consensus risk pattern without skin findings (an info item, never a warning)."""
    signal = assessment.calciphylaxis
    if signal is not None:
        return signal.status is CalciphylaxisStatus.ELEVATED_RISK
    return assessment.calciphylaxis_risk.pattern == "met" and not suspected_calciphylaxis(assessment)


def risk_factors_apply(assessment: Assessment) -> bool:
    """Risk factors are shown on dialysis, in CKD G4-G5 or when calciphylaxis is suspected (11.4).
    CKD G4-G5 means established CKD (KDIGO chronicity, a coded stage; 2.3), not one low eGFR."""
    if suspected_calciphylaxis(assessment) or assessment.calciphylaxis_risk.on_dialysis:
        return True
    ckd = assessment.derived_value("ckd-stage")
    if ckd is None or not ckd.ckd_established:
        return False
    return (ckd.category or "").startswith(("G4", "G5"))


def leading_subtype(assessment: Assessment) -> SubtypeAssessment | None:
    """The best-supported subtype (likely before possible; ties by clinical priority)."""
    ranked = sorted(
        (s for s in assessment.subtypes if s.likelihood in SUSPECTED),
        key=lambda s: (RANK[s.likelihood], PRIORITY.index(s.subtype)),
    )
    return ranked[0] if ranked else None


def indicator(assessment: Assessment) -> str:
    """`warning` for suspected calciphylaxis or severe hypercalcemia (11.2); `info` otherwise.
    `critical` is never used."""
    return "warning" if suspected_calciphylaxis(assessment) or assessment.severe_hypercalcemia else "info"


def _classifying_calcium(assessment: Assessment) -> tuple[str, DerivedValue, float] | None:
    """The calcium reading that classified the patient (name, value, its number): corrected, else
    ionized, else total."""
    for name in ("corrected-calcium", "ionized-calcium", "total-calcium"):
        derived = assessment.derived_value(name)
        if derived is not None and derived.value is not None and derived.inputs:
            return name, derived, derived.value
    return None


def _calcium_line(assessment: Assessment, kb: KnowledgeBase) -> str | None:
    """The calcium that classified the patient, as reported, with the corrected value if any."""
    reading = _classifying_calcium(assessment)
    if reading is None:
        return None
    name, derived, value = reading
    calcium = derived.inputs[0]
    verdict = {"high": "above", "low": "below", "normal": "within"}.get(derived.category or "", "")
    if name == "corrected-calcium" and len(derived.inputs) > 1:
        albumin = derived.inputs[1]
        return (
            f"Corrected calcium {converted(value)} mg/dL"
            + (f" ({verdict} range)" if verdict else "")
            + f", from calcium {as_reported(calcium)} and albumin {as_reported(albumin)}, {day(calcium.date)}"
        )
    return lab_line(calcium, f"{verdict}" if verdict and not lab_range(calcium) else verdict)


def _caxp_line(assessment: Assessment, kb: KnowledgeBase) -> str | None:
    caxp = assessment.derived_value("calcium-phosphate-product")
    if caxp is None or caxp.value is None:
        return None
    above = any(c.threshold == "caxp-metastatic" and c.outcome == "above" for c in caxp.comparisons)
    relation = "above" if above else "not above"
    return f"Ca x P {converted(caxp.value)} {display_unit('mg2/dL2')} ({relation} {kb.number('caxp-metastatic')}), {day(caxp.date)}"


#: Causes of 5.2 named in a metastatic summary ("..., possibly from milk-alkali syndrome"). CKD-MBD is
#: not: the summary already says "on dialysis" or "in CKD G4", and its line is in the detail.
CAUSE_NAMES = {
    MetabolicCause.PRIMARY_HYPERPARATHYROIDISM: "primary hyperparathyroidism",
    MetabolicCause.TERTIARY_HYPERPARATHYROIDISM: "tertiary hyperparathyroidism",
    MetabolicCause.MALIGNANCY: "hypercalcemia of malignancy",
    MetabolicCause.VITAMIN_D_TOXICITY: "vitamin D toxicity",
    MetabolicCause.GRANULOMATOUS: "granulomatous disease",
    MetabolicCause.MILK_ALKALI: "milk-alkali syndrome",
    MetabolicCause.HYPOPARATHYROIDISM: "hypoparathyroidism",
    MetabolicCause.TUMOR_LYSIS: "tumor lysis",
}


def _cause_line(assessment: Assessment) -> str | None:
    """The first cause of abnormal calcium or phosphate the record supports (5.2), as its finding
    states it ("... with a suppressed PTH in a recorded malignancy: hypercalcemia of malignancy")."""
    return assessment.causes[0].finding.statement if assessment.causes else None


def _cause_name(assessment: Assessment) -> str | None:
    for cause in assessment.causes:
        if cause.cause in CAUSE_NAMES:
            return CAUSE_NAMES[cause.cause]
    return None


def _calcium_words(assessment: Assessment) -> str:
    """'corrected calcium 12.6 mg/dL', 'ionized calcium 1.46 mmol/L', 'calcium 2.81 mmol/L'."""
    reading = _classifying_calcium(assessment)
    if reading is None:
        return "raised calcium"
    name, derived, value = reading
    if name == "corrected-calcium":
        return f"corrected calcium {converted(value)} mg/dL"
    label = "ionized calcium" if name == "ionized-calcium" else "calcium"
    number, unit = _unit_of(derived.inputs[0].reported or "")
    return f"{label} {number} {display_unit(unit)}".strip()


def _phosphate_evidence(assessment: Assessment) -> Evidence | None:
    caxp = assessment.derived_value("calcium-phosphate-product")
    if caxp is not None:
        for evidence in caxp.inputs:
            if evidence.kind == "phosphate":
                return evidence
    for subtype in assessment.subtypes:
        for finding in subtype.findings:
            for evidence in finding.evidence:
                if evidence.kind == "phosphate":
                    return evidence
    return None


def _finding(subtype: SubtypeAssessment, *rule_ids: str) -> list[str]:
    return [f.statement for f in subtype.findings if f.rule_id in rule_ids]


def _first_evidence(subtype: SubtypeAssessment, *rule_ids: str) -> list[Evidence]:
    return [e for f in subtype.findings if f.rule_id in rule_ids for e in f.evidence]


def _risk_summary(factors: tuple[RiskFactor, ...]) -> str:
    return "; ".join(factor.label for factor in factors)


def _kidney_setting(assessment: Assessment) -> str:
    """'on dialysis', 'in CKD G4', 'with eGFR 52' or ''.

    "CKD" only when it is established (KDIGO's 3-month chronicity, a coded stage or a transplant,
    clinical-knowledge.md 2.3): one reduced eGFR, reported or estimated, is stated as the eGFR it
    is, never as chronic kidney disease."""
    if assessment.calciphylaxis_risk.on_dialysis:
        return "on dialysis"
    ckd = assessment.derived_value("ckd-stage")
    if ckd is None or not ckd.category or not ckd.category.startswith(("G3", "G4", "G5")):
        return ""
    if ckd.ckd_established:
        return f"in CKD {ckd.category.split(' ')[0]}"
    if ckd.value is not None:
        return f"with {'estimated ' if _estimated(ckd) else ''}eGFR {ckd.value:.0f}"
    return "with reduced kidney function"


def _estimated(ckd: DerivedValue) -> bool:
    """The eGFR was computed here from a creatinine (an equation is named), not reported by the lab."""
    return ckd.method is not None and ckd.method != METHOD_REPORTED


def kidney_line(assessment: Assessment) -> str | None:
    """The eGFR a statement rests on, with where it came from (clinical-knowledge.md 2.3a: the card
    says which equation produced a number it shows): "eGFR 48 mL/min/1.73 m² (estimated from
    creatinine 1.6 mg/dL, CKD-EPI 2021), 27 Oct 2026"; a reported eGFR as the lab reported it,
    never labelled as estimated. None when no eGFR is known."""
    ckd = assessment.derived_value("ckd-stage")
    if ckd is None or ckd.value is None:
        return None
    if not _estimated(ckd):
        egfr = next((e for e in ckd.inputs if e.kind == "egfr"), None)
        return lab_line(egfr) if egfr is not None else None
    creatinine = next((e for e in ckd.inputs if e.kind == "creatinine"), None)
    if creatinine is None:
        return None
    basis = f"creatinine {as_reported(creatinine)}"
    height = next((e for e in ckd.inputs if e.kind == "body-height"), None)
    if height is not None:
        basis += f" and height {as_reported(height)}"
    return (
        f"eGFR {ckd.value:.0f} {display_unit(ckd.unit or '')} (estimated from {basis}, {ckd.method}), {day(ckd.date)}"
    )


def _other_subtypes(assessment: Assessment, top: Subtype | None) -> str:
    parts = []
    for subtype in sorted(assessment.subtypes, key=lambda s: (RANK[s.likelihood], PRIORITY.index(s.subtype))):
        if subtype.subtype is top:
            continue
        if subtype.subtype is Subtype.CALCIPHYLAXIS and elevated_calciphylaxis_risk(assessment):
            parts.append("calciphylaxis risk elevated")
            continue
        parts.append(f"{SUBTYPE_NAMES[subtype.subtype].split(' ')[0]} {subtype.likelihood.value}")
    return "Other subtypes: " + ", ".join(parts) + "."


def _missing(assessment: Assessment, workup: WorkupStatement | None, limit: int = 3) -> str | None:
    if workup is None or not workup.orders:
        # Nothing left to suggest, but a test ordered and awaited is worth the line (no workup card).
        ordered = list(dict.fromkeys(f"{name} (ordered {when})" for name, when in _pending_tests(assessment)))
        rest = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
        return f"Result pending: {', '.join(ordered[:limit])}{rest}." if ordered else None
    shown = workup.orders[:limit]
    absent = [short_label(gap) for gap in shown if gap.last_result is None]
    dated = [f"{short_label(gap)} (last {day(gap.last_result.date)})" for gap in shown if gap.last_result is not None]
    more = len(workup.orders) + len(workup.later) - len(shown)
    # A result older than its look-back is "out of date" (it is on file). A test without one is
    # "no result on file", not "not on file": an order awaiting its result is on file too (15.5),
    # and the chart's orders may not have been readable, so absence of an order is never claimed.
    parts = ([f"No result on file: {', '.join(absent)}"] if absent else []) + (
        [f"out of date: {', '.join(dated)}" if absent else f"Out of date: {', '.join(dated)}"] if dated else []
    )
    text = "; ".join(parts)
    if more > 0:
        text += f" and {more} more"
    return text + " (see the workup card)."


def _why(gap: WorkupGap) -> str:
    """'Why Intact PTH: <reason>. Last result 3 Mar 2025, more than 365 days ago.' The window is the
    item's look-back from the knowledge base, so an edited window is what the card states."""
    text = f"Why {short_label(gap)}: {gap.reason.rstrip('.')}."
    if gap.last_result is not None and gap.lookback_days is not None:
        text += f" Last result {day(gap.last_result.date)}, more than {gap.lookback_days} days ago."
    return text


def _pending_tests(assessment: Assessment) -> list[tuple[str, str]]:
    """(test, date ordered) of each workup item not suggested because its test is awaited."""
    return [(item.ordered_test.split(" (")[0], day(item.ordered)) for item in assessment.pending_workup]


def _pending_lines(assessment: Assessment) -> list[str]:
    """'Intact PTH ordered 25 Nov 2026, result pending.': one line per test ordered (an order
    that satisfies two items, an ionized calcium for calcium and albumin, is named once)."""
    lines = (f"{name} ordered {when}, result pending." for name, when in _pending_tests(assessment))
    return list(dict.fromkeys(lines))


def short_label(gap: WorkupGap) -> str:
    """A workup item's name without its parenthesised list of components."""
    return gap.label.split(" (")[0]


def _biopsy_caution(kb: KnowledgeBase) -> str:
    """The biopsy caution of 7.2, worded from the catalogue's withheld biopsy item."""
    for item in kb.workup:
        if item.never_when == "calciphylaxis-suspected":
            why = (item.caution or "").split(": ", 1)[-1].rstrip(".")
            label = lower_first(item.label)
            return f"Avoid {label} while calciphylaxis is suspected" + (f": {why}." if why else ".")
    return "Avoid skin biopsy while calciphylaxis is suspected."


# ----- the subtype card --------------------------------------------------------------------------


def subtype_statement(assessment: Assessment, kb: KnowledgeBase, workup: WorkupStatement | None) -> Statement:
    """The subtype card's words: the most urgent pattern, its strongest evidence, what is missing
    and the next step."""
    top = leading_subtype(assessment)
    level = indicator(assessment)
    missing = _missing(assessment, workup)
    next_item = short_label(workup.orders[0]) if workup is not None and workup.orders else None
    further: list[str] = []
    caution: str | None = None
    sources: list[str] = []
    setting = _kidney_setting(assessment)

    if suspected_calciphylaxis(assessment):
        cpx = assessment.subtype(Subtype.CALCIPHYLAXIS)
        risk = assessment.calciphylaxis_risk
        lesions = _first_evidence(cpx, "CC-CPX-LESION", "CC-CPX-NONUREMIC")
        coded = _first_evidence(cpx, "CC-CPX-CODED")
        evidence: list[str] = []
        if lesions:
            evidence.append(record_line(lesions[0], ""))
        if coded and not lesions:
            evidence.append(record_line(coded[0], "On the problem list: "))
        if risk.major:
            evidence.append(f"Major risk factors: {_risk_summary(risk.major[:4])}")
        caxp = _caxp_line(assessment, kb)
        if assessment.subtype(Subtype.METASTATIC).likelihood in SUSPECTED:
            evidence.append("Calcium or phosphate also raised (metastatic pattern coexists)")
        elif caxp:
            evidence.append(caxp)
        # The pattern leads: a long lesion name or many risk factors may be cut, the urgent words not.
        pattern = "calciphylaxis"
        who = "dialysis patient" if risk.on_dialysis else "patient"
        factors = f"{len(risk.major)} major risk factor{'s' if len(risk.major) != 1 else ''}" if risk.major else ""
        if lesions:
            lesion_word = (lesions[0].display or "ischemic skin lesion").lower()
            summary = f"Consider calciphylaxis: {who}" + (f" with {factors} and" if factors else " with")
            summary += f" {lesion_word}"
        else:
            signal = assessment.calciphylaxis
            suspected = signal is not None and signal.status is CalciphylaxisStatus.SUSPECTED
            summary = (
                "Calciphylaxis suspected on the problem list" if suspected else "Calciphylaxis on the problem list"
            )
            if risk.on_dialysis:
                summary += " of a dialysis patient"
            summary += ": review the risk factors; avoid biopsy of the lesions"
        headline = "Suspected calciphylaxis"
        caution = _biopsy_caution(kb)
        next_step = f"Next: consider {next_item}; the workup card lists the rest." if next_item else None
        sources += [s for f in cpx.findings for s in f.sources]
        further.append(_other_subtypes(assessment, Subtype.CALCIPHYLAXIS))
    elif assessment.severe_hypercalcemia:
        line = _calcium_line(assessment, kb) or "Calcium at the severe level"
        evidence = [line]
        caxp = _caxp_line(assessment, kb)
        if caxp:
            evidence.append(caxp)
        metastatic = assessment.subtype(Subtype.METASTATIC)
        cause = _cause_line(assessment)
        if cause:
            evidence.append(cause)
        pattern = "severe hypercalcemia"
        summary = (
            f"Severe hypercalcemia (calcium at or above {kb.quantity('calcium-severe')}) with calcinosis cutis: "
            "consider metastatic calcification"
        )
        headline = "Severe hypercalcemia with calcinosis cutis"
        next_step = f"Next: consider {next_item}." if next_item else None
        sources += [s for f in metastatic.findings for s in f.sources] + list(kb.threshold("calcium-severe").sources)
        further.append(_other_subtypes(assessment, Subtype.METASTATIC))
    elif top is None:
        gate = next((s.missing for s in assessment.subtypes if s.missing), ())
        reason = gate[0] if gate else "calcium and phosphate"
        pattern = "cannot classify the subtype"
        summary = f"Calcinosis cutis: cannot classify the subtype, missing {reason}"
        if next_item:
            summary += f"; consider {next_item.lower()}"
        headline = "Cannot classify the subtype yet"
        evidence = [f"Missing: {_join(list(gate[:3]))}" if gate else "Missing: a current calcium and phosphate"]
        calcium = _calcium_line(assessment, kb)
        if calcium:
            evidence.append(calcium)
        next_step = f"Next: consider {next_item}." if next_item else None
        sources += ["Reiter-I"]
        further.append(_other_subtypes(assessment, None))
    else:
        evidence, summary, headline, pattern = _subtype_words(assessment, kb, top, setting)
        next_step = f"Next: consider {next_item}." if next_item else None
        sources += [s for f in top.findings for s in f.sources]
        further.append(_other_subtypes(assessment, top.subtype))

    kidney = kidney_line(assessment) if setting and setting in summary else None
    if kidney is not None:
        # The summary names the kidney function; the first screen says which number and, for an
        # estimate, which equation (2.3a), without going past three evidence lines (11.4).
        if len(evidence) < 3:
            evidence.append(kidney)
        else:
            further.insert(0, kidney)
    if elevated_calciphylaxis_risk(assessment):
        risk = assessment.calciphylaxis_risk
        further.insert(
            0,
            f"Elevated calciphylaxis risk ({len(risk.major)} major, {len(risk.minor)} minor factors): "
            f"{_risk_summary(risk.major[:3])}. No skin lesion recorded; examine the skin.",
        )
    if risk_factors_apply(assessment) and not suspected_calciphylaxis(assessment):
        risk = assessment.calciphylaxis_risk
        if risk.major and not elevated_calciphylaxis_risk(assessment):
            further.append(f"Calciphylaxis risk factors: {_risk_summary(risk.major[:3])}.")
    if assessment.distribution.label.value != "unknown":
        further.append(f"Distribution: {assessment.distribution.label.value}.")
    return Statement(
        topic="subtype",
        indicator=level,
        summary=shorten(summary),
        headline=headline,
        evidence=tuple(evidence[:3]),
        pattern=pattern,
        missing=missing,
        next_step=next_step,
        caution=caution,
        further=tuple(further),
        sources=tuple(dict.fromkeys(sources)),
    )


def _subtype_words(
    assessment: Assessment, kb: KnowledgeBase, top: SubtypeAssessment, setting: str
) -> tuple[list[str], str, str, str]:
    """Evidence, summary, headline and the pattern named for the best-supported subtype.

    The summary leads with the pattern ("Pattern consistent with metastatic calcification: ...")
    and follows with what supports it, so a long medication or condition name can only cut the
    supporting words, never the pattern."""
    confidence = "Pattern consistent with" if top.likelihood is Likelihood.LIKELY else "Consider"
    headline_lead = "Pattern consistent with" if top.likelihood is Likelihood.LIKELY else "Possible"
    name = SUBTYPE_NAMES[top.subtype]
    evidence: list[str] = []
    where = f" {setting}" if setting else ""
    if top.subtype is Subtype.METASTATIC:
        caxp = _caxp_line(assessment, kb)
        above = caxp is not None and "(above" in caxp
        phosphate = _phosphate_evidence(assessment)
        phosphate_high = phosphate is not None and any(f.rule_id == "CC-MET-P" for f in top.findings)
        calcium_high = any(f.rule_id == "CC-MET-CA" for f in top.findings)
        calcium = _calcium_line(assessment, kb) if calcium_high else None
        values = [line for line in (caxp if above else None, calcium) if line]
        if phosphate is not None and phosphate_high:
            values.append(lab_line(phosphate, "above"))
        cause_line = _cause_line(assessment)
        # The two strongest values, then the cause the data support (5.2); three values without one.
        evidence += values[:2] + [cause_line] if cause_line else values[:3]
        if above and caxp:
            strongest = caxp.split(",")[0]
        elif calcium_high:
            strongest = _calcium_words(assessment) + " above range"
        elif phosphate is not None and phosphate_high:
            strongest = f"phosphate {as_reported(phosphate)} above range"
        else:
            strongest = "raised calcium"
        summary = f"{confidence} {name}{where}: {strongest}"
        named = _cause_name(assessment)
        if named:
            summary += f", possibly from {named}"
    elif top.subtype is Subtype.DYSTROPHIC:
        causes = _first_evidence(top, "CC-DYS-CAUSE")
        labs = _calcium_line(assessment, kb)
        phosphate = _phosphate_evidence(assessment)
        if causes:
            cause = causes[0].display or "a tissue-damaging condition"
            evidence.append(record_line(causes[0], "On record: "))
            summary = f"{confidence} {name}: calcinosis cutis with normal calcium and phosphate and {cause}"
        elif assessment.no_cause_recorded:
            summary = "Calcinosis cutis with normal calcium and phosphate: no underlying cause on record"
            headline_lead, name = "Normal calcium and phosphate,", "no underlying cause on record"
            evidence.append("No connective tissue disease or other damaging condition is coded")
        else:
            summary = (
                "Consider dystrophic or idiopathic calcinosis: calcinosis cutis with normal calcium and "
                "phosphate and no underlying cause on record"
            )
            headline_lead, name = "Possible", "dystrophic or idiopathic calcinosis"
            evidence.append("No connective tissue disease or other damaging condition is coded")
        if labs:
            evidence.append(labs)
        if phosphate is not None:
            evidence.append(lab_line(phosphate))
        evidence += _finding(top, "CC-DYS-SSC-FEATURE")[:1]
    elif top.subtype is Subtype.IATROGENIC:
        exposures = [f for f in top.findings if f.supports]
        first = exposures[0] if exposures else None
        label = first.evidence[0].display if first and first.evidence else "a qualifying exposure"
        when = day(first.evidence[0].date) if first and first.evidence else ""
        evidence += [
            f"{f.evidence[0].display or 'Exposure'}, {day(f.evidence[0].date)}" for f in exposures[:2] if f.evidence
        ]
        summary = f"{confidence} {name}: calcinosis cutis after {label}{' on ' + when if when else ''}"
        labs = _calcium_line(assessment, kb)
        if labs:
            evidence.append(labs)
    elif top.subtype is Subtype.IDIOPATHIC:
        summary = (
            f"{confidence} {name}: calcinosis cutis with normal calcium and phosphate and no cause or "
            "exposure on record"
        )
        labs = _calcium_line(assessment, kb)
        phosphate = _phosphate_evidence(assessment)
        if labs:
            evidence.append(labs)
        if phosphate is not None:
            evidence.append(lab_line(phosphate))
        evidence.append("A diagnosis of exclusion: no recorded cause, exposure or advanced kidney disease")
    else:  # calciphylaxis possible without a skin signal: elevated risk, never "possible calciphylaxis" (9)
        summary = f"Elevated calciphylaxis risk: calcinosis cutis{where}; examine the skin for ischemic lesions"
        headline_lead, name = "", "Elevated calciphylaxis risk"
        evidence += [f.statement for f in top.findings if f.supports][:2]
    entity = _idiopathic_entity(assessment, top)
    if entity is not None:
        # 5.3: a recognised idiopathic entity whose picture fits is named in the detail (first after
        # the pattern), not in the summary: the entity is a suggestion about the name, not a finding.
        evidence.insert(min(1, len(evidence)), f"Picture fits {lower_first(entity)}")
    if assessment.suspected_only:
        summary = f"Suspected calcinosis cutis: if confirmed, consider {name}"
    return evidence, summary, f"{headline_lead} {name}".strip(), name


def _idiopathic_entity(assessment: Assessment, top: SubtypeAssessment) -> str | None:
    """ "Subepidermal calcified nodule: a solitary nodule of the head or neck in a child", when a
    recognised idiopathic entity fits and the card is about normal labs without a cause."""
    if top.subtype not in (Subtype.DYSTROPHIC, Subtype.IDIOPATHIC) or not assessment.idiopathic_entities:
        return None
    if top.subtype is Subtype.DYSTROPHIC and any(f.rule_id == "CC-DYS-CAUSE" for f in top.findings):
        return None  # a recorded cause leads; the entity stays in the extension
    if any(d.raised_by for d in assessment.differentials):
        return None  # a differential this record raises (gout at the elbow) is the sharper lead
    return assessment.idiopathic_entities[0].finding.statement


# ----- the workup card ---------------------------------------------------------------------------


def rank_workup(assessment: Assessment, kb: KnowledgeBase) -> list[WorkupGap]:
    """The gaps ranked by yield for this picture (labs before imaging within a group)."""
    order = {item.id: index for index, item in enumerate(kb.workup)}
    trigger = {item.id: item.trigger for item in kb.workup}

    def key(gap: WorkupGap) -> tuple[int, int, int]:
        group = trigger.get(gap.item_id, "")
        rank = TRIGGER_YIELD.index(group) if group in TRIGGER_YIELD else len(TRIGGER_YIELD)
        if group == "calciphylaxis-suspected" and not suspected_calciphylaxis(assessment):
            rank = len(TRIGGER_YIELD)
        return 1 if gap.kind != "lab" else 0, rank, order.get(gap.item_id, 0)

    return sorted(assessment.workup, key=key)


def workup_statement(
    assessment: Assessment, kb: KnowledgeBase, cap: int = DEFAULT_WORKUP_CAP
) -> WorkupStatement | None:
    """The ranked suggestions (at most `cap` with a button) and the rest as a plain list."""
    ranked = rank_workup(assessment, kb)
    if not ranked:
        return None
    orders, later = tuple(ranked[:cap]), tuple(ranked[cap:])
    names = ", ".join(short_label(gap) for gap in orders)
    noun = "test" if all(g.kind == "lab" for g in orders) else "item"
    summary = f"Calcinosis workup: {len(orders)} {noun}{'s' if len(orders) != 1 else ''} suggested ({names})"
    later_line = (
        "Also worth considering later, without a button: " + ", ".join(short_label(g) for g in later) + "."
        if later
        else None
    )
    pending = _pending_lines(assessment)
    further = [_why(gap) for gap in orders] + pending[3:]
    if assessment.suppressed_workup and suspected_calciphylaxis(assessment):
        further.insert(0, f"Not suggested: {_biopsy_caution(kb)}")
    statement = Statement(
        topic="workup",
        indicator="info",
        summary=shorten(summary),
        headline="Ranked for this picture; each button creates a draft order",
        evidence=tuple(pending[:3]),
        next_step=later_line,
        further=tuple(further),
        sources=tuple(dict.fromkeys(s for gap in orders for s in gap.sources)),
    )
    return WorkupStatement(statement, orders, later)


# ----- the differentials card --------------------------------------------------------------------


def _differential_line(differential: DifferentialAssessment, limit: int = EVIDENCE_LINE_LIMIT) -> str:
    """One differential in at most `limit` characters: what raises it, what is against it and the
    separating test. The separating test is what the clinician acts on, so when the line is too
    long the rest gives way first: one reason instead of two, then the test's elaboration after
    its first clause, then the 'against'; if it still does not fit, the reason is cut at a word
    and the whole test kept (its later clauses can be a caution). Never the test itself."""
    full_test = differential.separating_test.rstrip(".")
    tests = [f" Separating test: {full_test}."]
    if "; " in full_test:
        tests.append(f" Separating test: {full_test.split('; ')[0]}.")
    lowered = [f.statement.rstrip(".") for f in differential.lowered_by[:1]]
    against = f" Against: {lower_first(lowered[0])}." if lowered else ""
    if not differential.raised_by:
        heads = [f"{differential.label}: consider while the subtype is unclassified."]
    else:
        reasons = [f.statement.rstrip(".") for f in differential.raised_by[:2]]
        heads = [f"{differential.label}: raised by {lower_first(_join(reasons[:n]))}." for n in (2, 1)]
    for extra in dict.fromkeys((against, "")):
        for test in tests:
            for head in heads:
                if len(head) + len(extra) + len(test) <= limit:
                    return head + extra + test
    for test in tests:  # the whole test (a caution such as "biopsy only with caution") before the reason
        room = limit - len(test)
        if room >= 60:
            return shorten(heads[-1], room) + test
    return shorten(heads[-1] + tests[-1], limit)


def differentials_statement(assessment: Assessment) -> tuple[Statement | None, tuple[DifferentialAssessment, ...]]:
    """Only the differentials this record raises, or all of them when the subtype cannot be
    classified (11.4); none otherwise: a list of "nothing for or against" is noise."""
    raised = tuple(d for d in assessment.differentials if d.raised_by)
    unclassified = leading_subtype(assessment) is None and not suspected_calciphylaxis(assessment)
    shown = raised if raised else (assessment.differentials if unclassified else ())
    if not shown:
        return None, ()
    lines = [_differential_line(differential) for differential in shown]
    first = shown[0]
    if first.raised_by:
        reason = first.raised_by[0].statement.split(":")[0]
        summary = f"{reason}: consider {first.label.split(' (')[0].lower()} in the differential"
        if len(raised) > 1:
            summary += f" (and {len(raised) - 1} more)"
    else:
        summary = (
            "Subtype unclassified: differentials to consider ("
            + ", ".join(d.label.split(" (")[0].lower() for d in shown)
            + ")"
        )
    further = lines[3:]
    ckd = assessment.derived_value("ckd-stage")
    rests_on_estimate = any(e.kind == "creatinine" for d in raised for f in d.raised_by for e in f.evidence)
    kidney = kidney_line(assessment) if rests_on_estimate and ckd is not None and _estimated(ckd) else None
    if kidney is not None:
        # "No advanced kidney disease" from an estimated eGFR: say which equation (2.3a).
        further.insert(0, f"Kidney function: {kidney}.")
    statement = Statement(
        topic="differentials",
        indicator="info",
        summary=shorten(summary),
        headline="Raised by this record" if raised else "Worth excluding while the subtype is unclassified",
        evidence=tuple(lines[:3]),
        further=tuple(further),
        sources=tuple(dict.fromkeys(s for d in shown for s in d.sources)),
    )
    return statement, shown


def card_statements(assessment: Assessment, kb: KnowledgeBase, workup_cap: int = DEFAULT_WORKUP_CAP) -> CardStatements:
    """Everything the cards of this assessment say."""
    workup = workup_statement(assessment, kb, workup_cap)
    differentials, shown = differentials_statement(assessment)
    return CardStatements(subtype_statement(assessment, kb, workup), workup, differentials, shown)
