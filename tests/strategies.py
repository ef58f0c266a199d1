"""Hypothesis strategies for CDS Hooks requests and FHIR R4 resources, valid-shaped and mutated.

The FHIR strategies draw their codes from the packaged value sets, so a good share of generated
resources reaches the rules (labs the rules read, calcinosis on the problem list, drugs and
procedures they know) instead of being dropped by the first code lookup. Everything is JSON as
orjson decodes it: finite floats, integers within 64 bits, UTF-8 text. On top of the valid
shapes, `mutated` deletes fields, swaps in values of the wrong type and injects junk anywhere in
a structure, the way a broken EHR integration would.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from calcinosis.findings import Analyte, ClinicalConcept, DrugClass, ProcedureKind
from fhir_mapping import default_terminology
from fhir_mapping.terminology import ICD10CM, LOINC, RXNORM, SNOMED
from fhir_mapping.units import FACTORS
from tests.fhir_chart import prefetch_resource_types

Json = Any
UCUM = "http://unitsofmeasure.org"
LOOPBACK_FHIR = "http://127.0.0.1:8080/fhir"
"""A FHIR base the service may call with authentication disabled; tests answer it in-process."""
UNTRUSTED_FHIR = "https://ehr.example.org/fhir"
"""A FHIR base the service must refuse to call with authentication disabled."""
PREFETCH_KEYS = tuple(prefetch_resource_types())
"""The service's prefetch keys (one table: its own templates, via `tests.fhir_chart`)."""
MEDICATION_KINDS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")


def _codes(kind: type) -> list[tuple[str, str]]:
    """(system, code) of every packaged code meaning a finding of `kind`, in a stable order."""
    return sorted(
        key for key, findings in default_terminology().codes.items() if any(isinstance(f, kind) for f in findings)
    )


LAB_CODES = _codes(Analyte)
CONDITION_CODES = _codes(ClinicalConcept)
DRUG_CODES = _codes(DrugClass)
PROCEDURE_CODES = _codes(ProcedureKind)
UNKNOWN_CODES = [(LOINC, "8867-4"), (SNOMED, "38341003"), (ICD10CM, "I10"), (RXNORM, "197361"), ("urn:local", "X1")]

# ----- JSON building blocks -------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=24)
"""Any text orjson accepts (no lone surrogates)."""
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars: st.SearchStrategy[Json] = st.none() | st.booleans() | int64 | finite | texts
junk: st.SearchStrategy[Json] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)
"""Arbitrary JSON."""
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."
fhir_ids = st.text(ID_CHARS, min_size=1, max_size=12) | st.text(ID_CHARS, min_size=60, max_size=64)
bad_ids = st.sampled_from(["", "Patient/1", "a b", "ü", "x" * 65, "../etc", "1/2"]) | texts


def detached(strategy: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """The values as fresh copies. Hypothesis prints the objects some strategies build (fixed
    dictionaries, `builds`) from how they were built, which misleads once the composites here
    have edited them (`'system': system`); copies print as plain data."""
    return strategy.map(copy.deepcopy)


def sometimes(strategy: st.SearchStrategy[Json], wrong: st.SearchStrategy[Json] = junk) -> st.SearchStrategy[Json]:
    """Mostly `strategy`, now and then a value of any other type."""
    return st.one_of(strategy, strategy, strategy, wrong)


# ----- dates ----------------------------------------------------------------------------------------

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), timezone(timedelta(hours=14))]
ODD_DATES = [
    "0000-00-00",
    "2026-02-30",
    "2026-13-01",
    "2026-11-01T24:00:00Z",
    "2026-11-01T12:00:00+99:99",
    "2026-11-01T12:00",
    "2026-11",
    "2026",
    "20261101",
    " 2026-11-01 ",
    "",
    "yesterday",
]
EDGE_DATES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0001-01-01", "9999-12-31T23:59:59Z"]
"""Valid FHIR dateTimes at the ends of what Python's datetime holds (the first two fall outside
once moved to UTC)."""
datetimes = st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=st.sampled_from(ZONES)).map(
    lambda d: d.isoformat()
)
dates: st.SearchStrategy[Json] = st.one_of(
    datetimes,
    datetimes,
    st.sampled_from(EDGE_DATES),
    st.dates(datetime(1900, 1, 1).date(), datetime(2100, 1, 1).date()).map(str),
    st.integers(1900, 2100).map(str),
    st.sampled_from(ODD_DATES),
    json_scalars,
)
"""FHIR date/dateTime/instant strings: valid, partial, impossible, out of range, wrong type."""


def periods() -> st.SearchStrategy[Json]:
    return sometimes(st.fixed_dictionaries({}, optional={"start": dates, "end": dates}))


# ----- codes ----------------------------------------------------------------------------------------


