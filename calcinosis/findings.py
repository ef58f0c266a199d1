"""Typed clinical findings: what the reasoning needs to know about one patient.

These types are the contract between `fhir_mapping` (which builds them from FHIR resources) and the
rules in this package. They carry no FHIR structure, only the facts a clinician would read off a
chart, plus a `SourceRef` so that every conclusion can point back at the record it came from.
Values are already normalised to one canonical unit per analyte (see `CANONICAL_UNITS`), so the
rules never convert units and never guess one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Analyte(StrEnum):
    """Laboratory analytes the rules read. Values match the value set ids in `fhir_mapping`."""

    CALCIUM_TOTAL = "calcium-total"
    CALCIUM_IONIZED = "calcium-ionized"
    ALBUMIN = "albumin"
    PHOSPHATE = "phosphate"
    PTH_INTACT = "pth-intact"
    VITAMIN_D_25OH = "vitamin-d-25oh"
    VITAMIN_D_1_25 = "vitamin-d-1-25"
    CREATININE = "creatinine"
    EGFR = "egfr"
    ALKALINE_PHOSPHATASE = "alkaline-phosphatase"
    MAGNESIUM = "magnesium"
    URIC_ACID = "uric-acid"
    CHOLESTEROL_TOTAL = "cholesterol-total"
    LDL_CHOLESTEROL = "ldl-cholesterol"
    TRIGLYCERIDES = "triglycerides"
    BMI = "bmi"
    CREATINE_KINASE = "creatine-kinase"
    ANA = "ana"
    ANTI_SCL_70 = "anti-scl-70"
    ANTI_PM_SCL = "anti-pm-scl"
    ANTI_CENTROMERE = "anti-centromere"
    URINE_CALCIUM_24H = "urine-calcium-24h"
    BICARBONATE = "bicarbonate"
    BODY_HEIGHT = "body-height"
    PTHRP = "pthrp"
    ESR = "esr"
    CRP = "crp"
    ANCA = "anca"
    PROTHROMBIN_TIME = "prothrombin-time"
    APTT = "aptt"
    PROTEIN_C = "protein-c"
    PROTEIN_S = "protein-s"
    ANTITHROMBIN = "antithrombin"
    LUPUS_ANTICOAGULANT = "lupus-anticoagulant"
    ANTICARDIOLIPIN = "anticardiolipin"
    CRYOGLOBULIN = "cryoglobulin"
    HEPATITIS_C_ANTIBODY = "hepatitis-c-antibody"
    URINE_PHOSPHATE_24H = "urine-phosphate-24h"
    URINE_OXALATE_24H = "urine-oxalate-24h"


#: The one unit each analyte is held in after normalisation (conventional US units, because the
#: knowledge base states its thresholds in them). `None` means the analyte is qualitative/titre.
CANONICAL_UNITS: dict[Analyte, str | None] = {
    Analyte.CALCIUM_TOTAL: "mg/dL",
    Analyte.CALCIUM_IONIZED: "mg/dL",
    Analyte.ALBUMIN: "g/dL",
    Analyte.PHOSPHATE: "mg/dL",
    Analyte.PTH_INTACT: "pg/mL",
    Analyte.VITAMIN_D_25OH: "ng/mL",
    Analyte.VITAMIN_D_1_25: "pg/mL",
    Analyte.CREATININE: "mg/dL",
    Analyte.EGFR: "mL/min/{1.73_m2}",
    Analyte.ALKALINE_PHOSPHATASE: "U/L",
    Analyte.MAGNESIUM: "mg/dL",
    Analyte.URIC_ACID: "mg/dL",
    Analyte.CHOLESTEROL_TOTAL: "mg/dL",
    Analyte.LDL_CHOLESTEROL: "mg/dL",
    Analyte.TRIGLYCERIDES: "mg/dL",
    Analyte.BMI: "kg/m2",
    Analyte.CREATINE_KINASE: "U/L",
    Analyte.ANA: None,
    Analyte.ANTI_SCL_70: None,
    Analyte.ANTI_PM_SCL: None,
    Analyte.ANTI_CENTROMERE: None,
    Analyte.URINE_CALCIUM_24H: None,
    Analyte.BICARBONATE: "mmol/L",
    Analyte.BODY_HEIGHT: "cm",
    Analyte.PTHRP: "pg/mL",
    Analyte.ESR: None,
    Analyte.CRP: None,
    Analyte.ANCA: None,
    Analyte.PROTHROMBIN_TIME: None,
    Analyte.APTT: None,
    Analyte.PROTEIN_C: None,
    Analyte.PROTEIN_S: None,
    Analyte.ANTITHROMBIN: None,
    Analyte.LUPUS_ANTICOAGULANT: None,
    Analyte.ANTICARDIOLIPIN: None,
    Analyte.CRYOGLOBULIN: None,
    Analyte.HEPATITIS_C_ANTIBODY: None,
    Analyte.URINE_PHOSPHATE_24H: None,
    Analyte.URINE_OXALATE_24H: None,
}


class ClinicalConcept(StrEnum):
    """Conditions the rules read. Values match the value set ids in `fhir_mapping`."""

    CALCINOSIS_CUTIS = "calcinosis-cutis"
    CALCINOSIS_CIRCUMSCRIPTA = "calcinosis-circumscripta"
    CALCINOSIS_UNIVERSALIS = "calcinosis-universalis"
    CALCIPHYLAXIS = "calciphylaxis"
    ISCHEMIC_SKIN_LESION = "ischemic-skin-lesion"
    SYSTEMIC_SCLEROSIS = "systemic-sclerosis"
    DERMATOMYOSITIS = "dermatomyositis"
    LUPUS = "lupus"
    MCTD = "mctd"
    PANNICULITIS = "panniculitis"
    GENODERMATOSIS = "genodermatosis-calcinosis"
    RAYNAUD = "raynaud"
    DIGITAL_ULCER = "digital-ulcer"
    ACROOSTEOLYSIS = "acroosteolysis"
    CKD_EARLY = "ckd-early"
    CKD_STAGE_3 = "ckd-stage-3"
    CKD_STAGE_4 = "ckd-stage-4"
    CKD_STAGE_5 = "ckd-stage-5"
    CKD_UNSPECIFIED = "ckd-unspecified"
    ESRD = "esrd"
    DIALYSIS_DEPENDENCE = "dialysis-dependence"
    KIDNEY_TRANSPLANT = "kidney-transplant-status"
    HYPERPARATHYROIDISM_PRIMARY = "hyperparathyroidism-primary"
    HYPERPARATHYROIDISM_SECONDARY = "hyperparathyroidism-secondary-tertiary"
    HYPERPARATHYROIDISM_UNSPECIFIED = "hyperparathyroidism-unspecified"
    RENAL_OSTEODYSTROPHY = "renal-osteodystrophy"
    HYPERCALCEMIA = "hypercalcemia"
    HYPERPHOSPHATEMIA = "hyperphosphatemia"
    HYPERVITAMINOSIS_D = "hypervitaminosis-d"
    MILK_ALKALI = "milk-alkali"
    SARCOIDOSIS = "sarcoidosis"
    TUMOR_LYSIS = "tumor-lysis"
    PSEUDOHYPOPARATHYROIDISM = "hypoparathyroidism-pseudo"
    MALIGNANCY = "malignancy"
    MULTIPLE_MYELOMA = "multiple-myeloma"
    GOUT = "gout"
    HYPERURICEMIA = "hyperuricemia"
    PRIMARY_HYPEROXALURIA = "primary-hyperoxaluria"
    SECONDARY_HYPEROXALURIA = "secondary-hyperoxaluria"
    NEPHROLITHIASIS = "nephrolithiasis"
    XANTHOMA = "xanthoma"
    HYPERLIPIDEMIA = "hyperlipidemia"
    OSTEOMA_CUTIS = "osteoma-cutis"
    PROGRESSIVE_OSSEOUS_HETEROPLASIA = "progressive-osseous-heteroplasia"
    DIABETES = "diabetes"
    OBESITY = "obesity"
    PROTEIN_C_S_DEFICIENCY = "protein-c-s-deficiency"
    LONG_TERM_ANTICOAGULANT = "long-term-anticoagulant"
    CALCIUM_METABOLISM_OTHER = "calcium-metabolism-other-e83-59"
    ACUTE_KIDNEY_INJURY = "acute-kidney-injury"
    HYPOPARATHYROIDISM = "hypoparathyroidism"
    LIVER_CIRRHOSIS = "liver-cirrhosis"
    DOWN_SYNDROME = "down-syndrome"


class DrugClass(StrEnum):
    """Medication groups the rules read. Values match the value set ids in `fhir_mapping`."""

    WARFARIN = "warfarin"
    CALCIUM_BASED_BINDER = "calcium-based-binder"
    ACTIVE_VITAMIN_D = "active-vitamin-d"
    NUTRITIONAL_VITAMIN_D = "nutritional-vitamin-d"
    IV_CALCIUM = "iv-calcium"
    PARENTERAL_PHOSPHATE = "parenteral-phosphate"
    GLUCOCORTICOID = "glucocorticoid"
    IMMUNOSUPPRESSANT = "immunosuppressant"
    INSULIN = "insulin"
    HEPARIN = "heparin"
    URATE_LOWERING = "urate-lowering"
    COLCHICINE = "colchicine"
    IRON_PARENTERAL = "iron-parenteral"
    SODIUM_THIOSULFATE = "sodium-thiosulfate"
    CALCIUM_SUPPLEMENT = "calcium-supplement"
    CALCIUM_RAISING = "calcium-raising-drug"
    BISPHOSPHONATE = "bisphosphonate"
    ALUMINUM_BINDER = "aluminum-binder"
    CALCIMIMETIC = "calcimimetic"
    CALCIUM_CONTAINING_FLUID = "calcium-containing-fluid"
    MULTIVITAMIN = "multivitamin"
    PARENTERAL_NUTRITION = "parenteral-nutrition"


class ProcedureKind(StrEnum):
    """Procedures the rules read. Values match the value set ids in `fhir_mapping`."""

    DIALYSIS = "dialysis"
    KIDNEY_TRANSPLANT = "kidney-transplant-procedure"
    EEG_EMG = "eeg-emg"
    HEEL_STICK = "heel-stick"
    PLAIN_RADIOGRAPHY = "plain-radiography"
    BONE_SCINTIGRAPHY = "bone-scintigraphy"
    SKIN_BIOPSY = "skin-biopsy"


class Interpretation(StrEnum):
    """The lab's own flag, reduced to what the rules need (HL7 v3 ObservationInterpretation)."""

    HIGH = "high"
    LOW = "low"
    NORMAL = "normal"
    ABNORMAL = "abnormal"


