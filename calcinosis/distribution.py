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


def body_region(site: str) -> str | None:
    """The body region a site text names, or None if unrecognised.

    Left and right are one region: both hands in limited systemic sclerosis are the classic
    circumscripta picture (StatPearls; clinical-knowledge.md 5.6), not a diffuse one."""
    words = set(re.findall(r"[a-z]+", site.lower()))
    for region, keywords in _REGIONS:
        if words & set(keywords):
            return region
    return None


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
    conditions = [c for c in ctx.conditions(ClinicalConcept.CALCINOSIS_CUTIS) if c.body_sites]
    regions: set[str] = set()
    for condition in conditions:
        for site in condition.body_sites:
            region = body_region(site)
            if region is not None:
                regions.add(region)
    evidence = tuple(condition_evidence(c) for c in conditions)
    if not regions:
        return DistributionAssessment(Distribution.UNKNOWN, "no body site recorded on calcinosis conditions", evidence)
    listed = ", ".join(sorted(regions))
    if len(regions) == 1:
        return DistributionAssessment(
            Distribution.CIRCUMSCRIPTA,
            f"one body region recorded ({listed}); region rule is an unconfirmed design choice",
            evidence,
        )
    return DistributionAssessment(
        Distribution.UNIVERSALIS,
        f"{len(regions)} body regions recorded ({listed}); region rule is an unconfirmed design choice",
        evidence,
    )
