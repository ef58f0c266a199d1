"""Workup gaps: catalogue items that apply to this picture and have no result in their window.

Which items apply is decided here from the subtype likelihoods and labs ("triggers" named in
workup.json); what each item is, its code, window and citation, lives in the catalogue.
Biopsy is never suggested while calciphylaxis is suspected (clinical-knowledge.md 7.2): the item
is withheld and the withholding is reported, so the card can say why.

"Not yet done" also means "not yet ordered" (15.5): a test already ordered and not yet resulted
(a lab by its LOINC code, an imaging order by the value sets that recognise it done, for items with a look-back),
placed inside the item's look-back, is "on file" as a result would be. The item is then reported
as pending instead of suggested, so the workup never proposes an order that the order-sign service
would flag as a repeat (its re-test intervals never exceed these look-backs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from calcinosis.assessment import (
    DifferentialAssessment,
    Likelihood,
    PendingWorkup,
    Subtype,
    SubtypeAssessment,
    SuppressedWorkup,
    WorkupGap,
)
from calcinosis.context import HIGH, NORMAL, PatientContext, lab_evidence, procedure_evidence
from calcinosis.findings import Analyte, Interpretation, ProcedureKind
from calcinosis.knowledge_base import WorkupItem

ANALYTES = {a.value: a for a in Analyte}
PROCEDURES = {p.value: p for p in ProcedureKind}
SUSPECTED = (Likelihood.LIKELY, Likelihood.POSSIBLE)
ELEVATED_RISK = "calciphylaxis-elevated-risk"
"""Internal trigger: the risk pattern without lesions. It orders nothing of its own, but a biopsy
stays withheld as it is while calciphylaxis is suspected (7.2): a biopsy can start the ulcer."""


class OrderedTest(Protocol):
    """A test (a lab, or an imaging or procedure order) ordered for this patient and not yet resulted (`calcinosis.orders.PendingTest`,
    read from the chart's active ServiceRequests by `fhir_mapping.orders.pending_tests`)."""

    @property
    def reference(self) -> str: ...

    @property
    def analytes(self) -> tuple[Analyte, ...]: ...

    @property
    def procedures(self) -> tuple[ProcedureKind, ...]: ...

    @property
    def authored(self) -> datetime: ...


def active_triggers(
    ctx: PatientContext,
    subtypes: dict[Subtype, SubtypeAssessment],
    differentials: tuple[DifferentialAssessment, ...],
) -> set[str]:
    """The catalogue triggers that hold for this patient."""
    triggers = {"always"}
    calcium_high = ctx.calcium is not None and ctx.calcium.status == HIGH
    phosphate_high = ctx.phosphate is not None and ctx.phosphate.status == HIGH
    calciphylaxis = subtypes[Subtype.CALCIPHYLAXIS].likelihood in SUSPECTED
    if subtypes[Subtype.METASTATIC].likelihood in SUSPECTED or ctx.kidney.at_least_g3a or calciphylaxis:
        triggers.add("metabolic")
    if calcium_high:
        triggers.add("hypercalcemia")
        pth_state, _, _ = ctx.pth_status()
        if ctx.pth_suppressed():  # the same reading as the cause it names (causes.py)
            triggers.add("hypercalcemia-low-pth")
        elif pth_state in (NORMAL, HIGH):
            triggers.add("hypercalcemia-pth-not-low")
    if calcium_high or phosphate_high:
        triggers.add("hypercalcemia-or-hyperphosphatemia")
    # "If there is no established CTD diagnosis but the picture suggests one" (5.1): features of
    # systemic sclerosis (Raynaud, digital ulcers, acro-osteolysis), a positive ANA or a raised
    # CK, with no connective tissue disease coded. A chart with no coded cause is not enough: the
    # antibody panels are low-yield there (11.4).
    dystrophic_rules = set(subtypes[Subtype.DYSTROPHIC].rule_ids)
    if "CC-DYS-CAUSE" not in dystrophic_rules and (
        "CC-DYS-SSC-FEATURE" in dystrophic_rules or _ctd_labs_suggestive(ctx)
    ):
        triggers.add("suspected-ctd")
    reading = ctx.calcium
    if (
        reading is not None
        and reading.kind == "corrected"
        and reading.albumin is not None
        and reading.albumin.value is not None
        and reading.anchor_applied
        and (
            reading.albumin.value < ctx.kb.value("albumin-correction-unreliable")
            or (ctx.kidney.advanced and reading.albumin.value < ctx.kb.value("albumin-correction-anchor"))
        )
    ):
        # 2.1: prefer ionized calcium in ESKD and where albumin is low; the correction is unreliable.
        triggers.add("corrected-calcium-unreliable")
    if ctx.kidney.on_dialysis or "corrected-calcium-unreliable" in triggers:
        triggers.add("urine-not-informative")
    if calciphylaxis:
        triggers.add("calciphylaxis-suspected")
    if any(f.rule_id == "CC-CPX-ELEVATED-RISK" for f in subtypes[Subtype.CALCIPHYLAXIS].findings):
        triggers.add(ELEVATED_RISK)
    raised = {d.differential_id for d in differentials if d.raised_by}
    if "gouty-tophus" in raised:
        triggers.add("gout-raised")
    if "xanthoma" in raised:
        triggers.add("xanthoma-raised")
    if "primary-hyperoxaluria" in raised:
        triggers.add("oxalosis-raised")
    if "hyperphosphatemic-tumoral-calcinosis" in raised:
        triggers.add("hftc-raised")
    no_likely = not any(s.likelihood is Likelihood.LIKELY for s in subtypes.values())
    mimic_raised = bool(
        raised
        & {"gouty-tophus", "osteoma-cutis", "xanthoma", "primary-hyperoxaluria", "progressive-osseous-heteroplasia"}
    )
    if no_likely and (mimic_raised or subtypes[Subtype.IDIOPATHIC].likelihood is Likelihood.POSSIBLE):
        triggers.add("diagnosis-uncertain")
    return triggers


def _ctd_labs_suggestive(ctx: PatientContext) -> bool:
    """A positive ANA, or a creatine kinase above the lab's range, on file (5.1, 6)."""
    for lab in ctx.labs(Analyte.ANA):
        if lab.interpretation in (Interpretation.HIGH, Interpretation.ABNORMAL):
            return True
        if lab.qualitative is not None and lab.qualitative.strip().lower().startswith(
            ("positive", "detected", "reactive")
        ):
            return True
    ck = ctx.latest(Analyte.CREATINE_KINASE)
    if ck is not None and ck.value is not None:
        status, _ = ctx.judge(ck, ck.value, None, None)
        return status == HIGH
    return False


def _lookback(ctx: PatientContext, item: WorkupItem) -> int | None:
    """The item's look-back in days (its dialysis one on dialysis); None: ever."""
    if ctx.kidney.on_dialysis and item.lookback_days_dialysis is not None:
        return item.lookback_days_dialysis
    return item.lookback_days


def _since(ctx: PatientContext, lookback: int | None) -> datetime | None:
    """The start of a look-back of `lookback` days; None: ever."""
    return ctx.as_of - timedelta(days=lookback) if lookback is not None else None


def _gap(ctx: PatientContext, item: WorkupItem) -> WorkupGap | None:
    """A gap for `item`, or None when a usable result lies within its window."""
    lookback = _lookback(ctx, item)
    since = _since(ctx, lookback)
    last = None
    unusable_note: str | None = None
    for name in item.satisfied_by:
        if name in ANALYTES:
            analyte = ANALYTES[name]
            if ctx.latest(analyte, since) is not None:
                return None
            older = ctx.latest(analyte)
            if older is not None and (last is None or (last.date is not None and older.effective > last.date)):
                last = lab_evidence(older, "outside the look-back window")
            bad = ctx.unusable(analyte, since)
            if bad:
                unusable_note = f"a result on file could not be used: {bad[0].unusable_reason}"
        elif name in PROCEDURES:
            done = [
                p
                for p in ctx.procedures(PROCEDURES[name])
                if p.status not in ("not-done", "entered-in-error")
                and (since is None or (p.start is not None and p.start >= since))
            ]
            if done:
                return None
            earlier = [p for p in ctx.procedures(PROCEDURES[name]) if p.start is not None]
            if earlier:
                last = procedure_evidence(
                    max(earlier, key=lambda p: p.start or ctx.as_of), "outside the look-back window"
                )
    reason = item.reason if unusable_note is None else f"{item.reason} ({unusable_note})"
    return WorkupGap(item.id, item.label, item.kind, item.code, reason, item.sources, lookback, item.code_note, last)


def _test_name(ctx: PatientContext, analyte: Analyte, item: WorkupItem) -> str:
    """What was ordered, in the catalogue's words: the item that orders this analyte (an ionized
    calcium ordered satisfies the albumin item too, and is named as what it is)."""
    if item.satisfied_by and item.satisfied_by[0] == analyte.value:
        return item.label
    for other in ctx.kb.workup:
        if other.satisfied_by and other.satisfied_by[0] == analyte.value:
            return other.label
    return item.label


def _ordered(ctx: PatientContext, item: WorkupItem, orders: Sequence[OrderedTest]) -> PendingWorkup | None:
    """The newest order, placed inside the item's look-back (15.5 "on file"), for a test that
    satisfies the item; None when there is none."""
    since = _since(ctx, _lookback(ctx, item))
    best: tuple[OrderedTest, Analyte | None] | None = None
    for order in orders:
        if order.authored > ctx.as_of or (since is not None and order.authored < since):
            continue
        analyte = next(
            (ANALYTES[n] for n in item.satisfied_by if n in ANALYTES and ANALYTES[n] in order.analytes), None
        )
        # An imaging or procedure item (plain radiograph, bone scintigraphy) by the same procedure
        # kind that a performed Procedure on file is recognised by (`_gap`). Only for an item with
        # a look-back: an item done "ever" (skin biopsy) would let an order nobody closed hide the
        # suggestion for good.
        procedure = since is not None and any(
            n in PROCEDURES and PROCEDURES[n] in order.procedures for n in item.satisfied_by
        )
        if (analyte is not None or procedure) and (best is None or order.authored > best[0].authored):
            best = (order, analyte)
    if best is None:
        return None
    order, analyte = best
    name = item.label if analyte is None else _test_name(ctx, analyte, item)
    return PendingWorkup(item.id, item.label, name, order.authored, order.reference)


def workup_gaps(
    ctx: PatientContext,
    subtypes: dict[Subtype, SubtypeAssessment],
    differentials: tuple[DifferentialAssessment, ...],
    orders: Sequence[OrderedTest] = (),
) -> tuple[tuple[WorkupGap, ...], tuple[SuppressedWorkup, ...], tuple[PendingWorkup, ...]]:
    """Gaps in catalogue order, items withheld on purpose, and items not suggested because a test
    for them is already ordered (`orders`: the tests ordered and not yet resulted)."""
    triggers = active_triggers(ctx, subtypes, differentials)
    gaps: list[WorkupGap] = []
    suppressed: list[SuppressedWorkup] = []
    pending: list[PendingWorkup] = []
    for item in ctx.kb.workup:
        if item.trigger not in triggers:
            continue
        if item.never_when is not None and (
            item.never_when in triggers or (item.never_when == "calciphylaxis-suspected" and ELEVATED_RISK in triggers)
        ):
            suppressed.append(SuppressedWorkup(item.id, item.label, item.caution or f"withheld: {item.never_when}"))
            continue
        gap = _gap(ctx, item)
        if gap is None:
            continue
        ordered = _ordered(ctx, item, orders) if orders else None
        if ordered is not None:
            pending.append(ordered)
        else:
            gaps.append(gap)
    # Biopsy must also never appear when calciphylaxis is suspected even if triggered otherwise.
    if "calciphylaxis-suspected" in triggers:
        for item in ctx.kb.workup:
            if item.never_when == "calciphylaxis-suspected" and item.trigger not in triggers:
                suppressed.append(
                    SuppressedWorkup(item.id, item.label, item.caution or "withheld while calciphylaxis is suspected")
                )
    return tuple(gaps), tuple(suppressed), tuple(pending)
