"""Draft orders (the `draftOrders` Bundle of order-sign) to `calcinosis.orders.DraftOrder`.

A MedicationRequest is resolved to its ingredients' drug classes in this order: its RxNorm codes
(product and ingredient codes, through the value sets, each with its recorded provenance), then a
contained or referenced Medication (its code and its `ingredient` items), and the names as a last
resort (the value sets' ingredient phrases on the text and displays). A ServiceRequest is
resolved to the lab analyte of its LOINC code, or to a procedure kind (EEG or EMG). Every other
request type is read as irrelevant: the order check never speaks about it.

Also the order-sign pipeline: the chart's findings, the order check, and FHIR validation of
exactly the record entries the advice cites (as `fhir_mapping.pipeline` does for patient-view).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from calcinosis.findings import Analyte, DrugClass, PatientFindings, ProcedureKind
from calcinosis.knowledge_base import KnowledgeBase, default_knowledge
from calcinosis.orders import (
    DraftOrder,
    EncounterSetting,
    OrderCheck,
    OrderKnowledge,
    PendingTest,
    check_orders,
    default_order_knowledge,
)
from fhir_mapping.mapping import FindingsBuilder, bundle_resources, map_resources, parse_datetime
from fhir_mapping.pipeline import _without, default_terminology, validation_problem
from fhir_mapping.terminology import LOINC, RXNORM, Finding, Terminology, normalise_system

#: Request statuses that do not add a medicine or test (15.0: a discontinued order gets no card).
NOT_ADDING = frozenset({"stopped", "cancelled", "entered-in-error", "completed", "on-hold", "revoked"})
EXCLUDING = {
    DrugClass.CALCIUM_CONTAINING_FLUID: "an infusion or dialysis fluid that lists a calcium or phosphate salt",
    DrugClass.MULTIVITAMIN: "a multivitamin",
}
_BINDER_WORDS = re.compile(r"phosph|binder|with (each )?meals?|with food|with (each )?main meals?")
#: Encounter.class codes (HL7 v3 ActCode) and what they mean for the 15.5 windows.
ENCOUNTER_CLASSES = {
    "AMB": EncounterSetting.AMBULATORY,
    "VR": EncounterSetting.AMBULATORY,
    "HH": EncounterSetting.AMBULATORY,
    "IMP": EncounterSetting.INPATIENT,
    "ACUTE": EncounterSetting.INPATIENT,
    "NONAC": EncounterSetting.INPATIENT,
    "OBSENC": EncounterSetting.INPATIENT,
    "SS": EncounterSetting.INPATIENT,
    "PRENC": EncounterSetting.AMBULATORY,
    "EMER": EncounterSetting.EMERGENCY,
}


class DraftOrdersError(ValueError):
    """`draftOrders` is not a Bundle of resources (answered 400; names the field only)."""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _codings(concept: Any) -> list[tuple[str | None, str | None, str | None]]:
    found = []
    for coding in _list(_dict(concept).get("coding")):
        coding = _dict(coding)
        system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
        found.append(
            (
                system if isinstance(system, str) else None,
                code if isinstance(code, str) else None,
                display if isinstance(display, str) else None,
            )
        )
    return found


def _texts(concept: Any) -> list[str]:
    texts = [display for _, _, display in _codings(concept) if display]
    text = _dict(concept).get("text")
    if isinstance(text, str) and text.strip():
        texts.insert(0, text)
    return texts


def _label(concept: Any) -> str | None:
    texts = _texts(concept)
    return " ".join(texts[0].split()) if texts else None


@dataclass(slots=True)
class _Resolution:
    """Classes found so far, and how each was found (provenance for the extension)."""

    classes: list[DrugClass]
    how: list[str]

    def add(self, found: Iterable[Finding], how: str) -> None:
        for finding in found:
            if isinstance(finding, DrugClass) and finding not in self.classes:
                self.classes.append(finding)
                self.how.append(f"{finding.value}: {how}")


class DraftOrderReader:
    """Reads one `draftOrders` Bundle against the value sets."""

    def __init__(self, terminology: Terminology, chart: Iterable[Any] = ()) -> None:
        self.terminology = terminology
        self._chart = chart
        self._medications: dict[str, dict[str, Any]] | None = None
        self._builder = FindingsBuilder(terminology, datetime.now().astimezone())

    def _by_code(self, concept: Any, resolution: _Resolution, where: str) -> None:
        for system, code, _ in _codings(concept):
            if code is None:
                continue
            system = normalise_system(system)
            found = self.terminology.match_code(system, code)
            for finding in found:
                if isinstance(finding, DrugClass):
                    entry = self.terminology.provenance.get((system or "", code, finding.value))
                    status = f"{entry.status}; {entry.source}" if entry is not None else "site code"
                    name = "RxNorm" if system == RXNORM else (system or "code")
                    resolution.add([finding], f"{where} {name} {code} ({status})")

    def _by_text(self, concept: Any, resolution: _Resolution, where: str) -> None:
        for text in _texts(concept):
            resolution.add(self.terminology.match_text("medication", text), f"{where} name")

    def _medication(
        self, request: dict[str, Any], bundle: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, str]:
        reference = _dict(request.get("medicationReference")).get("reference")
        if not isinstance(reference, str):
            return None, ""
        if reference.startswith("#"):
            for contained in _list(request.get("contained")):
                if _dict(contained).get("resourceType") == "Medication" and contained.get("id") == reference[1:]:
                    return contained, "contained Medication"
            return None, ""
        key = reference if reference.startswith("Medication/") else f"Medication/{reference.rsplit('/', 1)[-1]}"
        if key in bundle:
            return bundle[key], "referenced Medication"
        if self._medications is None:
            self._medications = {
                f"Medication/{r['id']}": r
                for r in self._chart
                if isinstance(r, dict) and r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)
            }
        found = self._medications.get(key)
        return (found, "referenced Medication") if found is not None else (None, "")

    def medication_request(self, request: dict[str, Any], bundle: dict[str, dict[str, Any]]) -> DraftOrder:
        resolution = _Resolution([], [])
        concept = request.get("medicationCodeableConcept")
        medication, where = self._medication(request, bundle)
        concepts: list[tuple[Any, str]] = []
        if concept is not None:
            concepts.append((concept, "order"))
        if medication is not None:
            concepts.append((medication.get("code"), where))
            for ingredient in _list(medication.get("ingredient")):
                concepts.append((_dict(ingredient).get("itemCodeableConcept"), f"{where} ingredient"))
        reference_display = _dict(request.get("medicationReference")).get("display")
        if isinstance(reference_display, str):
            concepts.append(({"text": reference_display}, "reference display"))
        for item, source in concepts:  # codes first
            self._by_code(item, resolution, source)
        for item, source in concepts:  # names last
            self._by_text(item, resolution, source)
        label = next((label for label in (_label(c) for c, _ in concepts) if label), None) or "this medication"
        dosages = [_dict(d) for d in _list(request.get("dosageInstruction"))]
        route = next((r for r in (_label(d.get("route")) for d in dosages) if r), None)
        dose = next((x for x in (self._builder._daily_dose(d) for d in dosages) if x is not None), None)
        texts: list[str] = [label]
        texts += [str(d["text"]) for d in dosages if isinstance(d.get("text"), str)]
        texts += [t for reason in _list(request.get("reasonCode")) for t in _texts(reason)]
        words = " ".join(texts).lower()
        classes = tuple(resolution.classes)
        excluded = next((why for cls, why in EXCLUDING.items() if cls in classes), None)
        if DrugClass.PARENTERAL_NUTRITION in classes:
            every_text = " ".join([words, *(t for item, _ in concepts for t in _texts(item))]).lower()
            classes, excluded = _parenteral_nutrition(classes, every_text, resolution)
        binder = DrugClass.CALCIUM_BASED_BINDER in classes and (
            "calcium acetate" in words
            or DrugClass.CALCIUM_SUPPLEMENT not in classes
            or bool(_BINDER_WORDS.search(words))
        )
        return DraftOrder(
            reference=_reference(request),
            resource_type="MedicationRequest",
            name=short_name(label),
            label=label,
            drug_classes=classes,
            route=route,
            daily_dose_mcg=dose,
            binder_use=binder,
            stops=request.get("status") in NOT_ADDING,
            excluded=excluded,
            resolved_by=tuple(resolution.how),
            unresolved=medication is None and request.get("medicationReference") is not None and not classes,
        )

    def service_request(self, request: dict[str, Any]) -> DraftOrder:
        concept = request.get("code")
        analytes: list[Analyte] = []
        procedures: list[ProcedureKind] = []
        how: list[str] = []
        for system, code, _ in _codings(concept):
            if code is None:
                continue
            for finding in self.terminology.match_code(system, code):
                if isinstance(finding, Analyte) and finding not in analytes:
                    analytes.append(finding)
                    entry = self.terminology.provenance.get((LOINC, code, finding.value))
                    how.append(f"{finding.value}: LOINC {code} ({entry.status if entry else 'site code'})")
                elif isinstance(finding, ProcedureKind) and finding not in procedures:
                    procedures.append(finding)
                    how.append(f"{finding.value}: code {code}")
        for text in _texts(concept):
            for finding in self.terminology.match_text("procedure", text):
                if isinstance(finding, ProcedureKind) and finding not in procedures:
                    procedures.append(finding)
                    how.append(f"{finding.value}: name")
        return DraftOrder(
            reference=_reference(request),
            resource_type="ServiceRequest",
            name=_label(concept) or "this test",
            label=_label(concept) or "this test",
            analytes=tuple(analytes),
            procedures=tuple(procedures),
            stops=request.get("status") in NOT_ADDING,
            resolved_by=tuple(how),
        )


#: Classes that say a parenteral nutrition order carries calcium.
CALCIUM_CLASSES = frozenset({DrugClass.IV_CALCIUM, DrugClass.CALCIUM_SUPPLEMENT, DrugClass.CALCIUM_BASED_BINDER})
_CALCIUM_WORD = re.compile(r"(?<![a-z])calcium(?![a-z])")
#: "without calcium", "no calcium", "calcium-free", "calcium 0 mEq": the feed carries none.
_NO_CALCIUM = re.compile(
    r"(?<![a-z])(?:without|no|omit(?:ted)?|free of)\s+(?:added\s+)?calcium(?![a-z])"
    r"|(?<![a-z])calcium(?:[- ]free|\s+0(?:\.0+)?\s*(?:meq|mmol|mg)(?![a-z]))"
)


def _parenteral_nutrition(
    classes: tuple[DrugClass, ...], words: str, resolution: _Resolution
) -> tuple[tuple[DrugClass, ...], str | None]:
    """15.0: parenteral nutrition is never a card because it lists calcium or a phosphate salt
    (it is not IV calcium for 15.3, nor a supplement for 15.1, nor a multivitamin to exclude
    whole); with added calcium it is checked only against 15.2. So the order is read as
    parenteral nutrition with calcium, or as nothing the tables name."""
    if _NO_CALCIUM.search(words):
        return (), "parenteral nutrition without added calcium"
    if any(c in CALCIUM_CLASSES for c in classes) or _CALCIUM_WORD.search(words):
        resolution.how.append("parenteral-nutrition: calcium added (an ingredient or the order's text)")
        return (DrugClass.PARENTERAL_NUTRITION,), None
    return (), "parenteral nutrition without added calcium"


def short_name(label: str) -> str:
    """The product's name without strength and form ('calcium acetate 667 MG Oral Capsule' ->
    'calcium acetate'), so a summary names the drug within its 140 characters."""
    words: list[str] = []
    for word in label.split():
        if word[:1].isdigit() or word.startswith(("[", "(")):
            break
        words.append(word)
    return " ".join(words) or label


def _reference(resource: dict[str, Any]) -> str | None:
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", resource_id):
        return f"{resource['resourceType']}/{resource_id}"
    return None


def draft_order_resources(draft_orders: Any) -> list[dict[str, Any]]:
    """The resources of a `draftOrders` Bundle, or `DraftOrdersError` when it is not one."""
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise DraftOrdersError("context.draftOrders: must be a FHIR Bundle of request resources")
    entries = draft_orders.get("entry", [])
    if not isinstance(entries, list):
        raise DraftOrdersError("context.draftOrders.entry: must be a list")
    resources = [r for r in bundle_resources(draft_orders) if isinstance(r, dict)]
    if len(resources) != len(entries) or any(not isinstance(r.get("resourceType"), str) for r in resources):
        raise DraftOrdersError("context.draftOrders.entry: every entry must hold a FHIR resource")
    return resources


def read_draft_orders(
    draft_orders: Any, terminology: Terminology | None = None, chart: Iterable[Any] = ()
) -> tuple[DraftOrder, ...]:
    """Every MedicationRequest and ServiceRequest of `draftOrders`, resolved; `chart` supplies
    Medications an order references that the Bundle does not carry."""
    resources = draft_order_resources(draft_orders)
    reader = DraftOrderReader(terminology or default_terminology(), chart)
    medications = {
        f"Medication/{r['id']}": r
        for r in resources
        if r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)
    }
    orders: list[DraftOrder] = []
    for resource in resources:
        kind = resource.get("resourceType")
        if kind == "MedicationRequest":
            orders.append(reader.medication_request(resource, medications))
        elif kind == "ServiceRequest":
            orders.append(reader.service_request(resource))
    return tuple(orders)


#: ServiceRequest intents that are orders (a proposal or a plan is not yet one).
ORDER_INTENTS = frozenset({"order", "original-order", "reflex-order", "filler-order", "instance-order"})


def _ordered_at(request: dict[str, Any]) -> datetime | None:
    """When a test was ordered: `authoredOn`, else when it is to be done."""
    for value in (
        request.get("authoredOn"),
        request.get("occurrenceDateTime"),
        _dict(request.get("occurrencePeriod")).get("start"),
    ):
        moment = parse_datetime(value)
        if moment is not None:
            return moment
    return None


def pending_tests(
    resources: Iterable[Any],
    terminology: Terminology | None = None,
    patient_id: str | None = None,
    drafts: tuple[DraftOrder, ...] = (),
) -> tuple[PendingTest, ...]:
    """The tests already ordered for the patient and not yet resulted (15.5 "on file"): an
    active ServiceRequest that is an order (not a proposal or plan), with a date, for another
    patient never, that no Observation on the chart names in `basedOn`, and that is not one of
    the draft orders being signed. Completed, revoked and draft requests are not pending. A lab is
    known by its LOINC code; an imaging or procedure order by the procedure value sets, code or
    name, exactly as a performed Procedure is recognised on file (a chest radiograph is not a
    radiograph of the lesion)."""
    chart = [r for r in resources if isinstance(r, dict)]
    active = [r for r in chart if r.get("resourceType") == "ServiceRequest" and r.get("status") == "active"]
    if not active:
        return ()  # the usual case: no Observation needs reading for `basedOn`
    # `Type/id` of every order a result names (a full URL folded to its last two segments), so
    # each active request is one set lookup.
    resulted = {
        "/".join(reference.rsplit("/", 2)[-2:])
        for r in chart
        if r.get("resourceType") == "Observation"
        for based in _list(r.get("basedOn"))
        if isinstance(reference := _dict(based).get("reference"), str)
    }
    drafted = {d.reference for d in drafts if d.reference is not None}
    reader = DraftOrderReader(terminology or default_terminology())
    pending: list[PendingTest] = []
    for request in active:
        if request.get("intent", "order") not in ORDER_INTENTS:
            continue
        subject = _dict(request.get("subject")).get("reference")
        if patient_id is not None and isinstance(subject, str) and subject.rsplit("/", 1)[-1] != patient_id:
            continue
        reference = _reference(request)
        authored = _ordered_at(request)
        if reference is None or authored is None or reference in drafted:
            continue
        if reference in resulted:
            continue
        test = reader.service_request(request)
        if test.analytes or test.procedures:
            pending.append(PendingTest(reference, test.analytes, authored, test.procedures))
    return tuple(pending)


def encounter_setting(encounter: Any) -> EncounterSetting:
    """Ambulatory, inpatient, emergency or intensive care, from an Encounter's class and type."""
    if not isinstance(encounter, dict) or encounter.get("resourceType") != "Encounter":
        return EncounterSetting.UNKNOWN
    concepts = [*_list(encounter.get("type")), encounter.get("serviceType")]
    words = " ".join(text for concept in concepts for text in _texts(concept)).lower()
    if "intensive care" in words or re.search(r"\bicu\b", words):
        return EncounterSetting.INTENSIVE_CARE
    code = _dict(encounter.get("class")).get("code")
    return ENCOUNTER_CLASSES.get(code, EncounterSetting.UNKNOWN) if isinstance(code, str) else EncounterSetting.UNKNOWN