def system_spellings(system: str) -> st.SearchStrategy[Json]:
    """The system as sent by EHRs: canonical, OID, trailing slash, case or whitespace drift, junk."""
    oids = {
        LOINC: "urn:oid:2.16.840.1.113883.6.1",
        SNOMED: "urn:oid:2.16.840.1.113883.6.96",
        ICD10CM: "urn:oid:2.16.840.1.113883.6.90",
        RXNORM: "urn:oid:2.16.840.1.113883.6.88",
    }
    variants = [system, system + "/", system.upper(), f" {system} "]
    if system in oids:
        variants.append(oids[system])
    return st.one_of(st.just(system), st.just(system), st.sampled_from(variants), json_scalars)


def code_spellings(system: str, code: str) -> st.SearchStrategy[Json]:
    variants = [code.lower(), f" {code} ", code.replace(".", ""), code + "9"]
    return st.one_of(st.just(code), st.just(code), st.sampled_from(variants), json_scalars)


@st.composite
def codings(draw: st.DrawFn, known: list[tuple[str, str]]) -> dict[str, Json]:
    system, code = draw(st.sampled_from(known + UNKNOWN_CODES))
    coding: dict[str, Json] = {}
    if draw(st.integers(0, 9)):
        coding["system"] = draw(system_spellings(system))
    if draw(st.integers(0, 9)):
        coding["code"] = draw(code_spellings(system, code))
    if draw(st.booleans()):
        coding["display"] = draw(texts)
    return coding


def concepts(known: list[tuple[str, str]], phrases: list[str]) -> st.SearchStrategy[Json]:
    """A CodeableConcept: codings and/or text (phrases the value sets match, or anything)."""
    return sometimes(
        st.fixed_dictionaries(
            {},
            optional={
                "coding": sometimes(st.lists(sometimes(codings(known)), max_size=3)),
                "text": st.one_of(st.sampled_from(phrases), texts),
            },
        )
    )


def status_concept(system: str, codes: list[str]) -> st.SearchStrategy[Json]:
    return sometimes(
        st.builds(
            lambda code: {"coding": [{"system": system, "code": code}]},
            st.one_of(st.sampled_from(codes), json_scalars),
        )
    )


def references(patient_id: str) -> st.SearchStrategy[Json]:
    """The subject: this patient mostly, sometimes another one, a contained or malformed reference."""
    this = st.just(f"Patient/{patient_id}")
    return sometimes(
        st.fixed_dictionaries(
            {
                "reference": st.one_of(
                    this,
                    this,
                    this,
                    this,
                    fhir_ids.map(lambda i: f"Patient/{i}"),
                    st.sampled_from(["Patient/", "Patient", "#p", f"urn:uuid:{uuid.UUID(int=1)}", "Group/1"]),
                    json_scalars,
                )
            }
        )
    )


# ----- quantities -----------------------------------------------------------------------------------

NUMBERS: st.SearchStrategy[Json] = st.one_of(
    finite,
    int64,
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.floats(0.1, 500),
)
NUMBER_LIKE_STRINGS = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9.4",
    "1,5",
    "<5",
    ">= 10",
    "9.4 mg/dL",
    "0x10",
    "1_000",
    "١٢",
    "",
    " ",
]
KNOWN_UNITS = sorted({spelling for table in FACTORS.values() for spellings, _ in table for spelling in spellings})
ODD_UNITS = [
    "mg/dL",
    "MG/DL",
    "mmol/L",
    "µmol/L",
    "μmol/L",
    "mL/min/{1.73_m2}",
    "10*3/uL",
    "%",
    "{ratio}",
    "[iU]/L",
    "mg/dl ",
    "°C",
    "mg%",
    "1",
    "",
    " ",
    "\t",
    "null",
    "mg/dL/mg/dL",
    "x" * 200,
]
values: st.SearchStrategy[Json] = st.one_of(NUMBERS, st.sampled_from(NUMBER_LIKE_STRINGS), json_scalars)
comparators: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(["<", "<=", ">", ">=", "ad", "=", "", "≤"]), json_scalars
)
units: st.SearchStrategy[Json] = st.one_of(st.sampled_from(KNOWN_UNITS + ODD_UNITS), json_scalars)


def quantities() -> st.SearchStrategy[Json]:
    """valueQuantity: numbers of every size and sign, numbers as strings, comparators, strange units,
    any field missing."""
    return sometimes(
        st.fixed_dictionaries(
            {},
            optional={
                "value": values,
                "comparator": comparators,
                "unit": units,
                "code": units,
                "system": st.one_of(st.just(UCUM), json_scalars),
            },
        )
    )


# ----- resources ------------------------------------------------------------------------------------