class Sex(StrEnum):
    """Administrative sex as recorded (FHIR Patient.gender)."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a finding came from: enough to cite it on a card and to find it in the EHR."""

    resource_type: str
    resource_id: str
    system: str | None = None
    code: str | None = None
    display: str | None = None

    @property
    def reference(self) -> str:
        """A relative FHIR reference, e.g. ``Observation/abc``."""
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True, slots=True)
class LabResult:
    """One laboratory value, normalised to the analyte's canonical unit.

    `value` is None when the result cannot be used (unknown unit, non-numeric value); then
    `unusable_reason` says why, so a card can say "a calcium is on file but its unit 'foo' is not
    understood" rather than silently ignoring it or treating it as mg/dL.
    `comparator` keeps the meaning of censored results such as "<3 pg/mL": the true value lies
    on that side of `value`.
    """

    analyte: Analyte
    source: SourceRef
    effective: datetime
    value: float | None
    unit: str | None
    reported: str
    comparator: str | None = None
    reference_low: float | None = None
    reference_high: float | None = None
    interpretation: Interpretation | None = None
    qualitative: str | None = None
    date_from_issued: bool = False
    unusable_reason: str | None = None
    reported_unit: str | None = None
    reported_range: str | None = None

    @property
    def usable(self) -> bool:
        """True when the value can be compared with thresholds."""
        return self.unusable_reason is None and (self.value is not None or self.qualitative is not None)


