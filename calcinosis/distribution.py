"""Distribution label (clinical-knowledge.md 1.2 and 5.6): circumscripta, universalis or unknown.

There is no structured field for distribution, so it is read from codes or text that name it, or
from the body sites recorded on calcinosis conditions, grouped into regions. The region rule
("two or more regions, or trunk plus limbs, is universalis") is an unconfirmed design choice [GK]
and is labelled as such on the card.
"""

from __future__ import annotations

import re

from calcinosis.assessment import Distribution, DistributionAssessment
from calcinosis.context import PatientContext, condition_evidence
from calcinosis.findings import ClinicalConcept

_REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head and neck", ("head", "face", "scalp", "ear", "eyelid", "neck", "cheek", "nose", "chin", "forehead")),
    (
        "trunk",
        (
            "chest",
            "thorax",
            "abdomen",
            "abdominal",
            "back",
            "trunk",
            "buttock",
            "gluteal",
            "breast",
            "flank",
            "pelvis",
            "groin",
            "scrotum",
            "scrotal",
            "vulva",
            "vulvar",
            "sacral",
        ),
    ),
    ("upper limbs", ("hand", "finger", "thumb", "wrist", "forearm", "elbow", "arm", "shoulder", "digit")),
    ("lower limbs", ("foot", "toe", "heel", "ankle", "leg", "knee", "thigh", "hip", "shin", "calf")),
)


_KEYWORDS = frozenset(word for _, keywords in _REGIONS for word in keywords)
_IRREGULAR = {"feet": "foot", "calves": "calf", "thighs": "thigh", "knees": "knee", "toes": "toe", "digits": "digit"}


def _singular(word: str) -> str:
    """'hands' -> 'hand', 'fingers' -> 'finger', 'feet' -> 'foot' (enough for body-site words)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("es") and word[:-2] in _KEYWORDS:
        return word[:-2]
    if word.endswith("s") and word[:-1] in _KEYWORDS:
        return word[:-1]
    return word


def body_regions(site: str) -> set[str]:
    """The body regions a site text names: "Both hands" is one (upper limbs), "Elbows, knees and
    buttocks" three. Left and right are one region: both hands in limited systemic sclerosis are
    the classic circumscripta picture (StatPearls; clinical-knowledge.md 5.6), not a diffuse one."""
    words = {_singular(w) for w in re.findall(r"[a-z]+", site.lower())}
    return {region for region, keywords in _REGIONS if words & set(keywords)}


def body_region(site: str) -> str | None:
    """The first body region a site text names, or None if unrecognised."""
    regions = body_regions(site)
    return next((region for region, _ in _REGIONS if region in regions), None)


_SIDES = {"left": "left", "right": "right", "bilateral": "both", "both": "both", "lt": "left", "rt": "right"}


def sides(site: str) -> set[str]:
    """Laterality named in a site text: left, right or both."""
    named = {_SIDES[w] for w in re.findall(r"[a-z]+", site.lower()) if w in _SIDES}
    return {"left", "right"} if "both" in named else named


def compare_sites(first: tuple[str, ...], second: tuple[str, ...]) -> bool | None:
    """Whether two sets of site texts name the same place: same body region and no opposite side.
    None when either names no recognisable region (the comparison cannot be made)."""
    regions_a = set().union(*(body_regions(t) for t in first)) if first else set()
    regions_b = set().union(*(body_regions(t) for t in second)) if second else set()
    if not regions_a or not regions_b:
        return None
    if not regions_a & regions_b:
        return False
    sides_a = set().union(*(sides(t) for t in first))
    sides_b = set().union(*(sides(t) for t in second))
    return not (sides_a and sides_b and not sides_a & sides_b)


def assess_distribution(ctx: PatientContext) -> DistributionAssessment:
    """Label from explicit codes first, then from recorded body sites, else unknown."""
    universalis = ctx.conditions(ClinicalConcept.CALCINOSIS_UNIVERSALIS)
    if universalis:
        return DistributionAssessment(
            Distribution.UNIVERSALIS,
            "recorded as calcinosis universalis",
            tuple(condition_evidence(c) for c in universalis),
        )
    circumscripta = ctx.conditions(ClinicalConcept.CALCINOSIS_CIRCUMSCRIPTA)
    if circumscripta:
        return DistributionAssessment(
            Distribution.CIRCUMSCRIPTA,
            "recorded as calcinosis circumscripta",
            tuple(condition_evidence(c) for c in circumscripta),
        )
    # The recorded body sites, or else the entry's own words ("Calcinosis cutis of both hands").
    conditions = [c for c in ctx.conditions(ClinicalConcept.CALCINOSIS_CUTIS) if c.body_sites or c.text]
    regions: set[str] = set()
    for condition in conditions:
        for site in condition.body_sites or ((condition.text,) if condition.text else ()):
            regions |= body_regions(site)
    evidence = tuple(condition_evidence(c) for c in conditions)
    if not regions:
        return DistributionAssessment(Distribution.UNKNOWN, "no body site recorded on calcinosis conditions", evidence)
    listed = ", ".join(sorted(regions))
    if len(regions) == 1:
        return DistributionAssessment(
            Distribution.CIRCUMSCRIPTA,
            f"one body region recorded ({listed})",
            evidence,
        )
    return DistributionAssessment(
        Distribution.UNIVERSALIS,
        f"{len(regions)} body regions recorded ({listed})",
        evidence,
    )