LAB_PHRASES = ["Calcium", "Phosphate", "Albumin", "eGFR", "PTH"]
CONDITION_PHRASES = [
    "Calcinosis cutis",
    "calcinosis cutis of left knee",
    "Calciphylaxis",
    "CALCIFIC UREMIC ARTERIOLOPATHY",
    "Calcinosis universalis",
    "no calcinosis",
    "family history of malignancy",
    "Systemic sclerosis",
    "Dermatomyositis",
    "End stage renal disease",
    "tophi",
]
DRUG_PHRASES = [
    "Calcitriol 0.25 MCG Oral Capsule",
    "Warfarin Sodium 5 MG Oral Tablet",
    "calcium carbonate",
    "Prednisone 5 MG",
    "hydrocortisone topical cream",
    "Sodium thiosulfate",
    "Sevelamer carbonate 800 MG",
    "vitamin d3",
]
PROCEDURE_PHRASES = ["Hemodialysis", "Skin biopsy", "X-ray of hand", "Chest X-ray", "Kidney transplant", "EMG"]
OBSERVATION_STATUSES = ["final", "amended", "corrected", "preliminary", "registered", "cancelled", "entered-in-error"]
OBSERVATION_STATUSES += ["unknown", "FINAL", "", "draft"]
CLINICAL_STATUSES = ["active", "recurrence", "relapse", "inactive", "remission", "resolved", "entered-in-error", ""]
VERIFICATION_STATUSES = ["unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"]
MEDICATION_STATUSES = ["active", "completed", "stopped", "on-hold", "intended", "not-taken", "not-done", "unknown"]
MEDICATION_STATUSES += ["entered-in-error", "cancelled", "draft", "in-progress"]
PROCEDURE_STATUSES = ["completed", "preparation", "in-progress", "not-done", "on-hold", "stopped", "entered-in-error"]
PROCEDURE_STATUSES += ["unknown", "COMPLETED"]


def statuses(known: list[str]) -> st.SearchStrategy[Json]:
    """The first (usual) status often, any of the others, or a value of the wrong type."""
    return st.one_of(st.just(known[0]), st.just(known[0]), st.sampled_from(known), json_scalars)


def interpretations() -> st.SearchStrategy[Json]:
    return sometimes(
        st.lists(
            status_concept(
                "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                ["H", "HH", "L", "LL", "N", "A", "AA", "<", ">", "POS"],
            ),
            max_size=2,
        )
    )


def reference_ranges() -> st.SearchStrategy[Json]:
    return sometimes(
        st.lists(
            sometimes(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "low": quantities(),
                        "high": quantities(),
                        "type": status_concept(
                            "http://terminology.hl7.org/CodeSystem/referencerange-meaning", ["normal", "treatment"]
                        ),
                    },
                )
            ),
            max_size=2,
        )
    )


