"""The assessment: what the service concludes about one patient, with the evidence for each part.

Everything here is plain immutable data so that the card renderer, the command line and the tests
read the same structure. Nothing is phrased as a diagnosis: a subtype carries a likelihood, and each
likelihood carries the rules that produced it and the record entries those rules read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from calcinosis.knowledge_base import Code


class Subtype(StrEnum):
    """The five etiologic subtypes of calcinosis cutis (clinical-knowledge.md section 1.1)."""

    DYSTROPHIC = "dystrophic"
    METASTATIC = "metastatic"
    IDIOPATHIC = "idiopathic"
    IATROGENIC = "iatrogenic"
    CALCIPHYLAXIS = "calciphylaxis"


class Likelihood(StrEnum):
    """How strongly the record supports a subtype. `undetermined` means the data to decide is
    missing or too old; it is never a guess in either direction."""

    LIKELY = "likely"
    POSSIBLE = "possible"
    UNLIKELY = "unlikely"
    UNDETERMINED = "undetermined"


class Distribution(StrEnum):
    """Distribution label, independent of the subtype (clinical-knowledge.md section 1.2)."""

    CIRCUMSCRIPTA = "circumscripta"
    UNIVERSALIS = "universalis"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One record entry a rule read: where it is, what it says, and when."""

    reference: str
    code: str | None
    display: str | None
    value: float | None = None
    unit: str | None = None
    reported: str | None = None
    comparator: str | None = None
    date: datetime | None = None
    reference_range: str | None = None
    interpretation: str | None = None
    note: str | None = None
    kind: str | None = None
    reported_range: str | None = None
    reported_unit: str | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """A value set against a cut-off: which cut-off, where it came from, and the outcome."""

    threshold: str
    limit: float
    unit: str
    basis: str
    outcome: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleFinding:
    """One rule that fired: stable id, a plain statement, the evidence and the citation."""

    rule_id: str
    statement: str
    evidence: tuple[Evidence, ...]
    sources: tuple[str, ...]
    supports: bool = True


@dataclass(frozen=True, slots=True)
class SubtypeAssessment:
    """A subtype with its likelihood, the rules behind it and what data would settle it."""

    subtype: Subtype
    likelihood: Likelihood
    findings: tuple[RuleFinding, ...]
    missing: tuple[str, ...] = ()

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """The ids of the rules that fired, in order."""
        return tuple(finding.rule_id for finding in self.findings)


@dataclass(frozen=True, slots=True)
class DerivedValue:
    """A computed quantity (corrected calcium, Ca x P, CKD stage) with its inputs and cut-offs."""

    name: str
    value: float | None
    unit: str | None
    category: str | None
    formula: str
    inputs: tuple[Evidence, ...]
    comparisons: tuple[Comparison, ...] = ()
    note: str | None = None
    date: datetime | None = None
    method: str | None = None
    """For an eGFR: "reported eGFR", or the equation that estimated it from a creatinine
    ("CKD-EPI 2021", "bedside Schwartz 2009"); the card says which produced a number it shows."""
    ckd_established: bool = False
    """For the kidney reading: CKD is established (KDIGO's 3-month chronicity, a coded stage,
    dialysis or a transplant; clinical-knowledge.md 2.3), the same check that lets CKD be named as
    a cause. The card says "CKD" only when this holds; a single reduced eGFR is only an eGFR."""


@dataclass(frozen=True, slots=True)
class DistributionAssessment:
    """The distribution label and what it was derived from."""

    label: Distribution
    basis: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkupGap:
    """A recommended test or procedure with no result in its look-back window."""

    item_id: str
    label: str
    kind: str
    code: Code | None
    reason: str
    sources: tuple[str, ...]
    lookback_days: int | None
    code_note: str | None = None
    last_result: Evidence | None = None


@dataclass(frozen=True, slots=True)
class SuppressedWorkup:
    """A catalogue item deliberately withheld, and why (e.g. biopsy in suspected calciphylaxis)."""

    item_id: str
    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class PendingWorkup:
    """A catalogue item that applies but is not suggested, because a test that satisfies it is
    already ordered and not yet resulted (an active order placed inside the item's look-back).
    15.5 counts such an order as "on file" and wants the same windows to drive the workup, so
    patient-view never suggests a test that order-sign would then flag as a repeat."""

    item_id: str
    label: str
    ordered_test: str
    """The name of the test ordered (the item's own, or another test that satisfies it)."""
    ordered: datetime
    reference: str
    """The order on the chart: for the card's extension only, never for the text a clinician reads."""


