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


def ckd_category(
    egfr: float, g2: float = 90.0, g3a: float = 60.0, g3b: float = 45.0, g4: float = 30.0, g5: float = 15.0
) -> str:
    """KDIGO GFR category (G1 to G5) for an eGFR in mL/min/1.73 m²."""
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