def observation_values() -> st.SearchStrategy[dict[str, Json]]:
    """One of the value[x] choices (or none, or several at once)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "valueQuantity": quantities(),
            "valueString": st.one_of(st.sampled_from(NUMBER_LIKE_STRINGS), texts, json_scalars),
            "valueCodeableConcept": concepts([], ["positive", "negative", "1:640 speckled"]),
            "valueInteger": st.one_of(int64, json_scalars),
            "dataAbsentReason": status_concept(
                "http://terminology.hl7.org/CodeSystem/data-absent-reason", ["not-performed", "error"]
            ),
        },
    )


@st.composite
def observations(draw: st.DrawFn, patient_id: str) -> dict[str, Json]:
    """An Observation coded with a lab code the rules read (or not), with any value shape."""
    resource: dict[str, Json] = {
        "resourceType": "Observation",
        "id": draw(sometimes(fhir_ids, bad_ids)),
        "status": draw(statuses(OBSERVATION_STATUSES)),
        "code": draw(concepts(LAB_CODES, LAB_PHRASES)),
        "subject": draw(references(patient_id)),
    }
    resource.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "effectiveDateTime": dates,
                    "effectivePeriod": periods(),
                    "effectiveInstant": dates,
                    "issued": dates,
                    "interpretation": interpretations(),
                    "referenceRange": reference_ranges(),
                },
            )
        )
    )
    resource.update(draw(observation_values()))
    if draw(st.integers(0, 3)) == 0:
        component = st.builds(
            lambda code, value, ranges: {"code": code, **value, **({"referenceRange": ranges} if ranges else {})},
            concepts(LAB_CODES, LAB_PHRASES),
            observation_values(),
            st.one_of(st.none(), reference_ranges()),
        )
        resource["component"] = draw(sometimes(st.lists(sometimes(component), max_size=3)))
    return resource


@st.composite
def conditions(draw: st.DrawFn, patient_id: str) -> dict[str, Json]:
    """A Condition coded in ICD-10-CM or SNOMED (calcinosis cutis L94.2 often), odd statuses."""
    calcinosis = [(ICD10CM, "L94.2")] * 4 + [(SNOMED, "255003"), (SNOMED, "237900002")]
    resource: dict[str, Json] = {
        "resourceType": "Condition",
        "id": draw(sometimes(fhir_ids, bad_ids)),
        "code": draw(concepts(calcinosis + CONDITION_CODES, CONDITION_PHRASES)),
        "subject": draw(references(patient_id)),
    }
    resource.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "clinicalStatus": status_concept(
                        "http://terminology.hl7.org/CodeSystem/condition-clinical", CLINICAL_STATUSES
                    ),
                    "verificationStatus": status_concept(
                        "http://terminology.hl7.org/CodeSystem/condition-ver-status", VERIFICATION_STATUSES
                    ),
                    "onsetDateTime": dates,
                    "onsetPeriod": periods(),
                    "onsetString": texts,
                    "recordedDate": dates,
                    "abatementDateTime": dates,
                    "abatementPeriod": periods(),
                    "bodySite": sometimes(st.lists(concepts([], ["Left knee", "fingertips", "buttock"]), max_size=3)),
                },
            )
        )
    )
    return resource


def documented_calcinosis(patient_id: str) -> st.SearchStrategy[Json]:
    """A problem-list entry the service acts on: calcinosis cutis (ICD-10-CM L94.2 or SNOMED) or
    calciphylaxis, usually active and confirmed, possibly mutated."""
    codes = [(ICD10CM, "L94.2"), (ICD10CM, "L94.2"), (SNOMED, "255003"), (SNOMED, "6595006"), (SNOMED, "237900002")]
    concept = st.builds(
        lambda code, display: {"coding": [{"system": code[0], "code": code[1], **display}]},
        st.sampled_from(codes),
        st.fixed_dictionaries({}, optional={"display": st.sampled_from(CONDITION_PHRASES)}),
    ) | st.fixed_dictionaries({"text": st.sampled_from(CONDITION_PHRASES[:5])})
    condition = st.fixed_dictionaries(
        {
            "resourceType": st.just("Condition"),
            "id": fhir_ids,
            "code": concept,
            "subject": st.just({"reference": f"Patient/{patient_id}"}),
            "clinicalStatus": st.builds(
                lambda code: {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": code}]
                },
                st.sampled_from(["active", "active", "active", "recurrence", "resolved"]),
            ),
        },
        optional={
            "verificationStatus": st.builds(
                lambda code: {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code}]
                },
                st.sampled_from(["confirmed", "confirmed", "provisional", "refuted"]),
            ),
            "onsetDateTime": st.one_of(datetimes, datetimes, datetimes, st.sampled_from(EDGE_DATES)),
            "recordedDate": st.one_of(datetimes, st.sampled_from(EDGE_DATES)),
            "bodySite": st.lists(
                st.sampled_from([{"text": "Left knee"}, {"text": "fingertips"}]), min_size=1, max_size=2
            ),
        },
    )
    return maybe_mutated(condition, 1)


def dosages() -> st.SearchStrategy[Json]:
    dose = st.fixed_dictionaries(
        {},
        optional={
            "value": values,
            "unit": st.one_of(st.sampled_from(["ug", "mcg", "µg", "μg", "mg", "ng", "MG", "g", "IU"]), json_scalars),
            "code": st.one_of(st.sampled_from(["ug", "mg", "[iU]"]), json_scalars),
        },
    )
    repeat = st.fixed_dictionaries(
        {},
        optional={
            "frequency": st.one_of(st.integers(-1, 4), values),
            "period": st.one_of(st.sampled_from([0, 1, 0.5, -1, 1e-300]), values),
            "periodUnit": st.one_of(st.sampled_from(["h", "d", "wk", "mo", "a", "s", "D"]), json_scalars),
            "boundsPeriod": periods(),
        },
    )
    return sometimes(
        st.fixed_dictionaries(
            {},
            optional={
                "route": concepts([], ["Oral", "Topical", "Intravenous"]),
                "doseAndRate": sometimes(
                    st.lists(sometimes(st.fixed_dictionaries({"doseQuantity": dose})), max_size=2)
                ),
                "dose": dose,
                "timing": sometimes(st.fixed_dictionaries({"repeat": sometimes(repeat)})),
            },
        )
    )


@st.composite
def medication_orders(draw: st.DrawFn, patient_id: str) -> list[dict[str, Json]]:
    """A MedicationRequest/Statement/Administration naming its drug by concept, by a contained
    Medication, or by reference to a Medication that is (or is not) supplied alongside."""
    kind = draw(st.sampled_from(MEDICATION_KINDS))
    resource: dict[str, Json] = {
        "resourceType": kind,
        "id": draw(sometimes(fhir_ids, bad_ids)),
        "status": draw(statuses(MEDICATION_STATUSES)),
        "subject": draw(references(patient_id)),
    }
    extra: list[dict[str, Json]] = []
    concept = concepts(DRUG_CODES, DRUG_PHRASES)
    how = draw(st.sampled_from(["concept", "contained", "referenced", "dangling", "junk"]))
    if how == "concept":
        resource["medicationCodeableConcept"] = draw(concept)
    elif how == "contained":
        local = draw(fhir_ids)
        resource["medicationReference"] = {"reference": "#" + draw(st.sampled_from([local, local, "other"]))}
        resource["contained"] = draw(
            sometimes(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "resourceType": st.sampled_from(["Medication", "Medication", "Substance"]),
                            "id": st.just(local),
                        },
                        optional={"code": concept},
                    ),
                    max_size=2,
                )
            )
        )
    elif how in ("referenced", "dangling"):
        medication_id = draw(fhir_ids)
        reference = draw(
            st.sampled_from([f"Medication/{medication_id}", f"https://ehr.example.org/fhir/Medication/{medication_id}"])
        )
        resource["medicationReference"] = draw(
            st.fixed_dictionaries(
                {"reference": st.just(reference)}, optional={"display": st.sampled_from(DRUG_PHRASES)}
            )
        )
        if how == "referenced":
            extra.append({"resourceType": "Medication", "id": medication_id, "code": draw(concept)})
    else:
        resource["medicationReference"] = draw(junk)
    dates_for_kind = {
        "MedicationRequest": {"authoredOn": dates, "dosageInstruction": sometimes(st.lists(dosages(), max_size=2))},
        "MedicationStatement": {
            "effectiveDateTime": dates,
            "effectivePeriod": periods(),
            "dateAsserted": dates,
            "dosage": sometimes(st.lists(dosages(), max_size=2)),
        },
        "MedicationAdministration": {"effectiveDateTime": dates, "effectivePeriod": periods(), "dosage": dosages()},
    }
    resource.update(draw(st.fixed_dictionaries({}, optional=dates_for_kind[kind])))
    if kind == "MedicationRequest" and draw(st.booleans()):
        resource["dispenseRequest"] = draw(sometimes(st.fixed_dictionaries({"validityPeriod": periods()})))
    return [resource, *extra]


@st.composite
def procedures(draw: st.DrawFn, patient_id: str) -> dict[str, Json]:
    resource: dict[str, Json] = {
        "resourceType": "Procedure",
        "id": draw(sometimes(fhir_ids, bad_ids)),
        "status": draw(statuses(PROCEDURE_STATUSES)),
        "code": draw(concepts(PROCEDURE_CODES, PROCEDURE_PHRASES)),
        "subject": draw(references(patient_id)),
    }
    resource.update(
        draw(st.fixed_dictionaries({}, optional={"performedDateTime": dates, "performedPeriod": periods()}))
    )
    return resource


def patients(patient_id: str) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {"resourceType": st.just("Patient"), "id": sometimes(st.just(patient_id), bad_ids)},
        optional={
            "gender": st.one_of(st.sampled_from(["female", "male", "other", "unknown", "F"]), json_scalars),
            "birthDate": dates,
        },
    )


RESOURCE_TYPES = ["Observation", "Condition", "Procedure", "Patient", "Medication", "Bundle", "OperationOutcome"]
RESOURCE_TYPES += [*MEDICATION_KINDS, "Encounter", "observation", ""]
FHIR_KEYS = ["id", "status", "code", "subject", "patient", "valueQuantity", "component", "entry", "resource"]
FHIR_KEYS += ["effectiveDateTime", "medicationReference", "contained", "clinicalStatus", "dosage", "issue"]


def junk_resources() -> st.SearchStrategy[Json]:
    """Dicts that look a little like resources (a resourceType, FHIR field names) holding junk,
    and values that are not objects at all."""
    keyed = st.dictionaries(st.one_of(st.sampled_from(FHIR_KEYS), texts), junk, max_size=5)
    return st.one_of(
        st.builds(lambda t, body: {**body, "resourceType": t}, st.one_of(st.sampled_from(RESOURCE_TYPES), junk), keyed),
        keyed,
        junk,
    )


# ----- mutation -------------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def _paths(value: Json, prefix: Path = ()) -> list[Path]:
    """Every place inside a JSON value (dict keys and list positions), depth first."""
    found: list[Path] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(item, (*prefix, index)))
    return found


def _wrong_type(value: Json) -> st.SearchStrategy[Json]:
    """A value of another JSON type than `value` (a dict becomes a string, a string a list, ...)."""
    if isinstance(value, dict):
        return st.one_of(st.just([value]), st.just(str(value)[:20]), st.none(), int64)
    if isinstance(value, list):
        return st.one_of(st.just(value[0] if value else {}), st.just({}), texts)
    if isinstance(value, str):
        return st.one_of(st.just([value]), st.just({"value": value}), int64, finite, st.booleans())
    if isinstance(value, bool):
        return st.one_of(st.just(str(value).lower()), st.just(int(value)))
    if isinstance(value, int | float):
        return st.one_of(st.just(str(value)), st.just([value]), st.just({"value": value}))
    return st.one_of(st.just({}), st.just([]), st.just(""), st.just(0))


@st.composite
def mutated(draw: st.DrawFn, value: Json, max_mutations: int = 3) -> Json:
    """`value` (deep-copied) with up to `max_mutations` edits: a field deleted, a value of the
    wrong type, junk injected, or a field added. Zero edits is the simplest (shrunk) case."""
    result = copy.deepcopy(value)
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = _paths(result)
        if not paths:
            if isinstance(result, dict):
                result[draw(st.sampled_from(FHIR_KEYS))] = draw(junk)
            break
        path = draw(st.sampled_from(paths))
        parent = result
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "wrong-type", "junk", "add"]))
        if action == "delete":
            del parent[last]
        elif action == "wrong-type":
            parent[last] = draw(_wrong_type(parent[last]))
        elif action == "junk":
            parent[last] = draw(junk)
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(FHIR_KEYS), texts))] = draw(junk)
        else:
            parent.append(draw(junk))
    return result


def maybe_mutated(strategy: st.SearchStrategy[Json], max_mutations: int = 2) -> st.SearchStrategy[Json]:
    """Values of `strategy`, mostly as drawn and sometimes mutated."""
    return strategy.flatmap(
        lambda value: st.one_of(st.just(value), st.just(value), mutated(value, max_mutations=max_mutations))
    )


# ----- collections of resources ---------------------------------------------------------------------


def resource_lists(patient_id: str, max_size: int = 8) -> st.SearchStrategy[list[Json]]:
    """One patient's resources in any mix, each possibly mutated, with junk among them."""
    group = st.one_of(  # a medication order comes with the Medication it references, if any
        maybe_mutated(observations(patient_id)).map(lambda r: [r]),
        maybe_mutated(conditions(patient_id)).map(lambda r: [r]),
        maybe_mutated(medication_orders(patient_id)),
        maybe_mutated(procedures(patient_id)).map(lambda r: [r]),
        patients(patient_id).map(lambda r: [r]),
        junk_resources().map(lambda r: [r]),
    )
    return st.lists(group, max_size=max_size).map(lambda groups: [r for g in groups for r in g])