@dataclass(frozen=True, slots=True)
class ConditionFinding:
    """A problem-list or encounter diagnosis mapped to a clinical concept."""

    concept: ClinicalConcept
    source: SourceRef
    onset: datetime | None = None
    recorded: datetime | None = None
    abatement: datetime | None = None
    clinical_status: str | None = None
    verification_status: str | None = None
    body_sites: tuple[str, ...] = ()
    matched_by_text: bool = False
    suspected: bool = False
    """True when the record states a suspicion rather than a diagnosis: verificationStatus
    `provisional` or `differential`, or text such as "suspected" or "rule out" (section 4)."""
    body_site_codes: tuple[str, ...] = ()
    """SNOMED CT codes of `bodySite`, for comparing sites exactly where both sides are coded."""
    text: str | None = None
    """The entry's own words (`code.text`), which often name the site ("of both hands")."""

    @property
    def active(self) -> bool:
        """Active unless the record says inactive, resolved or remission, or gives an abatement."""
        if self.clinical_status in ("inactive", "resolved", "remission"):
            return False
        return self.abatement is None

    @property
    def first_known(self) -> datetime | None:
        """The earliest date the record gives for this condition."""
        dates = [d for d in (self.onset, self.recorded) if d is not None]
        return min(dates) if dates else None


