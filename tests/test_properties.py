"""Property tests (hypothesis) for unit conversion and derived values."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from calcinosis.derived import calcium_phosphate_product, ckd_category, corrected_calcium, is_above, is_below
from calcinosis.findings import CANONICAL_UNITS, Analyte
from calcinosis.knowledge_base import default_knowledge
from fhir_mapping.units import FACTORS, normalise
from hooks.cards import md

values = st.floats(min_value=0.001, max_value=10_000, allow_nan=False, allow_infinity=False)
comparators = st.sampled_from([None, "<", "<=", ">", ">="])


@given(values)
def test_calcium_mmol_and_mg_agree(mg_dl: float) -> None:
    via_mmol = normalise(Analyte.CALCIUM_TOTAL, mg_dl / 4.008, ["mmol/L"]).value
    assert via_mmol is not None and math.isclose(via_mmol, mg_dl, rel_tol=1e-9)


@given(values, st.sampled_from(sorted(FACTORS, key=str)))
def test_every_canonical_spelling_is_identity(value: float, analyte: Analyte) -> None:
    canonical = CANONICAL_UNITS[analyte]
    assert canonical is not None
    result = normalise(analyte, value, [canonical])
    assert result.reason is None and result.value == value and result.unit == canonical


@given(values, st.sampled_from(sorted(FACTORS, key=str)), st.text(min_size=1, max_size=8))
def test_unknown_units_are_refused_never_assumed(value: float, analyte: Analyte, unit: str) -> None:
    accepted = {s for spellings, _ in FACTORS[analyte] for s in spellings}
    result = normalise(analyte, value, [unit])
    if unit.strip().replace("µ", "u").replace("μ", "u").lower() not in accepted:
        assert result.value is None and result.reason is not None


@given(st.floats(min_value=4, max_value=20), st.floats(min_value=1, max_value=6))
def test_corrected_calcium_never_below_measured_and_monotonic(calcium: float, albumin: float) -> None:
    corrected = corrected_calcium(calcium, albumin)
    assert corrected >= calcium
    assert corrected_calcium(calcium, albumin + 0.1) <= corrected
    if albumin >= 4.0:
        assert corrected == calcium


@given(st.floats(min_value=4, max_value=20), st.floats(min_value=0.5, max_value=20))
def test_caxp_is_the_product_and_scales_with_si(calcium: float, phosphate: float) -> None:
    product = calcium_phosphate_product(calcium, phosphate)
    assert math.isclose(product, calcium * phosphate)
    si = (calcium / 4.008) * (phosphate / 3.097)
    assert math.isclose(product / 12.41, si, rel_tol=0.002)


@given(st.floats(min_value=0, max_value=200))
def test_ckd_category_is_monotonic(egfr: float) -> None:
    kb = default_knowledge()
    bounds = [kb.value(f"egfr-{g}") for g in ("g2", "g3a", "g3b", "g4", "g5")]
    order = ["G5", "G4", "G3b", "G3a", "G2", "G1"]
    assert order.index(ckd_category(egfr, *bounds)) <= order.index(ckd_category(egfr + 1, *bounds))


@given(values, comparators, values)
def test_censored_comparisons_never_contradict_the_truth(value: float, comparator: str | None, limit: float) -> None:
    above, below = is_above(value, comparator, limit), is_below(value, comparator, limit)
    assert not (above and below)
    if comparator is None:
        assert above == (value > limit) and below == (value < limit)
    if comparator in ("<", "<=") and value <= limit:
        assert above is False
    if comparator in (">", ">=") and value >= limit:
        assert below is False


def _reference_md(text: str) -> str:
    """The markdown escaping as first written (one replace at a time), kept as the reference for
    the single-pass translation in `hooks.cards.md`."""
    value = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'")
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = re.sub(r"[*_\[\]]", lambda m: "\\" + m.group(0), value)
    return " ".join(value.split())


@given(st.text(alphabet=st.sampled_from("ab \t\n\\|`&<>*_[]#µ;") | st.characters(), max_size=60))
def test_markdown_escaping_matches_the_step_by_step_reference(text: str) -> None:
    assert md(text) == _reference_md(text)