OPERATION_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "not-found", "diagnostics": "search failed"}],
}


@st.composite
def bundles(draw: st.DrawFn, resources: list[Json], next_url: str | None = None) -> dict[str, Json]:
    """A Bundle of `resources` the ways EHRs send them: searchset or collection, entries with or
    without `resource`, nested Bundles, OperationOutcome warnings, and a next link."""
    entries: list[Json] = []
    for resource in resources:
        shape = draw(st.integers(0, 9))
        if shape == 0:
            entries.append(resource)  # no "resource" wrapper
        elif shape == 1:
            entries.append(
                {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}}
            )
        else:
            entries.append({"fullUrl": f"urn:uuid:{uuid.UUID(int=len(entries))}", "resource": resource})
    if draw(st.integers(0, 4)) == 0:
        entries.append({"resource": OPERATION_OUTCOME, "search": {"mode": "outcome"}})
    bundle: dict[str, Json] = {
        "resourceType": "Bundle",
        "type": draw(st.one_of(st.sampled_from(["searchset", "collection", "batch-response"]), json_scalars)),
        "entry": entries,
    }
    if next_url is not None:
        bundle["link"] = [{"relation": "self", "url": next_url}, {"relation": "next", "url": next_url}]
    return bundle


@st.composite
def prefetches(
    draw: st.DrawFn, patient_id: str, server: str | None, well_formed: bool = True, can_fetch: bool = False
) -> dict[str, Json]:
    """Prefetch for the service's templates: each key a searchset Bundle (or single resource) of
    mixed resources, null, an OperationOutcome, missing (when the service `can_fetch` it, or
    for the optional keys), or junk (not well-formed: not even an object); calcinosis documented
    in half of the condition Bundles."""
    prefetch: dict[str, Json] = {}
    for key in PREFETCH_KEYS:
        shapes = ["bundle"] * 6 + ["null", "resource"]
        if can_fetch or key.startswith(("medication", "procedure")) or not well_formed:
            shapes += ["absent", "outcome"]
        if not well_formed:
            shapes += ["junk", "junk"]
        shape = draw(st.sampled_from(shapes))
        if key == "patient" and shape in ("bundle", "resource"):
            prefetch[key] = draw(maybe_mutated(patients(patient_id), 1))
        elif shape == "bundle":
            resources = draw(resource_lists(patient_id, max_size=3))
            if key == "conditions" and draw(st.booleans()):
                resources.append(draw(documented_calcinosis(patient_id)))
            paged = server is not None and draw(st.integers(0, 5)) == 0
            prefetch[key] = draw(bundles(resources, f"{server}/{key}?page=2" if paged else None))
        elif shape == "null":
            prefetch[key] = None
        elif shape == "outcome":
            prefetch[key] = draw(
                st.sampled_from(
                    [OPERATION_OUTCOME, {"resourceType": "Bundle", "entry": [{"resource": OPERATION_OUTCOME}]}]
                )
            )
        elif shape == "resource":
            prefetch[key] = (draw(resource_lists(patient_id, max_size=1)) or [{}])[0]
        elif shape == "junk":
            prefetch[key] = draw(junk_resources())
    if draw(st.integers(0, 5)) == 0:
        extra = draw(st.sampled_from(["extraKeyFromEhr", "Observation?patient=1"]))
        prefetch[extra] = draw(st.none() | st.just(OPERATION_OUTCOME) | (junk if not well_formed else st.nothing()))
    return prefetch


