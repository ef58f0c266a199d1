"""FHIR R4 resources to calcinosis findings: value sets, units, statuses and dates.

A terminologist adding a site's local codes touches the `valuesets/` data (or a local file named
by configuration) and nothing else.
"""

from fhir_mapping.mapping import bundle_resources, map_resources, parse_datetime
from fhir_mapping.pipeline import AssessmentResult, assess_resources, default_terminology
from fhir_mapping.terminology import Terminology, TerminologyError, load_terminology

__all__ = [
    "AssessmentResult",
    "Terminology",
    "TerminologyError",
    "assess_resources",
    "bundle_resources",
    "default_terminology",
    "load_terminology",
    "map_resources",
    "parse_datetime",
]