@dataclass(frozen=True, slots=True)
class DifferentialAssessment:
    """A differential diagnosis with what raises and lowers it in this patient."""

    differential_id: str
    label: str
    raised_by: tuple[RuleFinding, ...]
    lowered_by: tuple[RuleFinding, ...]
    separating_test: str
    test_code: Code | None
    sources: tuple[str, ...]

    @property
    def consideration(self) -> str:
        """`raised` when something in the record points to it, else `consider`."""
        return "raised" if self.raised_by else "consider"


@dataclass(frozen=True, slots=True)
class RiskFactor:
    """One calciphylaxis risk factor found in the record (consensus Table 3 or add-on)."""

    factor_id: str
    label: str
    tier: str
    evidence: tuple[Evidence, ...]
    sources: tuple[str, ...]
    note: str | None = None


@dataclass(frozen=True, slots=True)
class CalciphylaxisRisk:
    """Calciphylaxis risk factors present and whether the consensus risk pattern is met.

    `pattern` is one of `met` (2 major, or 1 major + 3 minor, on dialysis), `not-met`, or
    `not-applicable` (the consensus table is for dialysis patients). It is a risk pattern, never a
    diagnosis.
    """

    on_dialysis: bool
    major: tuple[RiskFactor, ...]
    minor: tuple[RiskFactor, ...]
    additional: tuple[RiskFactor, ...]
    pattern: str
    applicable: bool = False
    """Whether the risk factors belong on the card: dialysis, CKD G4-G5, or calciphylaxis
    suspected or recorded (clinical-knowledge.md 11.4), not every chart."""


class CalciphylaxisStatus(StrEnum):
    """What the record says about calciphylaxis (clinical-knowledge.md 5.5, 9 and 11.4)."""

    RECORDED = "recorded"
    """Coded on the problem list as a diagnosis."""
    SUSPECTED = "suspected"
    """Coded as provisional or differential, or typical ischemic or necrotic lesions recorded in a
    setting that explains them: the headline of a `warning` card, with or without a code."""
    ELEVATED_RISK = "elevated-risk"
    """The consensus risk pattern without any skin finding: an `info` item, never "possible
    calciphylaxis" (section 9)."""
    NOT_SUSPECTED = "not-suspected"
    UNKNOWN = "unknown"
    """Kidney function unknown and no lesion recorded: nothing can be said either way."""


@dataclass(frozen=True, slots=True)
class CalciphylaxisSignal:
    """The calciphylaxis signal, separate from the subtype likelihood.

    `setting` is `uremic` (dialysis, CKD G4-G5, transplant), `non-uremic` (section 5.5.3) or None.
    `lesions` are the ischemic or necrotic skin findings on record. `risk_section` says whether the
    calciphylaxis risk factors belong on the card: dialysis, CKD G4-G5, or calciphylaxis suspected
    or recorded (11.4). `skin_exam_needed` is True only when no lesion is recorded while the
    setting or the risk pattern makes one worth looking for; it is never True with lesions on file.
    `non_uremic_factors` are the predisposing features of 5.5.3 found in the record.
    """

    status: CalciphylaxisStatus
    setting: str | None
    lesions: tuple[Evidence, ...]
    risk_section: bool
    skin_exam_needed: bool
    non_uremic_factors: tuple[RiskFactor, ...] = ()


class MetabolicCause(StrEnum):
    """Causes of abnormal calcium or phosphate metabolism (clinical-knowledge.md 5.2)."""

    CKD_MBD = "ckd-mbd"
    PRIMARY_HYPERPARATHYROIDISM = "primary-hyperparathyroidism"
    TERTIARY_HYPERPARATHYROIDISM = "tertiary-hyperparathyroidism"
    MALIGNANCY = "malignancy"
    VITAMIN_D_TOXICITY = "vitamin-d-toxicity"
    GRANULOMATOUS = "granulomatous-disease"
    MILK_ALKALI = "milk-alkali"
    HYPOPARATHYROIDISM = "hypoparathyroidism"
    TUMOR_LYSIS = "tumor-lysis"