# ----- CDS Hooks requests ---------------------------------------------------------------------------

SERVER_SETUPS = ["none", "none", "loopback", "loopback+auth", "untrusted+auth", "auth-only", "bad-url"]


def fhir_authorizations(patient_id: str, mutate: bool = True) -> st.SearchStrategy[Json]:
    authorization = st.fixed_dictionaries(
        {
            "access_token": st.sampled_from(["opaque-access-token-value", "eyJhbGciOiJub25lIn0.e30."]),
            "token_type": st.sampled_from(["Bearer", "bearer"]),
            "expires_in": st.integers(0, 3600),
            "scope": st.sampled_from(["patient/*.read", "patient/Observation.rs launch"]),
            "subject": st.just("calcinosis-cds"),
        },
        optional={"patient": st.just(patient_id)},
    )
    if not mutate:
        return authorization
    return maybe_mutated(
        st.fixed_dictionaries(
            {
                "access_token": st.sampled_from(["opaque-access-token-value", "eyJhbGciOiJub25lIn0.e30."]),
                "token_type": st.sampled_from(["Bearer", "bearer", "MAC"]),
                "expires_in": st.one_of(st.integers(-1, 3600), json_scalars),
                "scope": st.sampled_from(["patient/*.read", "patient/Observation.rs launch", ""]),
                "subject": st.sampled_from(["calcinosis-cds", ""]),
            },
            optional={"patient": st.just(patient_id)},
        ),
        1,
    )