@dataclass(frozen=True, slots=True)
class MedicationExposure:
    """A medication order, statement or administration mapped to a drug class."""

    drug_class: DrugClass
    source: SourceRef
    start: datetime | None
    end: datetime | None
    status: str | None
    route: str | None = None
    daily_dose_mcg: float | None = None
    name: str | None = None
    site: str | None = None
    """Where it was given (`dosage.site`), as text; `site_code` is its SNOMED CT code if coded."""
    site_code: str | None = None

    @property
    def parenteral(self) -> bool:
        """True when the route or the product name says intravenous or injected."""
        text = " ".join(t for t in (self.route, self.name) if t).lower()
        return any(word in text for word in ("intravenous", "iv ", "injection", "injectable", "parenteral", "infusion"))


@dataclass(frozen=True, slots=True)
class ProcedureFinding:
    """A performed procedure mapped to a kind."""

    kind: ProcedureKind
    source: SourceRef
    start: datetime | None
    end: datetime | None
    status: str | None = None
    body_sites: tuple[str, ...] = ()
    body_site_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DataIssue:
    """A resource that was skipped, or a value that could not be used, and why (no PHI)."""

    resource: str
    reason: str


@dataclass(frozen=True, slots=True)
class PatientFindings:
    """Everything the rules know about one patient at one moment (`as_of`).

    The `has_*` flags separate "no warfarin on file" from "no medication data was supplied": only
    the first can lower a likelihood, the second leaves it undetermined.
    """

    as_of: datetime
    sex: Sex = Sex.UNKNOWN
    birth_date: date | None = None
    labs: tuple[LabResult, ...] = ()
    conditions: tuple[ConditionFinding, ...] = ()
    medications: tuple[MedicationExposure, ...] = ()
    procedures: tuple[ProcedureFinding, ...] = ()
    has_medication_data: bool = False
    has_procedure_data: bool = False
    issues: tuple[DataIssue, ...] = field(default=())
    resources_seen: int = 0
    resources_skipped: int = 0
    unreadable_entries: tuple[str, ...] = ()
    """Resources that name calcinosis or calciphylaxis but could not be read (malformed, no id):
    the response must say that data could not be read rather than fall silent."""

    def age_years_at(self, when: datetime) -> float | None:
        """Age in years at a moment, or None without a birth date."""
        if self.birth_date is None:
            return None
        return (when.date() - self.birth_date).days / 365.25
