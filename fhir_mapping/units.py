"""Unit normalisation: each analyte to its one canonical unit, or an explicit refusal.

Factors come from shared/reference/clinical-knowledge.md 2.4 and terminology.md section 3 (molar
masses Ca 40.078, P 30.974, Mg 24.305 g/mol; MIRACUM LOINC conversion pairs). A unit that is not in
this table makes the value unusable and says so; it is never silently taken as the canonical unit,
because reading 2.6 mmol/L calcium as 2.6 mg/dL would hide hypercalcemia.

Spellings are matched after folding case and the micro sign, because EHRs send "mg/dl", "MG/DL",
"µmol/L" and "umol/L" for the same UCUM unit.
"""

from __future__ import annotations

from typing import NamedTuple

from calcinosis.findings import CANONICAL_UNITS, Analyte

_MG_DL = ("mg/dl",)
_MMOL_L = ("mmol/l",)
_UMOL_L = ("umol/l",)
_PG_ML = ("pg/ml",)
_NG_L = ("ng/l",)
_NG_ML = ("ng/ml", "ug/l")
_NMOL_L = ("nmol/l",)
_PMOL_L = ("pmol/l",)
_U_L = ("u/l", "iu/l", "[iu]/l")
_EGFR = (
    "ml/min/{1.73_m2}",
    "ml/min/1.73m2",
    "ml/min/1.73_m2",
    "ml/min/1.73 m2",
    "ml/min/{1.73m2}",
    "ml/min/1.73m^2",
    "ml/min/1.73.m2",
    # The LOINC eGFR codes are defined per 1.73 m²; Synthea and some EHRs send plain "mL/min".
    "ml/min",
)

#: analyte -> ((accepted spellings, factor to the canonical unit), ...)
FACTORS: dict[Analyte, tuple[tuple[tuple[str, ...], float], ...]] = {
    # Calcium mmol/L -> mg/dL: x 4.008 (1 / 0.2495; MIRACUM 17861-6 -> 2000-8).
    Analyte.CALCIUM_TOTAL: ((_MG_DL, 1.0), (_MMOL_L, 4.008)),
    Analyte.CALCIUM_IONIZED: ((_MG_DL, 1.0), (_MMOL_L, 4.008)),
    # Albumin g/L -> g/dL: / 10.
    Analyte.ALBUMIN: ((("g/dl",), 1.0), (("g/l",), 0.1)),
    # Phosphate (as phosphorus) mmol/L -> mg/dL: x 3.097 (MIRACUM 14879-1 -> 2777-1).
    Analyte.PHOSPHATE: ((_MG_DL, 1.0), (_MMOL_L, 3.097)),
    # PTH pg/mL = ng/L; pmol/L -> pg/mL: x 9.43 (calculated from MW 9425; assay dependent).
    Analyte.PTH_INTACT: ((_PG_ML + _NG_L, 1.0), (_PMOL_L, 9.43)),
    # 25-OH D nmol/L -> ng/mL: x 0.4006 (MIRACUM 14635-7 -> 1989-3).
    Analyte.VITAMIN_D_25OH: ((_NG_ML, 1.0), (_NMOL_L, 0.4006)),
    # 1,25-(OH)2 D pmol/L -> pg/mL: x 0.4166 (calculated, MW 416.6).
    Analyte.VITAMIN_D_1_25: ((_PG_ML + _NG_L, 1.0), (_PMOL_L, 0.4166)),
    # Creatinine umol/L -> mg/dL: x 0.01131 (MIRACUM 14682-9 -> 2160-0).
    Analyte.CREATININE: ((_MG_DL, 1.0), (_UMOL_L, 0.01131)),
    Analyte.EGFR: ((_EGFR, 1.0),),
    Analyte.ALKALINE_PHOSPHATASE: ((_U_L, 1.0),),
    # Magnesium mmol/L -> mg/dL: x 2.431 (MIRACUM 19123-9 -> 2601-3).
    Analyte.MAGNESIUM: ((_MG_DL, 1.0), (_MMOL_L, 2.431)),
    # Urate umol/L -> mg/dL: x 0.01681 (MIRACUM 14933-6 -> 3084-1).
    Analyte.URIC_ACID: ((_MG_DL, 1.0), (_UMOL_L, 0.01681)),
    # Lipids: no sourced molar factor in the references, so only mg/dL is accepted.
    Analyte.CHOLESTEROL_TOTAL: ((_MG_DL, 1.0),),
    Analyte.LDL_CHOLESTEROL: ((_MG_DL, 1.0),),
    Analyte.TRIGLYCERIDES: ((_MG_DL, 1.0),),
    Analyte.BMI: ((("kg/m2", "kg/m^2", "kg/m²"), 1.0),),
    Analyte.CREATINE_KINASE: ((_U_L, 1.0),),
    Analyte.BICARBONATE: ((_MMOL_L + ("meq/l",), 1.0),),
    # Height: m -> cm x 100; inches -> cm x 2.54 (exact, by definition of the inch).
    Analyte.BODY_HEIGHT: ((("cm",), 1.0), (("m",), 100.0), (("[in_i]", "in", "[in_us]"), 2.54)),
    # PTHrP: pg/mL = ng/L; no sourced molar mass for a pmol/L conversion.
    Analyte.PTHRP: ((_PG_ML + _NG_L, 1.0),),
}


class Normalised(NamedTuple):
    """A value in the canonical unit, or the reason it could not be converted.

    A named tuple rather than a frozen dataclass: a tuple is several times cheaper to build, and
    the same immutable value with field names."""

    value: float | None
    unit: str | None
    reason: str | None = None


def _factor_index() -> dict[Analyte, dict[str, float]]:
    """FACTORS as one look-up per analyte: folded spelling -> factor (the first listed wins)."""
    index: dict[Analyte, dict[str, float]] = {}
    for analyte, table in FACTORS.items():
        by_spelling = index.setdefault(analyte, {})
        for spellings, factor in table:
            for spelling in spellings:
                by_spelling.setdefault(spelling, factor)
    return index


_FACTOR_INDEX = _factor_index()


def fold_unit(unit: str) -> str:
    """Case- and micro-sign-insensitive spelling used for look-up."""
    if unit.isascii():
        return unit.strip().lower()
    return unit.strip().replace("µ", "u").replace("μ", "u").lower()


def normalise(analyte: Analyte, value: float, units: list[str]) -> Normalised:
    """Convert `value` given in the first recognised of `units` to the analyte's canonical unit.

    `units` lists the candidates in order of trust (the UCUM `code`, then the display `unit`).
    Analytes without a canonical unit (qualitative results, titres, assay-specific units) keep the
    value and unit as reported: the rules only ask whether such a test was done.
    """
    canonical = CANONICAL_UNITS.get(analyte)
    factors = _FACTOR_INDEX.get(analyte)
    if canonical is None or factors is None:
        return Normalised(value, units[0] if units else None)
    if not units:
        return Normalised(None, None, "no unit given")
    for unit in units:
        factor = factors.get(fold_unit(unit))
        if factor is not None:
            return Normalised(value * factor, canonical)
    return Normalised(None, None, f"unit '{units[0]}' is not understood for {analyte.value}")