@st.composite
def hook_requests(draw: st.DrawFn) -> dict[str, Json]:
    """A patient-view call. Three in four are well-formed (so that they reach prefetch handling,
    the mapping and the rules), with the broken data inside the resources; the rest have a wrong
    hook, hookInstance, context or server setup, and may be mutated anywhere."""
    patient_id = draw(st.sampled_from(["pat-1", "123", "a.b-C"]) | fhir_ids)
    well_formed = draw(st.sampled_from([True, True, True, False]))
    setups = SERVER_SETUPS if not well_formed else ["none", "none", "loopback", "loopback+auth", "untrusted+auth"]
    setup = draw(st.sampled_from(setups))
    server = {
        "loopback": LOOPBACK_FHIR,
        "loopback+auth": LOOPBACK_FHIR,
        "untrusted+auth": UNTRUSTED_FHIR,
        "bad-url": draw(st.sampled_from(["ftp://x", "fhir.example.org", "http://", "http://exa mple.org/"])),
    }.get(setup)
    users = ["Practitioner/doc-1", "PractitionerRole/r1", "Patient/" + patient_id]
    if well_formed:
        context = draw(
            st.fixed_dictionaries(
                {"userId": st.sampled_from(users), "patientId": st.just(patient_id)},
                optional={"encounterId": fhir_ids},
            )
        )
        hook, instance = "patient-view", str(draw(st.uuids()))
    else:
        context = draw(
            sometimes(
                st.fixed_dictionaries(
                    {
                        "userId": st.one_of(st.sampled_from(users), bad_ids),
                        "patientId": sometimes(st.just(patient_id), bad_ids),
                    },
                    optional={"encounterId": sometimes(fhir_ids, bad_ids)},
                )
            )
        )
        hook = draw(st.sampled_from(["patient-view", "order-select", "", "PATIENT-VIEW"]))
        instance = draw(st.one_of(st.uuids().map(str), st.sampled_from(["1", "urn:uuid:x", ""])))
    body: dict[str, Json] = {"hook": hook, "hookInstance": instance, "context": context}
    if server is not None:
        body["fhirServer"] = server
    if setup in ("loopback+auth", "untrusted+auth", "auth-only"):
        body["fhirAuthorization"] = draw(fhir_authorizations(patient_id, mutate=not well_formed))
    prefetch_shape = draw(st.integers(0, 9))
    if prefetch_shape == 0 and (setup.startswith("loopback") or not well_formed):
        body["prefetch"] = None
    elif prefetch_shape > 1 or not (setup.startswith("loopback") or not well_formed):
        body["prefetch"] = draw(prefetches(patient_id, server, well_formed, can_fetch=setup.startswith("loopback")))
    if draw(st.integers(0, 9)) == 0:
        body["extension"] = draw(st.dictionaries(texts, junk, max_size=2) if well_formed else junk)
    if well_formed:
        return body
    return draw(st.one_of(st.just(body), mutated(body, 2)))