@dataclass(frozen=True, slots=True)
class OrderCheckResult:
    """The order check and the findings it read."""

    check: OrderCheck
    findings: PatientFindings | None


def check_draft_orders(
    resources: Iterable[Any],
    drafts: tuple[DraftOrder, ...],
    as_of: datetime,
    patient_id: str | None = None,
    terminology: Terminology | None = None,
    knowledge: KnowledgeBase | None = None,
    order_knowledge: OrderKnowledge | None = None,
    encounter: EncounterSetting = EncounterSetting.UNKNOWN,
    validate: bool = True,
) -> OrderCheckResult:
    """The order check for one patient's chart. A chart is not even read when no draft order is
    one the tables name (the usual case, and the fast one)."""
    if not any(d.relevant for d in drafts):
        return OrderCheckResult(OrderCheck(()), None)
    resources = list(resources)
    kb = knowledge or default_knowledge()
    knowledge_of_orders = order_knowledge or default_order_knowledge()
    pending = pending_tests(resources, terminology, patient_id, drafts)
    # The order checks look back a year at most (the patient-view rules two), so fewer lab results
    # are read in detail: the order check costs less than a patient-view call on the same chart.
    retention = min(int(kb.value("lab-retention-days")), knowledge_of_orders.lab_retention_days)
    mapped = map_resources(resources, terminology or default_terminology(), as_of, patient_id, retention)
    findings = mapped.findings
    checked: set[str] = set()
    while True:
        check = check_orders(findings, drafts, kb, knowledge_of_orders, encounter, pending)
        if not validate:
            return OrderCheckResult(check, findings)
        invalid: dict[str, str] = {}
        for reference in check.evidence_references - checked:
            checked.add(reference)
            resource = mapped.index.get(reference)
            problem = validation_problem(resource) if resource is not None else None
            if problem is not None:
                invalid[reference] = problem
        if not invalid:
            return OrderCheckResult(check, findings)
        findings = _without(findings, invalid)
