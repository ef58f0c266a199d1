"""What every rule needs, computed once per patient: current calcium and phosphate status, Ca x P,
kidney function, dialysis, and evidence helpers.

The rules read this instead of the raw findings so that "which calcium counts", "how old is too
old" and "does the lab's own range win over the fixed cut-off" are decided in one place.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

from calcinosis.assessment import CauseFinding, Comparison, DerivedValue, Evidence
from calcinosis.derived import (
    bedside_schwartz,
    calcium_phosphate_product,
    ckd_category,
    ckd_epi_2021,
    corrected_calcium,
    is_above,
    is_below,
)
from calcinosis.findings import (
    CANONICAL_UNITS,
    Analyte,
    ClinicalConcept,
    ConditionFinding,
    DrugClass,
    Interpretation,
    LabResult,
    MedicationExposure,
    PatientFindings,
    ProcedureFinding,
    ProcedureKind,
    Sex,
)
from calcinosis.knowledge_base import KnowledgeBase

HIGH = "high"
LOW = "low"
NORMAL = "normal"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def lab_evidence(lab: LabResult, note: str | None = None) -> Evidence:
    """Evidence for one lab result, with its range as the lab reported it (canonical units)."""
    reference_range: str | None = None
    if lab.reference_low is not None or lab.reference_high is not None:
        low = _fmt(lab.reference_low) if lab.reference_low is not None else ""
        high = _fmt(lab.reference_high) if lab.reference_high is not None else ""
        reference_range = f"{low}-{high} {lab.unit or ''}".strip()
    return Evidence(
        reference=lab.source.reference,
        code=f"{lab.source.system}|{lab.source.code}" if lab.source.code else None,
        display=lab.source.display,
        value=lab.value,
        unit=lab.unit,
        reported=lab.reported,
        comparator=lab.comparator,
        date=lab.effective,
        reference_range=reference_range,
        interpretation=lab.interpretation.value if lab.interpretation else None,
        note=note if note is not None else ("date taken from 'issued'" if lab.date_from_issued else None),
        kind=lab.analyte.value,
        reported_range=lab.reported_range,
        reported_unit=lab.reported_unit,
    )


def condition_evidence(condition: ConditionFinding, note: str | None = None) -> Evidence:
    """Evidence for a coded condition."""
    status = condition.clinical_status or "status not recorded"
    if condition.verification_status and condition.verification_status != "confirmed":
        status = f"{status}, {condition.verification_status}"
    extra = "matched on text" if condition.matched_by_text else None
    return Evidence(
        reference=condition.source.reference,
        code=f"{condition.source.system}|{condition.source.code}" if condition.source.code else None,
        display=condition.source.display,
        date=condition.first_known,
        note="; ".join(n for n in (status, extra, note) if n),
        kind=condition.concept.value,
    )


def medication_evidence(medication: MedicationExposure, note: str | None = None) -> Evidence:
    """Evidence for a medication exposure."""
    return Evidence(
        reference=medication.source.reference,
        code=f"{medication.source.system}|{medication.source.code}" if medication.source.code else None,
        display=medication.name or medication.source.display,
        date=medication.start,
        note=note,
        kind=medication.drug_class.value,
    )


def cite_medications(
    medications: list[MedicationExposure], note: str | None = None, limit: int = 3
) -> tuple[Evidence, ...]:
    """Evidence for a course of medication: the first order (where the duration starts) and the
    most recent ones, rather than every monthly refill."""
    if not medications:
        return ()
    ordered = sorted(medications, key=lambda m: m.start or datetime.min.replace(tzinfo=UTC))
    chosen = [ordered[0], *ordered[1:][-(limit - 1) :]] if limit > 1 else ordered[:1]
    return tuple(medication_evidence(m, note) for m in chosen)


def procedure_evidence(procedure: ProcedureFinding, note: str | None = None) -> Evidence:
    """Evidence for a procedure."""
    return Evidence(
        reference=procedure.source.reference,
        code=f"{procedure.source.system}|{procedure.source.code}" if procedure.source.code else None,
        display=procedure.source.display,
        date=procedure.start,
        note=note,
        kind=procedure.kind.value,
    )


@dataclass(frozen=True, slots=True)
class CalciumReading:
    """The calcium that classifies the patient: ionized when present, else albumin-corrected total.

    `kind` is `ionized`, `corrected` (albumin within the pairing window) or `total-uncorrected`.
    Only the first two pass the data gate of clinical-knowledge.md 5.0.
    """

    kind: str
    value: float
    status: str | None
    comparisons: tuple[Comparison, ...]
    calcium: LabResult
    albumin: LabResult | None
    note: str | None = None
    anchor_applied: bool = True
    """False when a child's albumin lies within the lab's own age-specific range, so the adult
    anchor of 4.0 g/dL was not applied (issue 12 item 6) [GK: design choice]."""

    @property
    def gate_ok(self) -> bool:
        """True when this reading may classify dystrophic or idiopathic disease."""
        return self.kind != "total-uncorrected" and self.status is not None


@dataclass(frozen=True, slots=True)
class PhosphateReading:
    """The latest usable phosphate in the gate window and whether it is above the upper limit."""

    value: float
    status: str | None
    comparisons: tuple[Comparison, ...]
    lab: LabResult


METHOD_REPORTED = "reported eGFR"
METHOD_CKD_EPI = "CKD-EPI 2021"
METHOD_SCHWARTZ = "bedside Schwartz 2009"
CKD_STAGES = ("G3a", "G3b", "G3", "G4", "G5")


@dataclass(frozen=True, slots=True)
class KidneyStatus:
    """Kidney function as the rules need it (clinical-knowledge.md 2.3 and 2.3a).

    `egfr` is the reported eGFR when one is on file; otherwise `egfr_value` may be estimated from
    `creatinine` (CKD-EPI 2021 in adults, bedside Schwartz with a measured `height` in children of
    1 to 18 years), and `method` says which number it is. A reading taken during a coded acute
    kidney injury is never staged (`acute_kidney_injury`), and CKD is stated as a cause only when
    it is established (`ckd_established`: KDIGO's 3-month chronicity, a coded stage, dialysis or a
    transplant)."""

    category: str | None
    egfr: LabResult | None
    chronic_confirmed: bool
    on_dialysis: bool
    dialysis_start: datetime | None
    dialysis_evidence: tuple[Evidence, ...]
    transplant: bool
    coded_stage: str | None
    coded_evidence: tuple[Evidence, ...]
    egfr_value: float | None = None
    method: str | None = None
    creatinine: LabResult | None = None
    height: LabResult | None = None
    not_reduced: bool = False
    acute_kidney_injury: bool = False
    aki_evidence: tuple[Evidence, ...] = ()
    no_estimate_reason: str | None = None
    creatinine_rising: bool = False
    """The acute kidney injury is read from a creatinine rise (KDIGO criteria), not from a code."""

    @property
    def advanced(self) -> bool:
        """CKD G4-G5D, ESRD, dialysis or transplant: where calciphylaxis mostly occurs. An eGFR in
        G4-G5 counts only with KDIGO chronicity (clinical-knowledge.md 2.3: CKD needs 3 months),
        as for `ckd_established`; one low eGFR, or one taken during an AKI, is not advanced CKD.
        Order-sign checks deliberately read today's function instead (`calcinosis.orders`)."""
        if self.on_dialysis or self.transplant or self.coded_stage in ("G4", "G5"):
            return True
        return self.category in ("G4", "G5") and self.chronic_confirmed

    @property
    def at_least_g3a(self) -> bool:
        """CKD G3a or worse by eGFR, code, dialysis or transplant (CKD-MBD monitoring range)."""
        return self.advanced or self.category in CKD_STAGES or self.coded_stage in CKD_STAGES

    @property
    def ckd_established(self) -> bool:
        """CKD G3a or worse that the record shows to be chronic: dialysis, a transplant, a coded
        stage, or an eGFR below 60 that was also below 60 at least 3 months earlier (KDIGO,
        clinical-knowledge.md 2.3). A single eGFR, or one taken during an AKI, is not enough."""
        if self.on_dialysis or self.transplant or self.coded_stage in CKD_STAGES:
            return True
        return self.category in CKD_STAGES and self.chronic_confirmed

    @property
    def known(self) -> bool:
        """True when anything at all is known about kidney function."""
        return (
            self.egfr_value is not None
            or self.on_dialysis
            or self.transplant
            or self.coded_stage is not None
            or self.not_reduced
            or self.acute_kidney_injury
        )

    @property
    def estimated(self) -> bool:
        """True when the eGFR shown was computed here from a creatinine (not reported by the lab)."""
        return self.method in (METHOD_CKD_EPI, METHOD_SCHWARTZ)

    def reading_evidence(self) -> tuple[Evidence, ...]:
        """The results the kidney reading rests on: the eGFR, or the creatinine (and height)."""
        if self.egfr is not None:
            return (lab_evidence(self.egfr),)
        found = tuple(lab_evidence(lab) for lab in (self.creatinine, self.height) if lab is not None)
        return found + self.aki_evidence