RAW_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"patient-view"',
    b"{",
    b'{"hook": NaN}',
    b'{"hook": "patient-view", "hookInstance": Infinity}',
    b'{"context": {"patientId": 1e999}}',
    b"\xff\xfe{}",
    b'{"hook": "\\ud800"}',
    b'{"a": ' * 600 + b"1" + b"}" * 600,
    b"[" * 2000 + b"]" * 2000,
]


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bodies that are not (acceptable) JSON: truncated, NaN literals, bad UTF-8, deep nesting, binary."""
    return st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64))


# ----- a FHIR server for the fallback fetches -------------------------------------------------------

FhirAnswer = tuple[int, dict[str, str], bytes] | str
"""What the fake FHIR server answers to one request: (status, headers, body), or the name of a
transport failure ("timeout", "connect-error")."""


@st.composite
def fhir_answers(draw: st.DrawFn, patient_id: str) -> list[FhirAnswer]:
    """A script of answers, replayed in turn to the service's fallback requests: search pages
    (some paging to themselves or off-site), a Patient, errors, redirects, non-JSON, lies about
    the size, transport failures."""
    import orjson

    answers: list[FhirAnswer] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["page", "page", "page", "patient", "404", "401", "500", "302", "html", "array", "outcome", "self-page"]
                + ["offsite-page", "too-large", "timeout", "connect-error"]
            )
        )
        json_headers = {"content-type": "application/fhir+json"}
        if kind in ("page", "self-page", "offsite-page"):
            next_url = {
                "page": None,
                "self-page": f"{LOOPBACK_FHIR}/Observation?page=2",
                "offsite-page": f"{UNTRUSTED_FHIR}/x",
            }
            bundle = draw(bundles(draw(resource_lists(patient_id, max_size=4)), next_url[kind]))
            answers.append((200, json_headers, orjson.dumps(bundle)))
        elif kind == "patient":
            answers.append((200, json_headers, orjson.dumps(draw(patients(patient_id)))))
        elif kind == "outcome":
            answers.append((200, json_headers, orjson.dumps(OPERATION_OUTCOME)))
        elif kind == "array":
            answers.append((200, json_headers, b"[1, 2]"))
        elif kind == "html":
            answers.append((200, {"content-type": "text/html"}, b"<html>maintenance</html>"))
        elif kind == "too-large":
            answers.append((200, {**json_headers, "content-length": "99999999999"}, b"{}"))
        elif kind == "302":
            answers.append((302, {"location": "http://169.254.169.254/latest/meta-data/"}, b""))
        elif kind in ("timeout", "connect-error"):
            answers.append(kind)
        else:
            answers.append((int(kind), json_headers, orjson.dumps(OPERATION_OUTCOME)))
    return answers


# ----- feedback -------------------------------------------------------------------------------------

timestamps: st.SearchStrategy[Json] = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.sampled_from(ZONES)).map(
        lambda d: d.isoformat(timespec="seconds")
    ),
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.sampled_from(ZONES)).map(
        lambda d: d.isoformat(timespec="seconds")
    ),
    st.sampled_from(["2026-11-01T12:00:00Z", "2026-11-01T12:00:00.123456+01:00", "2026-11-01", "2026-11-01T12:00:00"]),
    json_scalars,
)


def feedback_items() -> st.SearchStrategy[Json]:
    """One feedback entry: accepted with the suggestions, or overridden with a reason and/or a
    comment (cds-fb-2, cds-fb-3); sometimes missing what those rules require."""
    reason = st.fixed_dictionaries(
        {"system": st.just("urn:calcinosis-cds:override"), "code": st.sampled_from(["not-relevant", "already-done"])},
        optional={"display": texts},
    )
    accepted = st.fixed_dictionaries(
        {
            "card": st.uuids().map(str),
            "outcome": st.just("accepted"),
            "outcomeTimestamp": timestamps,
            "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": st.uuids().map(str)}), min_size=1, max_size=2),
        }
    )
    overridden = st.fixed_dictionaries(
        {
            "card": st.uuids().map(str),
            "outcome": st.just("overridden"),
            "outcomeTimestamp": timestamps,
        },
        optional={
            "overrideReason": st.fixed_dictionaries({}, optional={"reason": reason, "userComment": texts}),
        },
    )
    loose = st.fixed_dictionaries(
        {
            "card": st.one_of(st.uuids().map(str), st.sampled_from(["", "card-1"])),
            "outcome": st.sampled_from(["accepted", "overridden", "ignored"]),
            "outcomeTimestamp": timestamps,
        },
        optional={
            "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": st.uuids().map(str) | texts}), max_size=2),
            "overrideReason": st.fixed_dictionaries({}, optional={"reason": reason, "userComment": texts}),
        },
    )
    return st.one_of(
        accepted, accepted, overridden, overridden, maybe_mutated(st.one_of(accepted, overridden), 2), loose
    )


def feedback_bodies() -> st.SearchStrategy[Json]:
    """Feedback bodies: mostly one to three entries, some mutated anywhere, some junk."""
    items = st.fixed_dictionaries({"feedback": st.lists(feedback_items(), min_size=1, max_size=3)})
    return st.one_of(items, items, items, maybe_mutated(items, 2), st.just({"feedback": []}), junk)


__all__ = [
    "LOOPBACK_FHIR",
    "PREFETCH_KEYS",
    "UNTRUSTED_FHIR",
    "bundles",
    "conditions",
    "feedback_bodies",
    "hook_requests",
    "junk",
    "junk_resources",
    "medication_orders",
    "mutated",
    "observations",
    "patients",
    "prefetches",
    "procedures",
    "raw_bodies",
    "resource_lists",
]
