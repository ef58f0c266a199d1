"""Order-sign checks: which unsigned orders feed calcification in this patient (clinical-knowledge.md
section 15), what the card says, and which orders must stay silent.

A clinician reviewing these rules reads this module and `knowledge/orders.json`. The gate (15.0)
decides which tables apply, strictest first: calciphylaxis or the consensus risk pattern (15.1),
an abnormal calcium, phosphate or Ca x P (15.2), an earlier iatrogenic episode (15.3); a
dystrophic-only patient gets no drug warning at all (15.4: warfarin, diltiazem, bisphosphonates and
the other reported treatments are treatments there, not triggers). A repeat lab within its
re-test interval gets an `info` card that asks whether the repeat is needed (15.5). Each draft
order gets at most one card, with the strictest indicator that applies; `critical` is never used.

Draft orders arrive here already resolved to drug classes, lab analytes and procedure kinds
(`fhir_mapping.orders`); nothing here knows FHIR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

from calcinosis.assessment import CalciphylaxisSignal, CalciphylaxisStatus, Evidence, Likelihood, SubtypeAssessment
from calcinosis.context import HIGH, LOW, PatientContext, lab_evidence
from calcinosis.engine import entry_evidence
from calcinosis.findings import Analyte, DrugClass, LabResult, PatientFindings, ProcedureKind
from calcinosis.knowledge_base import EVIDENCE_TAGS, KnowledgeBase, KnowledgeBaseError, default_knowledge
from calcinosis.risk import assess_risk
from calcinosis.statements import day
from calcinosis.subtypes import assess_calciphylaxis, assess_iatrogenic

INDICATOR_RANK = {"info": 0, "warning": 1}
SETTINGS = frozenset({"calciphylaxis", "metastatic", "iatrogenic", "advanced-ckd", "ckd-g3a", "ckd-g3"})
TRIGGERS = frozenset({"any", "calcium", "phosphate", "phosphate-not-high"})
ROUTES = frozenset({"any", "parenteral", "enteral", "systemic"})
USES = frozenset({"any", "binder", "supplement"})
ALTERNATIVE_WHEN = frozenset({"always", "pth-high", "binder"})
CKD_BANDS = frozenset({"none", "G3", "G4", "G5"})
LESION_RULES = frozenset({"CC-CPX-LESION", "CC-CPX-NONUREMIC"})
#: Routes that are not systemic (15.1: glucocorticoids by these routes are no risk factor).
LOCAL_ROUTES = (
    "topical", "intralesional", "intra-articular", "intraarticular", "inhal", "ophthalmic", "otic",
    "nasal", "cutaneous", "transdermal", "rectal", "intradermal",
)  # fmt: skip


class EncounterSetting(StrEnum):
    """Where the order is signed, as far as the record says (15.5 windows and exclusions)."""

    AMBULATORY = "ambulatory"
    INPATIENT = "inpatient"
    EMERGENCY = "emergency"
    INTENSIVE_CARE = "intensive-care"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DraftOrder:
    """One unsigned order, resolved to what the rules read.

    `drug_classes` come from the ingredients (product codes through the value sets, a contained
    or referenced Medication, or the name as a last resort; `resolved_by` says which, for the
    card's extension). `excluded` names why the order can never get a card (15.0: a crystalloid or
    dialysate that lists calcium, a multivitamin). `stops_or_lowers` is a draft that discontinues a
    medicine or lowers the dose of one already active (15.0: no card).
    """

    reference: str | None
    resource_type: str
    name: str
    label: str = ""
    drug_classes: tuple[DrugClass, ...] = ()
    analytes: tuple[Analyte, ...] = ()
    procedures: tuple[ProcedureKind, ...] = ()
    route: str | None = None
    daily_dose_mcg: float | None = None
    binder_use: bool = False
    stops: bool = False
    excluded: str | None = None
    resolved_by: tuple[str, ...] = ()
    unresolved: bool = False

    @property
    def parenteral(self) -> bool:
        """True when the route or the product name says intravenous or injected."""
        text = f" {self.route or ''} {self.label or self.name} ".lower()
        return any(
            word in text for word in (" iv ", "intravenous", "injection", "injectable", "parenteral", "infusion")
        )

    @property
    def systemic(self) -> bool:
        """False for local routes (topical, intralesional, inhaled...), which are no risk factor."""
        text = f"{self.route or ''} {self.label or self.name}".lower()
        return not any(word in text for word in LOCAL_ROUTES)

    @property
    def relevant(self) -> bool:
        """True when some rule could apply: the cheap early exit before any chart is read."""
        if self.excluded is not None or self.stops:
            return False
        return bool(self.drug_classes or self.analytes or self.procedures)


@dataclass(frozen=True, slots=True)
class PendingTest:
    """A test already ordered for this patient and not yet resulted (an active order on the
    chart). 15.5 counts it as "on file" like a result: ordering the same test again inside its
    re-test interval duplicates it. An imaging or procedure order (`procedures`, empty for a lab)
    keeps the patient-view workup from suggesting it again; the order-sign repeat check reads the
    lab analytes only."""

    reference: str
    analytes: tuple[Analyte, ...]
    authored: datetime
    procedures: tuple[ProcedureKind, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderRule:
    """One row of a section 15 table, as data."""

    id: str
    section: str
    setting: str
    drug_classes: tuple[DrugClass, ...]
    procedures: tuple[ProcedureKind, ...]
    indicator: str
    summary: str
    why: str
    sources: tuple[str, ...]
    evidence: str
    trigger: str = "any"
    route: str = "any"
    use: str = "any"
    ingredient: str | None = None
    alternative: str | None = None
    alternative_when: str = "always"
    warning_from: str | None = None


@dataclass(frozen=True, slots=True)
class RepeatWindow:
    """The re-test interval of one group of lab tests (15.5)."""

    id: str
    analytes: tuple[Analyte, ...]
    labels: dict[Analyte, str]
    inpatient_hours: int | None
    outpatient_days: dict[str, int]
    basis: str
    sources: tuple[str, ...]
    evidence: str


@dataclass(frozen=True, slots=True)
class OrderKnowledge:
    """The section 15 tables, validated at start-up."""

    rules: tuple[OrderRule, ...]
    repeat_windows: tuple[RepeatWindow, ...]
    repeat_card: dict[str, Any]
    override_reasons: dict[str, tuple[tuple[str, str], ...]]
    treatment_classes: tuple[DrugClass, ...]
    thresholds: dict[str, float]
    lab_retention_days: int = 400


@dataclass(frozen=True, slots=True)
class OrderAdvice:
    """What one draft order gets: at most one card's worth of statements.

    `kind` is `medication`, `precaution` or `repeat-lab` (which override reasons apply).
    `repeat_of` is the result already on file for a repeat lab; the card then offers to delete
    the draft (`delete_draft`).
    """

    order: DraftOrder
    rule_id: str
    section: str
    kind: str
    indicator: str
    summary: str
    why: tuple[str, ...]
    alternative: str | None
    evidence: tuple[Evidence, ...]
    sources: tuple[str, ...]
    repeat_of: Evidence | None = None

    @property
    def delete_draft(self) -> bool:
        """A repeat lab with an id can be removed from the order list by the clinician."""
        return self.repeat_of is not None and self.order.reference is not None


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """The outcome for all draft orders of one call: advice per order (none is the usual case) and
    which gates held, for the extension and the log."""

    advice: tuple[OrderAdvice, ...]
    settings: tuple[str, ...] = ()
    evidence_references: frozenset[str] = field(default_factory=frozenset)


def _read_orders_file() -> dict[str, Any]:
    try:
        text = resources.files("calcinosis").joinpath("knowledge").joinpath("orders.json").read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise KnowledgeBaseError(f"knowledge file orders.json: {error}") from error
    if not isinstance(data, dict):
        raise KnowledgeBaseError("knowledge file orders.json: top level must be an object")
    return data


def _cited(entry: dict[str, Any], where: str, kb: KnowledgeBase) -> tuple[str, ...]:
    keys = entry.get("sources")
    if not isinstance(keys, list) or not keys:
        raise KnowledgeBaseError(f"{where}: cites no source")
    for key in keys:
        if key not in kb.sources:
            raise KnowledgeBaseError(f"{where}: unknown source '{key}'")
    if entry.get("evidence") not in EVIDENCE_TAGS:
        raise KnowledgeBaseError(f"{where}: evidence must be one of {sorted(EVIDENCE_TAGS)}")
    return tuple(keys)


def _text(entry: dict[str, Any], key: str, where: str, optional: bool = False) -> Any:
    value = entry.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise KnowledgeBaseError(f"{where}: '{key}' must be a non-empty string")
    return value


def _choice(entry: dict[str, Any], key: str, allowed: frozenset[str], default: str, where: str) -> str:
    value = entry.get(key, default)
    if value not in allowed:
        raise KnowledgeBaseError(f"{where}: '{key}' must be one of {sorted(allowed)}")
    return str(value)


def load_order_knowledge(kb: KnowledgeBase | None = None) -> OrderKnowledge:
    """Read and check `knowledge/orders.json`: every rule cites known sources, names known drug
    classes, analytes and settings, and no template names a value it cannot be given."""
    kb = kb or default_knowledge()
    data = _read_orders_file()
    drug_classes = {d.value: d for d in DrugClass}
    analytes = {a.value: a for a in Analyte}
    procedures = {p.value: p for p in ProcedureKind}
    thresholds: dict[str, float] = {}
    for key, entry in (data.get("thresholds") or {}).items():
        where = f"orders.json threshold {key}"
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
            raise KnowledgeBaseError(f"{where}: needs a numeric value")
        _cited(entry, where, kb)
        thresholds[key] = float(entry["value"])
    rules: list[OrderRule] = []
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise KnowledgeBaseError("orders.json: 'rules' must be a non-empty list")
    for index, entry in enumerate(raw_rules):
        where = f"orders.json rule {index}"
        if not isinstance(entry, dict):
            raise KnowledgeBaseError(f"{where}: must be an object")
        try:
            classes = tuple(drug_classes[c] for c in entry.get("drug_classes", []))
            kinds = tuple(procedures[p] for p in entry.get("procedures", []))
        except KeyError as error:
            raise KnowledgeBaseError(f"{where}: unknown drug class or procedure {error}") from error
        if not classes and not kinds:
            raise KnowledgeBaseError(f"{where}: names no drug class or procedure")
        indicator = _choice(entry, "indicator", frozenset(INDICATOR_RANK), "info", where)
        warning_from = entry.get("warning_from")
        if warning_from is not None and warning_from not in thresholds:
            raise KnowledgeBaseError(f"{where}: unknown threshold '{warning_from}'")
        summary = _text(entry, "summary", where)
        for placeholder in ("{pattern}", "{value}", "{kidney}"):
            needs = {"{pattern}": "calciphylaxis", "{value}": "metastatic"}.get(placeholder)
            setting = entry.get("setting")
            if placeholder in summary and needs is not None and setting != needs:
                raise KnowledgeBaseError(f"{where}: {placeholder} is only filled for the '{needs}' setting")
            if (
                placeholder == "{kidney}"
                and placeholder in summary
                and setting not in ("advanced-ckd", "ckd-g3a", "ckd-g3")
            ):
                raise KnowledgeBaseError(f"{where}: {{kidney}} is only filled for kidney settings")
        rules.append(
            OrderRule(
                id=_text(entry, "id", where),
                section=_text(entry, "section", where),
                setting=_choice(entry, "setting", SETTINGS, "", where),
                drug_classes=classes,
                procedures=kinds,
                indicator=indicator,
                summary=summary,
                why=_text(entry, "why", where),
                sources=_cited(entry, where, kb),
                evidence=entry["evidence"],
                trigger=_choice(entry, "trigger", TRIGGERS, "any", where),
                route=_choice(entry, "route", ROUTES, "any", where),
                use=_choice(entry, "use", USES, "any", where),
                ingredient=_text(entry, "ingredient", where, optional=True),
                alternative=_text(entry, "alternative", where, optional=True),
                alternative_when=_choice(entry, "alternative_when", ALTERNATIVE_WHEN, "always", where),
                warning_from=warning_from,
            )
        )
    if len({r.id for r in rules}) != len(rules):
        raise KnowledgeBaseError("orders.json: rule ids must be unique")
    windows: list[RepeatWindow] = []
    for index, entry in enumerate(data.get("repeat_labs") or []):
        where = f"orders.json repeat_labs {index}"
        try:
            members = tuple(analytes[a] for a in entry["analytes"])
            labels = {analytes[k]: str(v) for k, v in entry["label"].items()}
        except (KeyError, TypeError, AttributeError) as error:
            raise KnowledgeBaseError(f"{where}: unknown analyte or label {error}") from error
        days = entry.get("outpatient_days")
        if (
            not isinstance(days, dict)
            or not set(days) <= CKD_BANDS
            or not all(isinstance(v, int) and v > 0 for v in days.values())
        ):
            raise KnowledgeBaseError(f"{where}: outpatient_days maps {sorted(CKD_BANDS)} to positive days")
        if set(members) - set(labels):
            raise KnowledgeBaseError(f"{where}: every analyte needs a label")
        hours = entry.get("inpatient_hours")
        if hours is not None and (not isinstance(hours, int) or hours <= 0):
            raise KnowledgeBaseError(f"{where}: inpatient_hours must be a positive integer or null")
        windows.append(
            RepeatWindow(
                _text(entry, "id", where),
                members,
                labels,
                hours,
                dict(days),
                _text(entry, "basis", where),
                _cited(entry, where, kb),
                entry["evidence"],
            )
        )
    card = data.get("repeat_lab_card")
    if not isinstance(card, dict):
        raise KnowledgeBaseError("orders.json: 'repeat_lab_card' must be an object")
    for key in ("summary", "why", "suggestion", "pending_summary", "pending_why", "pending_reported"):
        _text(card, key, "orders.json repeat_lab_card")
    _cited(card, "orders.json repeat_lab_card", kb)
    reasons: dict[str, tuple[tuple[str, str], ...]] = {}
    for kind, items in (data.get("override_reasons") or {}).items():
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 for i in items):
            raise KnowledgeBaseError(f"orders.json override_reasons {kind}: pairs of code and display")
        reasons[kind] = tuple((str(code), str(display)) for code, display in items)
    if set(reasons) != {"medication", "repeat-lab", "precaution"}:
        raise KnowledgeBaseError("orders.json override_reasons: medication, repeat-lab and precaution")
    try:
        treatment = tuple(drug_classes[c] for c in data.get("treatment_lookback_classes", []))
    except KeyError as error:
        raise KnowledgeBaseError(f"orders.json treatment_lookback_classes: unknown class {error}") from error
    retention = data.get("lab_retention_days")
    longest = max((days for w in windows for days in w.outpatient_days.values()), default=0)
    if not isinstance(retention, int) or retention <= longest:
        raise KnowledgeBaseError("orders.json: 'lab_retention_days' must be an integer beyond every re-test interval")
    return OrderKnowledge(tuple(rules), tuple(windows), card, reasons, treatment, thresholds, retention)


@lru_cache(maxsize=1)
def default_order_knowledge() -> OrderKnowledge:
    """The packaged order-sign tables, loaded once per process."""
    return load_order_knowledge()


# ----- the patient's gates -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Gates:
    """Which section 15 tables apply to this patient, with the words and evidence the cards use."""

    settings: frozenset[str]
    pattern: str | None
    pattern_evidence: tuple[Evidence, ...]
    abnormal: dict[str, tuple[str, tuple[Evidence, ...]]]
    calcium_value: float | None
    kidney: str | None
    kidney_band: str
    pth_high: bool


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _reported(lab: LabResult) -> str:
    return lab.reported or f"{_fmt(lab.value or 0)} {lab.unit or ''}".strip()


def _kidney(ctx: PatientContext) -> tuple[str | None, str]:
    """Words for the kidney stage ('CKD G5D') and the band of the 15.5 windows."""
    kidney = ctx.kidney
    if kidney.on_dialysis:
        return "CKD G5D (on dialysis)", "G5"
    stage = kidney.category if kidney.category in ("G3a", "G3b", "G4", "G5") else kidney.coded_stage
    if stage in ("G3a", "G3b", "G3"):
        band = "G3"
    elif stage in ("G4", "G5"):
        band = stage
    else:
        return None, "none"
    # The drug's risk follows today's kidney function, but "CKD" is a diagnosis that needs KDIGO
    # chronicity (clinical-knowledge.md 2.3): a single low eGFR is stated as the value it is.
    if kidney.ckd_established:
        return f"CKD {stage}", band
    if kidney.egfr_value is not None:
        return f"eGFR {round(kidney.egfr_value)} ({stage} range)", band
    return f"Kidney function in the {stage} range", band


def _gates(ctx: PatientContext, kb: KnowledgeBase, documented: bool) -> _Gates:
    """The gate of 15.0, strictest first; nothing applies unless calcinosis or calciphylaxis is
    documented or the consensus risk pattern is met."""
    risk = assess_risk(ctx)
    settings: set[str] = set()
    pattern: str | None = None
    pattern_evidence: tuple[Evidence, ...] = ()
    if risk.pattern == "met" or documented:
        settings.add("gated")
    calciphylaxis: SubtypeAssessment | None = None
    signal: CalciphylaxisSignal | None = None
    if documented or risk.pattern == "met":
        calciphylaxis, signal = assess_calciphylaxis(ctx, risk)
    if calciphylaxis is not None and any(f.rule_id == "CC-CPX-CODED" for f in calciphylaxis.findings):
        pattern = "Calciphylaxis on file"
        pattern_evidence = next(f.evidence for f in calciphylaxis.findings if f.rule_id == "CC-CPX-CODED")
    elif calciphylaxis is not None and signal is not None and signal.status is CalciphylaxisStatus.SUSPECTED:
        # Ischemic or necrotic lesions (or a provisional code): suspected calciphylaxis. The risk
        # pattern alone is only "elevated risk", never "possible calciphylaxis" (9, 11.4).
        pattern = "Suspected calciphylaxis"
        lesion_evidence = tuple(e for f in calciphylaxis.findings if f.rule_id in LESION_RULES for e in f.evidence)
        pattern_evidence = (lesion_evidence or tuple(e for f in calciphylaxis.findings for e in f.evidence))[:3]
    elif risk.pattern == "met":
        pattern = "Elevated calciphylaxis risk"
        pattern_evidence = tuple(e for factor in risk.major for e in factor.evidence[:1])[:3]
    elif documented and ctx.kidney.on_dialysis:
        # 15.4: once the patient is on dialysis (G5D), 15.1 applies even to dystrophic calcinosis.
        pattern = "Calcinosis on dialysis"
        pattern_evidence = tuple(entry_evidence(ctx.findings)[:1]) + ctx.kidney.dialysis_evidence[:1]
    if pattern is not None:
        settings.add("calciphylaxis")
    abnormal: dict[str, tuple[str, tuple[Evidence, ...]]] = {}
    calcium_value: float | None = None
    if "gated" in settings:
        reading = ctx.calcium
        if reading is not None and reading.status == HIGH:
            calcium_value = reading.value if reading.kind != "ionized" else None
            anchor = kb.value("albumin-correction-anchor")
            albumin = reading.albumin.value if reading.albumin is not None else None
            if reading.kind == "corrected" and albumin is not None and albumin < anchor:
                words = f"Corrected calcium {_fmt(reading.value)} mg/dL"
            elif reading.kind == "ionized":
                words = f"Ionized calcium {_reported(reading.calcium)}"
            else:
                words = f"Calcium {_reported(reading.calcium)}"
                calcium_value = reading.value
            evidence = (lab_evidence(reading.calcium),) + ((lab_evidence(reading.albumin),) if reading.albumin else ())
            abnormal["calcium"] = (words, evidence)
        phosphate = ctx.phosphate
        if phosphate is not None and phosphate.status == HIGH:
            abnormal["phosphate"] = (f"Phosphate {_reported(phosphate.lab)}", (lab_evidence(phosphate.lab),))
        caxp = ctx.caxp
        limit = kb.value("caxp-metastatic")
        if caxp is not None and caxp.value is not None and caxp.value > limit:
            abnormal["caxp"] = (f"Ca x P {_fmt(caxp.value)} mg²/dL²", caxp.inputs)
        if abnormal:
            settings.add("metastatic")
        if documented:
            iatrogenic = assess_iatrogenic(ctx)
            if iatrogenic.likelihood in (Likelihood.LIKELY, Likelihood.POSSIBLE):
                settings.add("iatrogenic")
    kidney_words, band = _kidney(ctx)
    if "gated" in settings and band != "none":
        settings.update({"ckd-g3", "ckd-g3a"})
        if band in ("G4", "G5"):
            settings.add("advanced-ckd")
    pth_state, _, _ = ctx.pth_status()
    return _Gates(
        frozenset(settings),
        pattern,
        pattern_evidence,
        abnormal,
        calcium_value,
        kidney_words,
        band,
        pth_state == HIGH,
    )


# ----- rules -----------------------------------------------------------------------------------


def _matches(rule: OrderRule, order: DraftOrder) -> DrugClass | ProcedureKind | None:
    """The class (or procedure) through which a rule applies to an order, or None."""
    matched: DrugClass | ProcedureKind | None = next((c for c in order.drug_classes if c in rule.drug_classes), None)
    if matched is None:
        matched = next((p for p in order.procedures if p in rule.procedures), None)
    if matched is None:
        return None
    if rule.route == "parenteral" and not order.parenteral:
        return None
    if rule.route == "enteral" and order.parenteral:
        return None
    if rule.route == "systemic" and not order.systemic:
        return None
    if rule.use == "binder" and not order.binder_use:
        return None
    if rule.use == "supplement" and order.binder_use:
        return None
    if rule.ingredient is not None and rule.ingredient not in (order.label or order.name).lower():
        return None
    return matched


def _trigger(rule: OrderRule, gates: _Gates) -> tuple[str, tuple[Evidence, ...]] | None:
    """The abnormal value that makes a 15.2 rule apply ('adds the abnormal ion'), or None."""
    abnormal = gates.abnormal
    if rule.trigger == "phosphate-not-high":
        return ("", ()) if "phosphate" not in abnormal else None
    order = {
        "any": ("calcium", "phosphate", "caxp"),
        "calcium": ("calcium", "caxp"),
        "phosphate": ("phosphate", "caxp"),
    }[rule.trigger]
    if rule.id == "metastatic-calcium-raising-drug":
        order = ("calcium",)
    for key in order:
        if key in abnormal:
            return abnormal[key]
    return None


def _apply(rule: OrderRule, order: DraftOrder, gates: _Gates, knowledge: OrderKnowledge) -> OrderAdvice | None:
    if rule.setting not in gates.settings or _matches(rule, order) is None:
        return None
    evidence: tuple[Evidence, ...] = ()
    value = ""
    if rule.setting == "metastatic" or rule.trigger != "any":
        found = _trigger(rule, gates)
        if found is None:
            return None
        value, evidence = found
    if rule.setting == "calciphylaxis":
        evidence = gates.pattern_evidence
    indicator = rule.indicator
    if (
        rule.warning_from is not None
        and gates.calcium_value is not None
        and gates.calcium_value >= knowledge.thresholds[rule.warning_from]
    ):
        indicator = "warning"
    alternative = rule.alternative
    if rule.alternative_when == "pth-high" and not gates.pth_high:
        alternative = None
    if rule.alternative_when == "binder" and not order.binder_use:
        alternative = None
    summary = rule.summary.format(pattern=gates.pattern or "", value=value, kidney=gates.kidney or "", drug=order.name)
    kind = "medication" if rule.section in ("15.1", "15.2") else "precaution"
    return OrderAdvice(
        order=order,
        rule_id=rule.id,
        section=rule.section,
        kind=kind,
        indicator=indicator,
        summary=summary,
        why=(rule.why,),
        alternative=alternative,
        evidence=evidence,
        sources=rule.sources,
    )


def _window(
    window: RepeatWindow,
    gates: _Gates,
    analyte: Analyte,
    kb: KnowledgeBase,
    ctx: PatientContext,
    encounter: EncounterSetting,
) -> timedelta | None:
    """The re-test interval for this patient, never longer than the workup look-back of section 6
    for the same test, so a test suggested on patient-view is never flagged as a repeat here."""
    if encounter in (EncounterSetting.INPATIENT, EncounterSetting.UNKNOWN) and window.inpatient_hours is not None:
        interval = timedelta(hours=window.inpatient_hours)
    else:
        days = window.outpatient_days.get(gates.kidney_band)
        if days is None:
            return None
        interval = timedelta(days=days)
    for item in kb.workup:
        if analyte.value in item.satisfied_by:
            lookback = item.lookback_days
            if ctx.kidney.on_dialysis and item.lookback_days_dialysis is not None:
                lookback = item.lookback_days_dialysis
            if lookback is not None:
                interval = min(interval, timedelta(days=lookback))
    return interval


def _interval(interval: timedelta) -> str:
    hours = interval.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 72 else f"{interval.days} days"


def _treatment_since(
    ctx: PatientContext, moment: datetime, knowledge: OrderKnowledge, drafts: tuple[DraftOrder, ...]
) -> bool:
    """A calcium-, phosphate- or vitamin D-acting drug or a calcimimetic started or changed since
    `moment` (a draft in the same call starts one now)."""
    for medication in ctx.medications(*knowledge.treatment_classes):
        if medication.start is not None and medication.start > moment:
            return True
    return any(set(d.drug_classes) & set(knowledge.treatment_classes) and d.relevant for d in drafts)


def _treated(ctx: PatientContext, knowledge: OrderKnowledge) -> bool:
    """Some calcium-, phosphate- or vitamin D-acting drug or calcimimetic is active now."""
    return any(
        m.status in ("active", "completed", "in-progress", "on-hold") and (m.end is None or m.end >= ctx.as_of)
        for m in ctx.medications(*knowledge.treatment_classes)
    )


def _repeat(
    order: DraftOrder,
    gates: _Gates,
    ctx: PatientContext,
    kb: KnowledgeBase,
    knowledge: OrderKnowledge,
    encounter: EncounterSetting,
    drafts: tuple[DraftOrder, ...],
    pending: tuple[PendingTest, ...] = (),
) -> OrderAdvice | None:
    """15.5: a result of the same test inside its re-test interval (or, without one, the same
    test already ordered inside it and not yet resulted), and none of the exclusions."""
    if "gated" not in gates.settings or encounter in (EncounterSetting.EMERGENCY, EncounterSetting.INTENSIVE_CARE):
        return None
    for analyte in order.analytes:
        window = next((w for w in knowledge.repeat_windows if analyte in w.analytes), None)
        if window is None:
            continue
        interval = _window(window, gates, analyte, kb, ctx, encounter)
        if interval is None:
            continue
        last = ctx.latest(analyte, ctx.as_of - interval)
        if last is None:
            ordered = _pending_repeat(order, analyte, window, interval, ctx, knowledge, drafts, pending)
            if ordered is not None:
                return ordered
            continue
        status, _ = ctx.judge(last, last.value or 0.0, None, None) if last.value is not None else (None, ())
        abnormal = status in (HIGH, LOW) or (last.interpretation is not None and last.interpretation.value != "normal")
        if abnormal and _treated(ctx, knowledge):
            continue
        if _treatment_since(ctx, last.effective, knowledge, drafts):
            continue
        card = knowledge.repeat_card
        shown = last.reported if last.reported else _reported(last)
        summary = card["summary"].format(test=window.labels[analyte], date=day(last.effective), value=shown)
        evidence = lab_evidence(last)
        return OrderAdvice(
            order=order,
            rule_id=f"repeat-{window.id}",
            section="15.5",
            kind="repeat-lab",
            indicator="info",
            summary=summary,
            why=(card["why"], f"Usual interval here: {_interval(interval)} ({window.basis})."),
            alternative=None,
            evidence=(evidence,),
            sources=tuple(dict.fromkeys(window.sources + tuple(card["sources"]))),
            repeat_of=evidence,
        )
    return None


def _pending_repeat(
    order: DraftOrder,
    analyte: Analyte,
    window: RepeatWindow,
    interval: timedelta,
    ctx: PatientContext,
    knowledge: OrderKnowledge,
    drafts: tuple[DraftOrder, ...],
    pending: tuple[PendingTest, ...],
) -> OrderAdvice | None:
    """15.5: the same test ordered inside the interval and not yet resulted ("an active
    ServiceRequest for the same test"). The newest such order counts; a treatment started or
    changed since it was placed may justify another, so then there is no card, as for a result."""
    since = ctx.as_of - interval
    placed = max(
        (
            p
            for p in pending
            if analyte in p.analytes and p.reference != order.reference and since <= p.authored <= ctx.as_of
        ),
        key=lambda p: p.authored,
        default=None,
    )
    if placed is None or _treatment_since(ctx, placed.authored, knowledge, drafts):
        return None
    card = knowledge.repeat_card
    test = window.labels[analyte]
    evidence = Evidence(
        reference=placed.reference,
        code=None,
        display=f"{test} order",
        reported=str(card["pending_reported"]),
        date=placed.authored,
        kind=analyte.value,
    )
    return OrderAdvice(
        order=order,
        rule_id=f"repeat-{window.id}-pending",
        section="15.5",
        kind="repeat-lab",
        indicator="info",
        summary=str(card["pending_summary"]).format(test=test, date=day(placed.authored)),
        why=(str(card["pending_why"]), f"Usual interval here: {_interval(interval)} ({window.basis})."),
        alternative=None,
        evidence=(evidence,),
        sources=tuple(dict.fromkeys(window.sources + tuple(card["sources"]))),
        repeat_of=evidence,
    )


def _strictest(candidates: list[OrderAdvice]) -> OrderAdvice | None:
    """One card per draft order: the strictest indicator, then the table order of section 15
    (15.1 before 15.2 ...); the other reasons join its detail."""
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda a: (-INDICATOR_RANK[a.indicator], a.section))
    best = ranked[0]
    extra = tuple(a.summary for a in ranked[1:])
    if not extra:
        return best
    evidence = best.evidence + tuple(e for a in ranked[1:] for e in a.evidence if e not in best.evidence)
    sources = tuple(dict.fromkeys(best.sources + tuple(s for a in ranked[1:] for s in a.sources)))
    return OrderAdvice(
        order=best.order,
        rule_id=best.rule_id,
        section=best.section,
        kind=best.kind,
        indicator=best.indicator,
        summary=best.summary,
        why=best.why + tuple(f"Also: {text}" for text in extra),
        alternative=best.alternative,
        evidence=evidence,
        sources=sources,
        repeat_of=best.repeat_of,
    )


def _lowers_dose(ctx: PatientContext, order: DraftOrder) -> bool:
    """15.0: a draft that lowers the daily dose of a medicine of the same class already active
    (both doses known) is a step away from the risk, not towards it."""
    if order.daily_dose_mcg is None or not order.drug_classes:
        return False
    for medication in ctx.medications(*order.drug_classes):
        active = medication.status in ("active", "in-progress", "on-hold") and (
            medication.end is None or medication.end >= ctx.as_of
        )
        if active and medication.daily_dose_mcg is not None and order.daily_dose_mcg < medication.daily_dose_mcg:
            return True
    return False


def check_orders(
    findings: PatientFindings,
    drafts: tuple[DraftOrder, ...],
    kb: KnowledgeBase | None = None,
    knowledge: OrderKnowledge | None = None,
    encounter: EncounterSetting = EncounterSetting.UNKNOWN,
    pending: tuple[PendingTest, ...] = (),
) -> OrderCheck:
    """Advice for the draft orders of one order-sign call. Silent (no advice) unless the gate of
    15.0 holds and some draft order is one the tables name. `pending` are the lab tests already
    ordered and not yet resulted (15.5 counts them as on file)."""
    relevant = tuple(d for d in drafts if d.relevant)
    if not relevant:
        return OrderCheck(())
    kb = kb or default_knowledge()
    knowledge = knowledge or default_order_knowledge()
    documented = bool(entry_evidence(findings))
    ctx = PatientContext(findings, kb)
    if not documented and not ctx.kidney.on_dialysis:
        return OrderCheck(())  # neither calcinosis nor the (dialysis) risk pattern is possible
    gates = _gates(ctx, kb, documented)
    if "gated" not in gates.settings:
        return OrderCheck(())
    advice: list[OrderAdvice] = []
    for order in relevant:
        if _lowers_dose(ctx, order):
            continue
        candidates = [a for rule in knowledge.rules if (a := _apply(rule, order, gates, knowledge)) is not None]
        if order.analytes:
            repeat = _repeat(order, gates, ctx, kb, knowledge, encounter, drafts, pending)
            if repeat is not None:
                candidates.append(repeat)
        best = _strictest(candidates)
        if best is not None:
            advice.append(best)
    references = frozenset(e.reference for a in advice for e in a.evidence)
    return OrderCheck(tuple(advice), tuple(sorted(gates.settings - {"gated"})), references)


__all__ = [
    "DraftOrder",
    "EncounterSetting",
    "OrderAdvice",
    "OrderCheck",
    "OrderKnowledge",
    "PendingTest",
    "check_orders",
    "default_order_knowledge",
    "load_order_knowledge",
]