_FLOAT_MAX = sys.float_info.max
"""The limit for an analyte with no plausible maximum in its unit: only infinity lies above it."""

_MAXIMA: dict[int, tuple[KnowledgeBase, dict[Analyte, tuple[float, str | None]]]] = {}

ZERO_IS_A_READING = frozenset(
    {
        Analyte.ESR,
        Analyte.CRP,
        Analyte.ANA,
        Analyte.ANTI_SCL_70,
        Analyte.ANTI_PM_SCL,
        Analyte.ANTI_CENTROMERE,
        Analyte.ANCA,
        Analyte.ANTICARDIOLIPIN,
        Analyte.CRYOGLOBULIN,
        Analyte.HEPATITIS_C_ANTIBODY,
        Analyte.PROTEIN_C,
        Analyte.PROTEIN_S,
        Analyte.ANTITHROMBIN,
    }
)
"""Analytes on scales that start at zero, where a result of 0 is a reading rather than an error:
a sedimentation rate, an antibody index or titre, a cryocrit, an activity in percent (a
homozygous deficiency), a CRP below detection rounded to 0. For every other analyte a numeric
result of zero or less is physiologically impossible; a negative or non-finite value is
impossible for all of them."""

_PER_DAY = ("/(24.h)", "/24.h", "/24h", "/(24h)", "/day", "/d")


def unit_key(unit: str | None) -> str | None:
    """A unit spelling folded for comparison: case, spaces and the micro sign ignored, and the
    usual spellings of "per 24 hours" ("mg/(24.h)", "mg/24h", "mg/d") taken as one."""
    if unit is None:
        return None
    folded = unit.replace("µ", "u").replace("μ", "u").replace(" ", "").lower()
    for spelling in _PER_DAY:
        if folded.endswith(spelling):
            return folded[: -len(spelling)] + "/d"
    return folded


def _plausible_maxima(kb: KnowledgeBase) -> dict[Analyte, tuple[float, str | None]]:
    """Analyte -> (largest plausible value, the unit it applies in), read once per knowledge base
    (every lab is checked). The unit is None for an analyte normalised to its canonical unit (the
    limit always applies); otherwise it is the folded unit of the threshold, and the limit applies
    only to a result reported in that unit (the value is kept as reported, not converted)."""
    known = _MAXIMA.get(id(kb))
    if known is None or known[0] is not kb:
        maxima: dict[Analyte, tuple[float, str | None]] = {}
        for analyte in Analyte:
            threshold = kb.thresholds.get(f"plausible-max-{analyte.value}")
            if threshold is not None:
                unit = None if CANONICAL_UNITS.get(analyte) is not None else unit_key(threshold.unit)
                maxima[analyte] = (threshold.value, unit)
        _MAXIMA[id(kb)] = known = (kb, maxima)
    return known[1]


