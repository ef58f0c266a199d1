"""Derived values as pure formulas, and comparisons that respect censored results.

Kept free of any record handling so that property tests can exercise the arithmetic directly.
"""

from __future__ import annotations

CORRECTION_COEFFICIENT = 0.8
"""mg/dL of calcium per g/dL of albumin below the anchor (Payne; Medscape, clinical-knowledge 2.1)."""


def corrected_calcium(
    calcium_mg_dl: float,
    albumin_g_dl: float,
    anchor_g_dl: float = 4.0,
    coefficient: float = CORRECTION_COEFFICIENT,
) -> float:
    """Albumin-corrected calcium in mg/dL: Ca + coefficient x (anchor - albumin); the rules pass
    both from the knowledge base (the defaults are Payne's, for property tests).

    No correction at or above the anchor (clinical-knowledge.md 2.1: "do not correct when albumin
    >= 4.0 g/dL"), so a high albumin never pulls a calcium down into the normal range.
    """
    if albumin_g_dl >= anchor_g_dl:
        return calcium_mg_dl
    return calcium_mg_dl + coefficient * (anchor_g_dl - albumin_g_dl)


def calcium_phosphate_product(calcium_mg_dl: float, phosphate_mg_dl: float) -> float:
    """Ca x P in mg²/dL² (both inputs in mg/dL)."""
    return calcium_mg_dl * phosphate_mg_dl


def ckd_category(egfr: float, g2: float, g3a: float, g3b: float, g4: float, g5: float) -> str:
    """KDIGO GFR category (G1 to G5) for an eGFR in mL/min/1.73 m², with the category boundaries
    of the knowledge base (egfr-g2 ... egfr-g5; no defaults typed here)."""
    if egfr >= g2:
        return "G1"
    if egfr >= g3a:
        return "G2"
    if egfr >= g3b:
        return "G3a"
    if egfr >= g4:
        return "G3b"
    if egfr >= g5:
        return "G4"
    return "G5"


def is_above(value: float, comparator: str | None, limit: float, inclusive: bool = False) -> bool | None:
    """Whether a possibly censored result lies above a limit; None when the result cannot tell.

    "<3" is certainly not above 5 but says nothing about being above 2; ">1000" is certainly above
    900. An uncensored value is compared directly.
    """
    if comparator in ("<", "<="):
        return False if value <= limit else None
    if comparator in (">", ">="):
        if value > limit or (value == limit and (inclusive or comparator == ">")):
            return True
        return None
    return value >= limit if inclusive else value > limit


def is_below(value: float, comparator: str | None, limit: float, inclusive: bool = False) -> bool | None:
    """Whether a possibly censored result lies below a limit; None when the result cannot tell."""
    if comparator in (">", ">="):
        return False if value >= limit else None
    if comparator in ("<", "<="):
        if value < limit or (value == limit and (inclusive or comparator == "<")):
            return True
        return None
    return value <= limit if inclusive else value < limit


def ckd_epi_2021(
    creatinine_mg_dl: float,
    age_years: float,
    female: bool,
    *,
    constant: float,
    kappa: float,
    alpha: float,
    exponent_high: float,
    age_base: float,
    female_factor: float,
) -> float:
    """eGFR (mL/min/1.73 m²) by the CKD-EPI 2021 creatinine equation, without race.

    142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x 1.012 [female], with the sex-specific
    k and a passed in (clinical-knowledge.md 2.3a; the coefficients live in thresholds.json so a
    reviewer sees them beside their source)."""
    ratio = creatinine_mg_dl / kappa
    egfr: float = constant * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** exponent_high * age_base**age_years
    return egfr * female_factor if female else egfr


def bedside_schwartz(height_cm: float, creatinine_mg_dl: float, k: float) -> float:
    """eGFR (mL/min/1.73 m²) by the bedside Schwartz (2009) equation for children of 1 to 18
    years: k x height (cm) / creatinine (mg/dL)."""
    return k * height_cm / creatinine_mg_dl