@dataclass(frozen=True, slots=True)
class CauseFinding:
    """A cause of abnormal Ca/P metabolism that the record supports, with the rule finding (its
    statement, evidence and sources) that says why."""

    cause: MetabolicCause
    finding: RuleFinding


@dataclass(frozen=True, slots=True)
class IdiopathicEntity:
    """A recognised idiopathic entity whose picture fits (clinical-knowledge.md 5.3)."""

    entity_id: str
    label: str
    finding: RuleFinding


@dataclass(frozen=True, slots=True)
class DataQuality:
    """What could not be used, so a card can say so instead of hiding it."""

    resources_seen: int
    resources_skipped: int
    issues: tuple[str, ...]
    implausible_values: int = 0
    """Results whose value cannot be physiological (zero or less, not finite, above the knowledge
    base's plausible maximum): unusable, counted, never the basis of a card."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """The whole answer for one patient with documented calcinosis or calciphylaxis."""

    as_of: datetime
    knowledge_version: str
    entry: tuple[Evidence, ...]
    subtypes: tuple[SubtypeAssessment, ...]
    derived: tuple[DerivedValue, ...]
    distribution: DistributionAssessment
    workup: tuple[WorkupGap, ...]
    suppressed_workup: tuple[SuppressedWorkup, ...]
    differentials: tuple[DifferentialAssessment, ...]
    calciphylaxis_risk: CalciphylaxisRisk
    data_quality: DataQuality
    severe_hypercalcemia: bool = False
    calciphylaxis: CalciphylaxisSignal | None = None
    """Recorded, suspected, elevated risk or not suspected, apart from the subtype likelihood."""
    causes: tuple[CauseFinding, ...] = ()
    """Causes of abnormal Ca/P metabolism the data support (named, never guessed)."""
    suspected_only: bool = False
    """Every entry that opened the assessment states a suspicion (provisional or differential, or
    "suspected" in its words): the card says "suspected", not "recorded"."""
    no_cause_recorded: bool = False
    """Calcium and phosphate are normal and no underlying cause or exposure is on record: dystrophic
    and idiopathic both stay possible, and the headline says exactly that, not "dystrophic"."""
    idiopathic_entities: tuple[IdiopathicEntity, ...] = ()
    pending_workup: tuple[PendingWorkup, ...] = ()
    """Workup items not suggested because a test for them is ordered and its result pending."""

    def subtype(self, subtype: Subtype) -> SubtypeAssessment:
        """The assessment of one subtype (all five are always present)."""
        for item in self.subtypes:
            if item.subtype is subtype:
                return item
        raise KeyError(subtype)

    def derived_value(self, name: str) -> DerivedValue | None:
        """A derived value by name, or None when it could not be computed."""
        for item in self.derived:
            if item.name == name:
                return item
        return None

    @property
    def evidence_references(self) -> frozenset[str]:
        """Every record entry the assessment cites (used to validate exactly those resources)."""
        refs: set[str] = {e.reference for e in self.entry}
        for subtype in self.subtypes:
            for finding in subtype.findings:
                refs.update(e.reference for e in finding.evidence)
        for derived in self.derived:
            refs.update(e.reference for e in derived.inputs)
        refs.update(e.reference for e in self.distribution.evidence)
        for differential in self.differentials:
            for finding in differential.raised_by + differential.lowered_by:
                refs.update(e.reference for e in finding.evidence)
        risk = self.calciphylaxis_risk
        for factor in risk.major + risk.minor + risk.additional:
            refs.update(e.reference for e in factor.evidence)
        for gap in self.workup:
            if gap.last_result is not None:
                refs.add(gap.last_result.reference)
        if self.calciphylaxis is not None:
            refs.update(e.reference for e in self.calciphylaxis.lesions)
            for factor in self.calciphylaxis.non_uremic_factors:
                refs.update(e.reference for e in factor.evidence)
        for cause in self.causes:
            refs.update(e.reference for e in cause.finding.evidence)
        return frozenset(refs)