class PatientContext:
    """Pre-computed, read-only view of the findings for the rules."""

    def __init__(self, findings: PatientFindings, knowledge: KnowledgeBase) -> None:
        self.findings = findings
        self.kb = knowledge
        self.as_of = findings.as_of
        self.gate_start = self.as_of - timedelta(days=knowledge.days("gate-lookback-days"))
        self.year_start = self.as_of - timedelta(days=knowledge.days("annual-lookback-days"))
        self.pairing = timedelta(hours=knowledge.value("pairing-hours"))
        by_analyte: dict[Analyte, list[LabResult]] = defaultdict(list)
        unusable: dict[Analyte, list[LabResult]] = defaultdict(list)
        self.implausible: list[LabResult] = []
        for lab in findings.labs:
            if lab.effective > self.as_of:
                continue
            lab = self._plausible(lab)
            (by_analyte if lab.usable else unusable)[lab.analyte].append(lab)
        for labs in by_analyte.values():
            labs.sort(key=lambda lab: lab.effective, reverse=True)
        for labs in unusable.values():
            labs.sort(key=lambda lab: lab.effective, reverse=True)
        self._labs = by_analyte
        self._unusable = unusable
        by_concept: dict[ClinicalConcept, list[ConditionFinding]] = defaultdict(list)
        for condition in findings.conditions:
            by_concept[condition.concept].append(condition)
        self._conditions = by_concept
        by_class: dict[DrugClass, list[MedicationExposure]] = defaultdict(list)
        for medication in findings.medications:
            by_class[medication.drug_class].append(medication)
        self._medications = by_class
        by_kind: dict[ProcedureKind, list[ProcedureFinding]] = defaultdict(list)
        for procedure in findings.procedures:
            by_kind[procedure.kind].append(procedure)
        self._procedures = by_kind
        self.total_readings: list[CalciumReading] = []
        self.causes: tuple[CauseFinding, ...] | None = None
        """The causes of `calcinosis.causes`, kept once computed (the metastatic rule and the
        assessment both read them)."""
        self.calcium = self._calcium_reading()
        self.phosphate = self._phosphate_reading()
        self.kidney = self._kidney_status()
        self.caxp = self._calcium_phosphate_product()

    def _plausible(self, lab: LabResult) -> LabResult:
        """The result, or the result made unusable when its value cannot be physiological: not
        finite or negative for any analyte, zero for any analyte whose scale does not start at
        zero (`ZERO_IS_A_READING`), or above the knowledge base's plausible maximum (a unit or
        entry error such as 1e308). Such values are counted (`implausible`) and never reach a
        rule, so no card rests on them. A reference range with an impossible end is dropped and
        the fixed cut-offs apply instead."""
        value = lab.value
        if value is None or lab.unusable_reason is not None:
            return lab
        limit = _FLOAT_MAX
        found = _plausible_maxima(self.kb).get(lab.analyte)
        if found is not None and (found[1] is None or found[1] == unit_key(lab.unit)):
            limit = found[0]
        if 0 < value <= limit and lab.reference_low is None and lab.reference_high is None:
            return lab  # the usual case, decided by two comparisons (NaN and inf fail them and go on)
        censored_below = lab.comparator in ("<", "<=")
        zero_possible = lab.analyte in ZERO_IS_A_READING
        if (
            not math.isfinite(value)
            or value > limit
            or (value < 0 and not censored_below)
            or (value == 0 and not zero_possible and not censored_below)
        ):
            unusable = replace(
                lab,
                value=None,
                reference_low=None,
                reference_high=None,
                unusable_reason="value outside physiological limits (unit or entry error)",
            )
            self.implausible.append(unusable)
            return unusable
        ends = [end for end in (lab.reference_low, lab.reference_high) if end is not None]
        if any(not math.isfinite(end) or end < 0 or end > limit for end in ends):
            return replace(lab, reference_low=None, reference_high=None)
        return lab

    def age_at(self, moment: datetime) -> float | None:
        """Age in years at a moment (None without a birth date)."""
        return self.findings.age_years_at(moment)

    @property
    def child(self) -> bool:
        """True for a patient younger than the adult age of the knowledge base (18 years)."""
        age = self.age_at(self.as_of)
        return age is not None and age < self.kb.value("adult-age-years")

    # ----- look-ups -------------------------------------------------------------------------

    def labs(self, analyte: Analyte, since: datetime | None = None) -> list[LabResult]:
        """Usable results of an analyte, newest first, optionally only those on or after `since`."""
        labs = self._labs.get(analyte, [])
        if since is None:
            return labs
        return [lab for lab in labs if lab.effective >= since]

    def latest(self, analyte: Analyte, since: datetime | None = None) -> LabResult | None:
        """The newest usable result of an analyte (on or after `since`)."""
        labs = self.labs(analyte, since)
        return labs[0] if labs else None

    def unusable(self, analyte: Analyte, since: datetime | None = None) -> list[LabResult]:
        """Results of an analyte on file that could not be used (e.g. unknown unit)."""
        labs = self._unusable.get(analyte, [])
        return [lab for lab in labs if since is None or lab.effective >= since]

    def conditions(self, *concepts: ClinicalConcept, active_only: bool = False) -> list[ConditionFinding]:
        """Conditions mapped to any of the concepts (optionally only active ones)."""
        found = [c for concept in concepts for c in self._conditions.get(concept, [])]
        return [c for c in found if c.active] if active_only else found

    def medications(self, *classes: DrugClass) -> list[MedicationExposure]:
        """Medication exposures in any of the drug classes."""
        return [m for drug_class in classes for m in self._medications.get(drug_class, [])]

    def procedures(self, *kinds: ProcedureKind) -> list[ProcedureFinding]:
        """Procedures of any of the kinds."""
        return [p for kind in kinds for p in self._procedures.get(kind, [])]

    def exposure_days(self, medications: list[MedicationExposure]) -> float:
        """Days from the earliest start to the latest end (or `as_of` while still active)."""
        starts = [m.start for m in medications if m.start is not None]
        if not starts:
            return 0.0
        ends = [min(m.end or self.as_of, self.as_of) for m in medications]
        return max(0.0, (max(ends) - min(starts)).total_seconds() / 86400)

    # ----- status of a value against the lab's range or the fallback ---------------------------

    def judge(
        self,
        lab: LabResult,
        value: float,
        upper_id: str | None,
        lower_id: str | None,
        use_flag: bool = True,
    ) -> tuple[str | None, tuple[Comparison, ...]]:
        """High / low / normal for a value, preferring the lab's flag, then its range, then the
        knowledge base's fallback cut-off (clinical-knowledge.md section 0).

        `use_flag` is False for derived values (a flag describes the measured value, not the
        albumin-corrected one). Returns None as status when a censored result cannot decide.
        """
        comparator = lab.comparator
        if use_flag and lab.interpretation in (Interpretation.HIGH, Interpretation.LOW, Interpretation.NORMAL):
            status = {Interpretation.HIGH: HIGH, Interpretation.LOW: LOW, Interpretation.NORMAL: NORMAL}[
                lab.interpretation
            ]
            return status, (
                Comparison("lab interpretation", value, lab.unit or "", "lab's own interpretation flag", status),
            )
        comparisons: list[Comparison] = []
        upper = lab.reference_high
        upper_basis = "lab reference range"
        upper_sources: tuple[str, ...] = ()
        if upper is None and upper_id is not None:
            threshold = self.kb.threshold(upper_id)
            upper, upper_basis, upper_sources = threshold.value, "fallback cut-off", threshold.sources
        above = is_above(value, comparator, upper) if upper is not None else False
        if upper is not None:
            comparisons.append(
                Comparison(
                    upper_id or "upper limit",
                    upper,
                    lab.unit or "",
                    upper_basis,
                    "above" if above else ("not above" if above is False else "indeterminate"),
                    upper_sources,
                )
            )
        if above:
            return HIGH, tuple(comparisons)
        lower = lab.reference_low
        lower_basis = "lab reference range"
        lower_sources: tuple[str, ...] = ()
        if lower is None and lower_id is not None:
            threshold = self.kb.threshold(lower_id)
            lower, lower_basis, lower_sources = threshold.value, "fallback cut-off", threshold.sources
        below = is_below(value, comparator, lower) if lower is not None else False
        if lower is not None:
            comparisons.append(
                Comparison(
                    lower_id or "lower limit",
                    lower,
                    lab.unit or "",
                    lower_basis,
                    "below" if below else ("not below" if below is False else "indeterminate"),
                    lower_sources,
                )
            )
        if below:
            return LOW, tuple(comparisons)
        if above is None or below is None:
            return None, tuple(comparisons)
        return NORMAL, tuple(comparisons)

    # ----- calcium, phosphate, Ca x P --------------------------------------------------------

    def _paired(self, analyte: Analyte, moment: datetime) -> LabResult | None:
        """The result of `analyte` nearest in time to `moment`, within the pairing window."""
        best: LabResult | None = None
        for lab in self.labs(analyte):
            if lab.comparator is not None or lab.value is None:
                continue
            gap = abs(lab.effective - moment)
            if gap <= self.pairing and (best is None or gap < abs(best.effective - moment)):
                best = lab
        return best

    def reading_for_total(self, calcium: LabResult) -> CalciumReading:
        """Classify one total calcium, correcting for albumin drawn within the pairing window."""
        assert calcium.value is not None
        albumin = self._paired(Analyte.ALBUMIN, calcium.effective) if calcium.comparator is None else None
        if (
            albumin is not None
            and albumin.value is not None
            and self.child
            and albumin.reference_low is not None
            and albumin.value >= albumin.reference_low
        ):
            # A child's albumin within the lab's age-specific range needs no correction; the adult
            # anchor would add calcium to a normal infant's value.
            status, comparisons = self.judge(calcium, calcium.value, "calcium-total-upper", "calcium-total-lower")
            as_measured = "child: albumin within the lab's age-specific range, calcium used as measured"
            return CalciumReading("corrected", calcium.value, status, comparisons, calcium, albumin, as_measured, False)
        if albumin is not None and albumin.value is not None:
            anchor = self.kb.value("albumin-correction-anchor")
            value = corrected_calcium(
                calcium.value, albumin.value, anchor, self.kb.value("albumin-correction-coefficient")
            )
            corrected = albumin.value < anchor
            note: str | None = None
            if albumin.value < self.kb.value("albumin-correction-unreliable"):
                note = (
                    f"albumin below {self.kb.quantity('albumin-correction-unreliable')}: correction is unreliable, "
                    "an ionized calcium is preferred"
                )
            status, comparisons = self.judge(
                calcium, value, "calcium-total-upper", "calcium-total-lower", use_flag=not corrected
            )
            return CalciumReading("corrected", value, status, comparisons, calcium, albumin, note)
        status, comparisons = self.judge(calcium, calcium.value, "calcium-total-upper", "calcium-total-lower")
        return CalciumReading(
            "total-uncorrected",
            calcium.value,
            status,
            comparisons,
            calcium,
            None,
            f"no albumin within {self.kb.quantity('pairing-hours')} of this calcium: total calcium used without correction",
        )

    def _calcium_reading(self) -> CalciumReading | None:
        """Ionized calcium is preferred (clinical-knowledge.md 2.1), but not a stale one: an
        albumin-corrected calcium drawn after the last ionized calcium describes the patient now."""
        totals = self.labs(Analyte.CALCIUM_TOTAL, self.gate_start)
        readings = [self.reading_for_total(lab) for lab in totals if lab.value is not None]
        self.total_readings = readings  # reused by hypercalcemia_confirmed
        # Within the window, a calcium that could be corrected for albumin classifies; an
        # uncorrected one is used only when there is nothing better (it cannot pass the gate).
        corrected = [reading for reading in readings if reading.kind == "corrected"]
        best_total = corrected[0] if corrected else (readings[0] if readings else None)
        ionized = self.latest(Analyte.CALCIUM_IONIZED, self.gate_start)
        if ionized is not None and ionized.value is not None:
            newer_corrected = corrected and corrected[0].calcium.effective > ionized.effective + self.pairing
            if not newer_corrected:
                status, comparisons = self.judge(ionized, ionized.value, "calcium-ionized-upper", None)
                return CalciumReading("ionized", ionized.value, status, comparisons, ionized, None)
        return best_total

    def hypercalcemia_confirmed(self) -> bool:
        """High calcium by ionized calcium, or on two or more draws in the gate window
        (a single high total calcium needs a repeat before it is labelled, per 5.2)."""
        if self.calcium is None or self.calcium.status != HIGH:
            return False
        if self.calcium.kind == "ionized":
            return True
        highs = {reading.calcium.effective.date() for reading in self.total_readings if reading.status == HIGH}
        return len(highs) >= 2

    def _phosphate_reading(self) -> PhosphateReading | None:
        lab = self.latest(Analyte.PHOSPHATE, self.gate_start)
        if lab is None or lab.value is None:
            return None
        status, comparisons = self.judge(lab, lab.value, "phosphate-upper", None)
        return PhosphateReading(lab.value, status, comparisons, lab)

    def _calcium_phosphate_product(self) -> DerivedValue | None:
        for phosphate in self.labs(Analyte.PHOSPHATE, self.gate_start):
            if phosphate.comparator is not None or phosphate.value is None:
                continue
            calcium = self._paired(Analyte.CALCIUM_TOTAL, phosphate.effective)
            if calcium is None:
                continue
            reading = self.reading_for_total(calcium)
            product = calcium_phosphate_product(reading.value, phosphate.value)
            metastatic = self.kb.threshold("caxp-metastatic")
            target = self.kb.threshold("caxp-kdoqi-target")
            outcome = "above" if product > metastatic.value else "not above"
            basis = "knowledge base"
            if outcome == "above" and self._child_values_in_range(reading, phosphate):
                # The adult product limit does not make a child's normal values metastatic: each
                # is within the lab's age-specific range (clinical-knowledge.md 2.2, paediatric
                # targets differ) [GK: design choice].
                outcome = "not applied"
                basis = "child: calcium and phosphate each within the lab's age-specific range"
            comparisons = [
                Comparison(metastatic.id, metastatic.value, metastatic.unit, basis, outcome, metastatic.sources)
            ]
            if self.kidney.at_least_g3a:
                comparisons.append(
                    Comparison(
                        target.id,
                        target.value,
                        target.unit,
                        "historical KDOQI target in CKD (context only)",
                        "at or above target" if product >= target.value else "below target",
                        target.sources,
                    )
                )
            inputs: tuple[Evidence, ...] = (lab_evidence(reading.calcium), lab_evidence(phosphate))
            if reading.albumin is not None:
                inputs += (lab_evidence(reading.albumin),)
            kind = (
                "albumin-corrected calcium"
                if reading.kind == "corrected"
                else f"total calcium (no albumin within {self.kb.quantity('pairing-hours')})"
            )
            return DerivedValue(
                name="calcium-phosphate-product",
                value=round(product, 1),
                unit="mg2/dL2",
                category=None,
                formula=f"Ca x P = {kind} {_fmt(reading.value)} mg/dL x phosphate {_fmt(phosphate.value)} mg/dL",
                inputs=inputs,
                comparisons=tuple(comparisons),
                date=phosphate.effective,
            )
        return None

    def _child_values_in_range(self, reading: CalciumReading, phosphate: LabResult) -> bool:
        """True for a child whose calcium and phosphate are each normal by the lab's own range or
        flag (not by the adult fallback cut-offs)."""
        if not self.child or reading.status != NORMAL or phosphate.value is None:
            return False
        if not any(c.basis in ("lab reference range", "lab's own interpretation flag") for c in reading.comparisons):
            return False
        status, comparisons = self.judge(phosphate, phosphate.value, None, None)
        return status == NORMAL and bool(comparisons)

    # ----- kidney ----------------------------------------------------------------------------

    def _category(self, egfr: float) -> str:
        kb = self.kb
        return ckd_category(
            egfr,
            kb.value("egfr-g2"),
            kb.value("egfr-g3a"),
            kb.value("egfr-g3b"),
            kb.value("egfr-g4"),
            kb.value("egfr-g5"),
        )

    def _aki_at(self, moment: datetime) -> list[ConditionFinding]:
        """Coded acute kidney injuries under way at `moment` (clinical-knowledge.md 2.3a): begun by
        then (a day's grace for charting) and not yet abated, or still active when no end is given."""
        found = []
        for condition in self.conditions(ClinicalConcept.ACUTE_KIDNEY_INJURY):
            start = condition.first_known
            if start is not None and start > moment + timedelta(days=1):
                continue
            ongoing = condition.abatement >= moment if condition.abatement is not None else condition.active
            if ongoing:
                found.append(condition)
        return found

    def _creatinine_rise(self, creatinine: LabResult) -> LabResult | None:
        """The earlier creatinine this one rose from by the KDIGO acute kidney injury criteria, or
        None (`_creatinine_rises`)."""
        return self._creatinine_rises.get(id(creatinine))

    @cached_property
    def _creatinine_rises(self) -> dict[int, LabResult]:
        """For each creatinine (by identity) that rose by the KDIGO acute kidney injury criteria
        (at least `aki-creatinine-rise` within `aki-creatinine-rise-hours`, or at least
        `aki-creatinine-ratio` times within `aki-creatinine-ratio-days`), the earlier one it rose
        from. A creatinine moving that fast is not at steady state, so no equation is valid
        (clinical-knowledge.md 2.3a). Worked out once per patient: the rules ask for several
        draws, and each walk reads only the preceding window (the list is newest first)."""
        kb = self.kb
        hours = timedelta(hours=kb.value("aki-creatinine-rise-hours"))
        days = timedelta(days=kb.days("aki-creatinine-ratio-days"))
        window = max(hours, days)
        rise, ratio = kb.value("aki-creatinine-rise"), kb.value("aki-creatinine-ratio")
        labs = self.labs(Analyte.CREATININE)
        rises: dict[int, LabResult] = {}
        for start, creatinine in enumerate(labs):
            if creatinine.value is None or creatinine.comparator is not None:
                continue
            for earlier in labs[start + 1 :]:
                gap = creatinine.effective - earlier.effective
                if gap > window:
                    break
                if gap <= timedelta(0) or earlier.value is None or earlier.comparator is not None or earlier.value <= 0:
                    continue
                if (gap <= hours and creatinine.value - earlier.value >= rise - 1e-9) or (
                    gap <= days and creatinine.value >= ratio * earlier.value - 1e-9
                ):
                    rises[id(creatinine)] = earlier
                    break
        return rises

    def _rise_near(self, moment: datetime) -> tuple[LabResult, LabResult] | None:
        """(creatinine, the one it rose from) for a creatinine drawn within a day of `moment` (the
        draw a reported eGFR was computed from) that meets the acute kidney injury criteria."""
        for lab in self.labs(Analyte.CREATININE, moment - timedelta(days=1)):
            if abs(lab.effective - moment) > timedelta(days=1):
                continue
            earlier = self._creatinine_rise(lab)
            if earlier is not None:
                return lab, earlier
        return None

    def _rise_words(self, creatinine: LabResult, earlier: LabResult) -> str:
        kb = self.kb
        return (
            f"creatinine rose from {earlier.reported} to {creatinine.reported} "
            f"(an acute kidney injury by creatinine: a rise of at least {kb.quantity('aki-creatinine-rise')} "
            f"within {kb.quantity('aki-creatinine-rise-hours')}, or to {kb.number('aki-creatinine-ratio')} times "
            f"within {kb.quantity('aki-creatinine-ratio-days')})"
        )

    def _height_near(self, moment: datetime) -> LabResult | None:
        """The body height measured nearest to `moment`, within the knowledge base's window."""
        window = timedelta(days=self.kb.days("height-lookback-days"))
        best: LabResult | None = None
        for lab in self.labs(Analyte.BODY_HEIGHT):
            if lab.value is None or lab.comparator is not None or abs(lab.effective - moment) > window:
                continue
            if best is None or abs(lab.effective - moment) < abs(best.effective - moment):
                best = lab
        return best

    def estimate_egfr(self, creatinine: LabResult) -> tuple[float | None, str | None, LabResult | None, str | None]:
        """(eGFR, method, height used, why not) for one creatinine (clinical-knowledge.md 2.3a):
        CKD-EPI 2021 from 18 years (needs administrative sex), bedside Schwartz from 1 to 18 years
        (needs a height measured within a year), nothing under 1 year."""
        kb = self.kb
        if creatinine.value is None or creatinine.comparator is not None or creatinine.value <= 0:
            return None, None, None, "creatinine not usable for an estimate"
        age = self.age_at(creatinine.effective)
        if age is None:
            return None, None, None, "no birth date: age unknown"
        if age < kb.value("egfr-estimate-min-age-years"):
            return (
                None,
                None,
                None,
                f"under {kb.quantity('egfr-estimate-min-age-years')}: no creatinine equation is valid",
            )
        if age >= kb.value("adult-age-years"):
            sex = self.findings.sex
            if sex not in (Sex.FEMALE, Sex.MALE):
                return None, None, None, "administrative sex not recorded: CKD-EPI 2021 needs it"
            female = sex is Sex.FEMALE
            suffix = "female" if female else "male"
            value = ckd_epi_2021(
                creatinine.value,
                age,
                female,
                constant=kb.value("ckd-epi-2021-constant"),
                kappa=kb.value(f"ckd-epi-2021-kappa-{suffix}"),
                alpha=kb.value(f"ckd-epi-2021-alpha-{suffix}"),
                exponent_high=kb.value("ckd-epi-2021-exponent-high"),
                age_base=kb.value("ckd-epi-2021-age-base"),
                female_factor=kb.value("ckd-epi-2021-female-factor"),
            )
            return value, METHOD_CKD_EPI, None, None
        height = self._height_near(creatinine.effective)
        if height is None or height.value is None:
            return (
                None,
                None,
                None,
                f"no body height measured within {kb.quantity('height-lookback-days')}: bedside Schwartz needs one",
            )
        return (
            bedside_schwartz(height.value, creatinine.value, kb.value("schwartz-bedside-k")),
            METHOD_SCHWARTZ,
            height,
            None,
        )

    def _chronic(self, moment: datetime) -> bool:
        """An eGFR below 60 (reported or estimated, outside any coded AKI) at least 3 months
        before `moment` (KDIGO chronicity, clinical-knowledge.md 2.3)."""
        kb = self.kb
        before = moment - timedelta(days=kb.days("ckd-chronicity-days"))
        limit = kb.value("egfr-g3a")
        for lab in self.labs(Analyte.EGFR):
            if lab.effective > before or lab.value is None or lab.comparator is not None:
                continue
            if lab.value < limit and not self._aki_at(lab.effective) and self._rise_near(lab.effective) is None:
                return True
        for lab in self.labs(Analyte.CREATININE):
            if lab.effective > before or self._aki_at(lab.effective):
                continue
            value, _, _, _ = self.estimate_egfr(lab)
            if value is not None and value < limit and self._creatinine_rise(lab) is None:
                return True
        return False

    def _kidney_status(self) -> KidneyStatus:
        kb = self.kb
        egfr = self.latest(Analyte.EGFR, self.gate_start)
        category: str | None = None
        chronic = False
        value: float | None = None
        method: str | None = None
        creatinine: LabResult | None = None
        height: LabResult | None = None
        not_reduced = False
        aki: list[ConditionFinding] = []
        rising: tuple[LabResult, LabResult] | None = None
        why_not: str | None = None
        if egfr is not None and egfr.value is not None and egfr.comparator is None:
            value, method = egfr.value, METHOD_REPORTED
            aki = self._aki_at(egfr.effective)
            rising = None if aki else self._rise_near(egfr.effective)
            if rising is not None:
                why_not = self._rise_words(*rising)
            if not aki and rising is None:
                category = self._category(egfr.value)
                chronic = category in CKD_STAGES and self._chronic(egfr.effective)
        elif egfr is not None and egfr.comparator in (">", ">=") and egfr.value is not None:
            if egfr.value >= kb.value("egfr-g3a"):
                category, method = "G1-G2", METHOD_REPORTED
        else:
            egfr = None
            creatinine = next(
                (lab for lab in self.labs(Analyte.CREATININE, self.gate_start) if lab.comparator is None), None
            )
            if creatinine is not None:
                aki = self._aki_at(creatinine.effective)
                earlier = None if aki else self._creatinine_rise(creatinine)
                if aki:
                    why_not = "creatinine drawn during a coded acute kidney injury: no equation is valid"
                elif earlier is not None:
                    rising = (creatinine, earlier)
                    why_not = self._rise_words(creatinine, earlier) + ": no equation is valid"
                else:
                    value, method, height, why_not = self.estimate_egfr(creatinine)
                    if value is not None:
                        category = self._category(value)
                        chronic = category in CKD_STAGES and self._chronic(creatinine.effective)
                    elif self.child and creatinine.value is not None and creatinine.reference_high is not None:
                        # A child's creatinine within the lab's own age-specific range: kidney
                        # function not reduced, though no category can be given (2.3a) [GK].
                        status, _ = self.judge(creatinine, creatinine.value, None, None)
                        not_reduced = status in (NORMAL, LOW)
        recent = self.gate_start
        dialysis_procedures = [
            p for p in self.procedures(ProcedureKind.DIALYSIS) if p.status not in ("not-done", "entered-in-error")
        ]
        dialysis_conditions = self.conditions(ClinicalConcept.DIALYSIS_DEPENDENCE)
        evidence: list[Evidence] = []
        on_dialysis = False
        for condition in dialysis_conditions:
            if condition.active:
                on_dialysis = True
                evidence.append(condition_evidence(condition))
        for procedure in dialysis_procedures:
            when = procedure.end or procedure.start
            if when is not None and when >= recent:
                on_dialysis = True
                evidence.append(
                    procedure_evidence(procedure, f"dialysis within the last {kb.quantity('gate-lookback-days')}")
                )
                break
        starts = [p.start for p in dialysis_procedures if p.start is not None]
        starts += [c.first_known for c in dialysis_conditions if c.first_known is not None]
        dialysis_start = min(starts) if starts else None
        transplant_conditions = self.conditions(ClinicalConcept.KIDNEY_TRANSPLANT, active_only=True)
        transplant_procedures = self.procedures(ProcedureKind.KIDNEY_TRANSPLANT)
        transplant = bool(transplant_conditions or transplant_procedures)
        coded_stage: str | None = None
        coded_evidence: list[Evidence] = []
        for concept, stage in (
            (ClinicalConcept.ESRD, "G5"),
            (ClinicalConcept.CKD_STAGE_5, "G5"),
            (ClinicalConcept.CKD_STAGE_4, "G4"),
            (ClinicalConcept.CKD_STAGE_3, "G3"),
            (ClinicalConcept.CKD_EARLY, "G1-G2"),
        ):
            active = self.conditions(concept, active_only=True)
            if active:
                coded_stage = stage
                coded_evidence.extend(condition_evidence(c) for c in active)
                break
        coded_evidence.extend(condition_evidence(c) for c in transplant_conditions)
        coded_evidence.extend(procedure_evidence(p) for p in transplant_procedures)
        return KidneyStatus(
            category,
            egfr,
            chronic,
            on_dialysis,
            dialysis_start,
            tuple(evidence),
            transplant,
            coded_stage,
            tuple(coded_evidence),
            egfr_value=value,
            method=method,
            creatinine=creatinine,
            height=height,
            not_reduced=not_reduced,
            acute_kidney_injury=bool(aki) or rising is not None,
            aki_evidence=tuple(condition_evidence(c) for c in aki)
            + (tuple(lab_evidence(lab) for lab in rising if lab is not creatinine) if rising else ()),
            no_estimate_reason=why_not,
            creatinine_rising=rising is not None,
        )

    def kidney_derived(self) -> DerivedValue | None:
        """Kidney function as a derived value: the KDIGO category with the eGFR it came from, and
        which equation produced that eGFR when it was estimated from a creatinine (2.3a)."""
        kidney = self.kidney
        if not kidney.known:
            return None
        inputs: list[Evidence] = list(kidney.reading_evidence())
        comparisons: list[Comparison] = []
        notes: list[str] = []
        category = kidney.category
        value = kidney.egfr_value
        if value is not None and category is not None:
            # Only the boundary that decides the category is shown.
            for threshold_id in ("egfr-g5", "egfr-g4", "egfr-g3b", "egfr-g3a", "egfr-g2"):
                threshold = self.kb.threshold(threshold_id)
                if value < threshold.value:
                    comparisons.append(
                        Comparison(
                            threshold_id,
                            threshold.value,
                            threshold.unit,
                            "KDIGO category boundary",
                            "below",
                            threshold.sources,
                        )
                    )
                    break
            if category in CKD_STAGES and not kidney.on_dialysis:
                below = f"eGFR below {self.kb.number('egfr-g3a')}"
                chronicity = self.kb.quantity("ckd-chronicity-days")
                notes.append(
                    f"{below} also at least {chronicity} earlier (chronic)"
                    if kidney.chronic_confirmed
                    else f"single {below}: chronicity ({chronicity}) not shown by the record"
                )
        if kidney.acute_kidney_injury and not kidney.creatinine_rising:
            notes.append("taken during a coded acute kidney injury: not staged as chronic kidney disease")
        elif kidney.creatinine_rising and kidney.egfr is not None:
            notes.append(f"taken while the {kidney.no_estimate_reason}: not staged as chronic kidney disease")
        if kidney.not_reduced:
            notes.append("creatinine within the lab's age-specific range: kidney function not reduced (no category)")
        if kidney.no_estimate_reason and value is None:
            notes.append(f"no eGFR estimate: {kidney.no_estimate_reason}")
        if kidney.on_dialysis:
            category = "G5D"
            inputs.extend(kidney.dialysis_evidence)
        if category is None and kidney.coded_stage is not None:
            category = f"{kidney.coded_stage} (coded)"
        inputs.extend(kidney.coded_evidence)
        if kidney.transplant:
            notes.append("kidney transplant recorded")
        if (
            kidney.estimated
            and kidney.creatinine is not None
            and kidney.creatinine.value is not None
            and value is not None
        ):
            formula = (
                f"eGFR {value:.0f} mL/min/1.73 m² estimated from creatinine {_fmt(kidney.creatinine.value)} mg/dL "
                f"with {kidney.method}"
            )
            if kidney.height is not None and kidney.height.value is not None:
                formula += f" (height {kidney.height.value:.0f} cm)"
            formula += "; KDIGO GFR category"
        elif kidney.egfr is not None:
            formula = (
                f"KDIGO GFR category from the latest reported eGFR in {self.kb.quantity('gate-lookback-days')}; "
                "G5D when on dialysis"
            )
        else:
            formula = "kidney status from the record (coded stage, dialysis or transplant)"
        reading = kidney.egfr or kidney.creatinine
        return DerivedValue(
            name="ckd-stage",
            value=round(value, 1) if value is not None else None,
            unit="mL/min/{1.73_m2}" if value is not None else None,
            category=category,
            formula=formula,
            inputs=tuple(inputs),
            comparisons=tuple(comparisons),
            note="; ".join(notes) or None,
            date=reading.effective if reading is not None else None,
            method=kidney.method,
            ckd_established=kidney.ckd_established,
        )

    def calcium_derived(self) -> DerivedValue | None:
        """The calcium used for classification (ionized, corrected or total) as a derived value."""
        reading = self.calcium
        if reading is None:
            return None
        inputs = (lab_evidence(reading.calcium),) + ((lab_evidence(reading.albumin),) if reading.albumin else ())
        if reading.kind == "ionized":
            name, formula = "ionized-calcium", "ionized calcium used as measured (preferred over corrected calcium)"
        elif reading.kind == "corrected":
            assert (
                reading.albumin is not None and reading.albumin.value is not None and reading.calcium.value is not None
            )
            name = "corrected-calcium"
            anchor = self.kb.threshold("albumin-correction-anchor")
            if not reading.anchor_applied:
                formula = "child with albumin within the lab's age-specific range: no correction"
            elif reading.albumin.value < anchor.value:
                formula = (
                    f"corrected Ca = {_fmt(reading.calcium.value)} + {self.kb.number('albumin-correction-coefficient')}"
                    f" x ({self.kb.number(anchor.id)} - {_fmt(reading.albumin.value)}) mg/dL"
                )
            else:
                formula = f"albumin at or above {self.kb.quantity(anchor.id)}: no correction"
        else:
            name, formula = "total-calcium", "total calcium without albumin correction"
        return DerivedValue(
            name=name,
            value=round(reading.value, 2),
            unit="mg/dL",
            category=reading.status,
            formula=formula,
            inputs=inputs,
            comparisons=reading.comparisons,
            note=reading.note,
            date=reading.calcium.effective,
        )

    def pth_status(self) -> tuple[str | None, LabResult | None, tuple[Comparison, ...]]:
        """Latest intact PTH in the yearly window against the lab's range or the fallback upper limit."""
        lab = self.latest(Analyte.PTH_INTACT, self.year_start)
        if lab is None or lab.value is None:
            return None, None, ()
        status, comparisons = self.judge(lab, lab.value, "pth-upper", None)
        return status, lab, comparisons

    def pth_suppressed(self) -> bool:
        """The latest intact PTH is suppressed: below the lab's lower limit (or flagged low), or
        below the knowledge base's `pth-suppressed` level whatever the range (5.2, section 3).

        The one reading of "suppressed" that both the cause (hypercalcemia of malignancy, vitamin
        D, granulomatous disease) and the workup (PTHrP and electrophoresis rather than a 24-hour
        urine calcium) rest on, so the two never contradict each other."""
        state, lab, _ = self.pth_status()
        if lab is None or lab.value is None:
            return False
        return state == LOW or bool(is_below(lab.value, lab.comparator, self.kb.value("pth-suppressed")))

    def onset(self) -> datetime | None:
        """The earliest date calcinosis or calciphylaxis is recorded (onset or recorded date)."""
        dates = [
            c.first_known
            for c in self.conditions(
                ClinicalConcept.CALCINOSIS_CUTIS,
                ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA,
                ClinicalConcept.CALCINOSIS_UNIVERSALIS,
                ClinicalConcept.CALCIPHYLAXIS,
            )
            if c.first_known is not None
        ]
        return min(dates) if dates else None
