"""Clinical reasoning about calcinosis cutis: typed findings in, an evidence-backed assessment out.

Pure Python (standard library only): no FHIR, no HTTP, no configuration. A clinician reviewing the
rules reads this package and its `knowledge/` JSON files and nothing else.
"""

from calcinosis.assessment import Assessment, Distribution, Likelihood, Subtype
from calcinosis.engine import assess
from calcinosis.findings import PatientFindings
from calcinosis.knowledge_base import KnowledgeBase, KnowledgeBaseError, default_knowledge, load_knowledge

__all__ = [
    "Assessment",
    "Distribution",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Likelihood",
    "PatientFindings",
    "Subtype",
    "assess",
    "default_knowledge",
    "load_knowledge",
]
