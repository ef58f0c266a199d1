"""Value sets: which codes (and, where codes are missing, which phrases) mean which finding.

The sets are FHIR ValueSet JSON files in `valuesets/`, each code carrying its source and a
confirmation status (confirmed / partial / unconfirmed, from shared/reference/terminology.md).
Unconfirmed codes are kept in the files for reviewers but are not used unless a site opts in.
A site adds its own local codes with a file of ValueSets (or a Bundle of them) named by the
`CALCINOSIS_LOCAL_VALUESETS` setting, without editing the package: each local ValueSet names the
packaged set it extends by `url` or `id`.

Everything is indexed once at start-up; a malformed file fails start-up with a message naming the
file and the entry, never a request.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from calcinosis.findings import Analyte, ClinicalConcept, DrugClass, ProcedureKind

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

#: OID and legacy spellings of the same code systems seen in real EHR data.
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "http://loinc.org/": LOINC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
}
KNOWN_SYSTEMS = {LOINC, SNOMED, ICD10CM, RXNORM}
_WORD = re.compile(r"[a-z0-9]+")
"""A word as the phrase matching sees one: the phrases match between non-alphanumerics."""

EXT_KIND = "urn:calcinosis-cds:extension:finding-kind"
EXT_TEXT = "urn:calcinosis-cds:extension:text-pattern"
EXT_EXCLUDE = "urn:calcinosis-cds:extension:exclude-text-pattern"
EXT_STATUS = "urn:calcinosis-cds:extension:code-status"
EXT_SOURCE = "urn:calcinosis-cds:extension:code-source"
STATUSES = ("confirmed", "partial", "unconfirmed", "local")

KINDS: dict[str, dict[str, Any]] = {
    "lab": {a.value: a for a in Analyte},
    "condition": {c.value: c for c in ClinicalConcept},
    "medication": {d.value: d for d in DrugClass},
    "procedure": {p.value: p for p in ProcedureKind},
}

Finding = Analyte | ClinicalConcept | DrugClass | ProcedureKind


class TerminologyError(ValueError):
    """A value set file is malformed or names a finding the rules do not know."""


def normalise_system(system: str | None) -> str | None:
    """The canonical URI for a code system, folding OID and trailing-slash spellings."""
    if system is None:
        return None
    system = system.strip()
    return SYSTEM_ALIASES.get(system, system)


def normalise_code(system: str | None, code: str) -> str:
    """ICD-10-CM codes arrive with or without the dot and in either case; fold to 'L94.2'."""
    code = code.strip()
    if system == ICD10CM:
        code = code.upper().replace(" ", "")
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """Where a code came from (for the README table and for audits)."""

    value_set: str
    status: str
    source: str


@dataclass(slots=True)
class Terminology:
    """Indexes for mapping a coding or a phrase to findings."""

    codes: dict[tuple[str, str], list[Finding]] = field(default_factory=lambda: defaultdict(list))
    provenance: dict[tuple[str, str, str], CodeEntry] = field(default_factory=dict)
    icd_prefixes: list[tuple[str, Finding]] = field(default_factory=list)
    phrases: dict[str, list[tuple[str, Finding]]] = field(default_factory=lambda: defaultdict(list))
    _matchers: dict[str, tuple[re.Pattern[str], dict[str, list[Finding]], frozenset[str] | None]] = field(
        default_factory=dict
    )
    exclusions: dict[Finding, list[re.Pattern[str]]] = field(default_factory=lambda: defaultdict(list))
    value_sets: dict[str, Finding] = field(default_factory=dict)
    skipped_unconfirmed: int = 0

    def match_code(self, system: str | None, code: str | None) -> list[Finding]:
        """Findings a single coding maps to (exact code, then ICD-10-CM hierarchy)."""
        system = normalise_system(system)
        if system is None or not code:
            return []
        code = normalise_code(system, code)
        found = list(self.codes.get((system, code), ()))
        if system == ICD10CM:
            for prefix, finding in self.icd_prefixes:
                if code.startswith(prefix) and finding not in found:
                    found.append(finding)
        return found

    def _matcher(self, kind: str) -> tuple[re.Pattern[str], dict[str, list[Finding]], frozenset[str] | None]:
        """One regular expression for all phrases of a kind (longest first), found at every
        position through a lookahead; built once. One pass over a text instead of one per phrase.

        Also the first word of every phrase: a phrase can only match where the text has a word
        equal to the phrase's first word (the match starts and ends at word boundaries), so the
        expression is tried at those words only, and a text with none of them is answered
        without running it. None when a phrase does not start with a letter or digit (then the
        expression is tried at every position)."""
        if kind not in self._matchers:
            by_phrase: dict[str, list[Finding]] = defaultdict(list)
            for phrase, finding in self.phrases.get(kind, ()):
                if finding not in by_phrase[phrase]:
                    by_phrase[phrase].append(finding)
            alternatives = "|".join(re.escape(p) for p in sorted(by_phrase, key=len, reverse=True)) or "(?!)"
            pattern = re.compile(rf"(?=(?<![a-z0-9])({alternatives})(?![a-z0-9]))")
            first_words = [_WORD.match(phrase) for phrase in by_phrase]
            screen = frozenset(word.group(0) for word in first_words if word is not None) if all(first_words) else None
            self._matchers[kind] = (pattern, dict(by_phrase), screen)
        return self._matchers[kind]

    def match_text(self, kind: str, text: str) -> list[Finding]:
        """Findings of a kind whose phrases occur (as whole words) in `text`."""
        folded = text.lower()
        pattern, by_phrase, first_words = self._matcher(kind)
        if first_words is None:
            matches: Iterator[re.Match[str] | None] = pattern.finditer(folded)
        else:  # the expression is tried only where a word starts that begins some phrase
            matches = (pattern.match(folded, w.start()) for w in _WORD.finditer(folded) if w.group() in first_words)
        found: list[Finding] = []
        for match in matches:
            if match is None:
                continue
            for finding in by_phrase[match.group(1)]:
                if finding not in found and not any(x.search(folded) for x in self.exclusions.get(finding, ())):
                    found.append(finding)
        return found

    def match_text_spans(self, kind: str, text: str) -> list[tuple[Finding, int, int]]:
        """Like `match_text`, with where each phrase stands in `text` (every occurrence), so that
        the words around it can be read (`fhir_mapping.assertion`)."""
        folded = text.lower()
        if len(folded) != len(text):  # a case fold that changes length would shift the spans
            folded = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        pattern, by_phrase, _ = self._matcher(kind)
        found: list[tuple[Finding, int, int]] = []
        for match in pattern.finditer(folded):
            for finding in by_phrase[match.group(1)]:
                if not any(x.search(folded) for x in self.exclusions.get(finding, ())):
                    found.append((finding, match.start(1), match.end(1)))
        return found

    def codes_for(self, finding: Finding, system: str) -> list[str]:
        """Every active exact code of a system for a finding (used to build prefetch queries)."""
        return sorted(code for (sys, code), findings in self.codes.items() if sys == system and finding in findings)


def _extension(element: dict[str, Any], url: str) -> list[Any]:
    values: list[Any] = []
    for ext in element.get("extension", []) or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            values.extend(v for k, v in ext.items() if k.startswith("value"))
    return values


def _phrase(text: str) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z0-9])" + re.escape(text.lower()) + r"(?![a-z0-9])")


def _status_of(element: dict[str, Any], where: str, local: bool) -> tuple[str, str]:
    if local:
        sources = _extension(element, EXT_SOURCE)
        return "local", str(sources[0]) if sources else "site configuration"
    statuses = _extension(element, EXT_STATUS)
    sources = _extension(element, EXT_SOURCE)
    if len(statuses) != 1 or statuses[0] not in STATUSES:
        raise TerminologyError(f"{where}: needs one code-status extension ({', '.join(STATUSES)})")
    if len(sources) != 1 or not isinstance(sources[0], str) or not sources[0].strip():
        raise TerminologyError(f"{where}: needs one code-source extension")
    return statuses[0], sources[0]


def _add_value_set(
    terminology: Terminology, value_set: dict[str, Any], where: str, include_unconfirmed: bool, local: bool
) -> None:
    if value_set.get("resourceType") != "ValueSet":
        raise TerminologyError(f"{where}: resourceType must be ValueSet")
    set_id = value_set.get("id")
    url = value_set.get("url")
    if local:
        target = (
            url.rsplit(":", 1)[-1]
            if isinstance(url, str) and url.startswith("urn:calcinosis-cds:valueset:")
            else set_id
        )
        if target not in terminology.value_sets:
            raise TerminologyError(f"{where}: local ValueSet must name a packaged set by url or id (got {target!r})")
        finding = terminology.value_sets[target]
        kind = next(k for k, table in KINDS.items() if finding in table.values())
    else:
        kinds = _extension(value_set, EXT_KIND)
        if len(kinds) != 1 or kinds[0] not in KINDS:
            raise TerminologyError(f"{where}: needs one finding-kind extension ({', '.join(KINDS)})")
        kind = kinds[0]
        if not isinstance(set_id, str) or set_id not in KINDS[kind]:
            raise TerminologyError(f"{where}: id {set_id!r} is not a known {kind} finding")
        if url != f"urn:calcinosis-cds:valueset:{set_id}":
            raise TerminologyError(f"{where}: url must be urn:calcinosis-cds:valueset:{set_id}")
        finding = KINDS[kind][set_id]
        terminology.value_sets[set_id] = finding
    for text in _extension(value_set, EXT_TEXT):
        if not isinstance(text, str) or not text.strip():
            raise TerminologyError(f"{where}: empty text-pattern")
        terminology.phrases[kind].append((text.strip().lower(), finding))
    for text in _extension(value_set, EXT_EXCLUDE):
        terminology.exclusions[finding].append(_phrase(str(text).strip()))
    compose = value_set.get("compose", {})
    includes = compose.get("include", []) if isinstance(compose, dict) else None
    if not isinstance(includes, list):
        raise TerminologyError(f"{where}: compose.include must be a list")
    for number, include in enumerate(includes):
        here = f"{where} include[{number}]"
        if not isinstance(include, dict):
            raise TerminologyError(f"{here}: must be an object")
        system = normalise_system(include.get("system"))
        if not isinstance(system, str) or not system.strip():
            raise TerminologyError(f"{here}: needs a system")
        # Packaged sets use the four standard systems; a site's local additions may use its own
        # code systems (local lab and problem codes are exactly what they are for).
        if not local and system not in KNOWN_SYSTEMS:
            raise TerminologyError(f"{here}: unknown system {include.get('system')!r}")
        if kind == "lab" and system != LOINC and not local:
            raise TerminologyError(f"{here}: lab value sets hold LOINC codes only")
        for filt in include.get("filter", []) or []:
            if system != ICD10CM or filt.get("op") != "is-a" or not isinstance(filt.get("value"), str):
                raise TerminologyError(f"{here}: only ICD-10-CM 'is-a' filters are supported")
            status, source = _status_of(include, here, local)
            if status == "unconfirmed" and not include_unconfirmed:
                terminology.skipped_unconfirmed += 1
                continue
            prefix = normalise_code(ICD10CM, filt["value"])
            terminology.icd_prefixes.append((prefix, finding))
            terminology.provenance[(system, prefix + "*", str(set_id))] = CodeEntry(str(set_id), status, source)
        for concept in include.get("concept", []) or []:
            if not isinstance(concept, dict) or not isinstance(concept.get("code"), str):
                raise TerminologyError(f"{here}: every concept needs a string code")
            status, source = _status_of(concept, f"{here} {concept['code']}", local)
            if status == "unconfirmed" and not include_unconfirmed:
                terminology.skipped_unconfirmed += 1
                continue
            code = normalise_code(system, concept["code"])
            if finding not in terminology.codes[(system, code)]:
                terminology.codes[(system, code)].append(finding)
            terminology.provenance[(system, code, str(set_id))] = CodeEntry(str(set_id), status, source)


def _local_value_sets(path: Path) -> list[tuple[dict[str, Any], str]]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    found: list[tuple[dict[str, Any], str]] = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise TerminologyError(f"local value sets {file}: {error}") from error
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            for index, entry in enumerate(data.get("entry", []) or []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if not isinstance(resource, dict):
                    raise TerminologyError(f"local value sets {file} entry {index}: no resource")
                found.append((resource, f"{file} entry {index}"))
        elif isinstance(data, dict):
            found.append((data, str(file)))
        else:
            raise TerminologyError(f"local value sets {file}: expected a ValueSet or a Bundle")
    return found


def load_terminology(local_path: str | Path | None = None, include_unconfirmed: bool = False) -> Terminology:
    """Index the packaged value sets, then a site's local additions if `local_path` is given."""
    terminology = Terminology()
    folder = resources.files("fhir_mapping").joinpath("valuesets")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))
    if not names:
        raise TerminologyError("no value set files found in fhir_mapping/valuesets")
    for name in names:
        try:
            data = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise TerminologyError(f"valuesets/{name}: {error}") from error
        if not isinstance(data, dict):
            raise TerminologyError(f"valuesets/{name}: must be a JSON object")
        _add_value_set(terminology, data, f"valuesets/{name}", include_unconfirmed, local=False)
    if local_path:
        path = Path(local_path)
        if not path.exists():
            raise TerminologyError(f"local value sets: {path} does not exist")
        for value_set, where in _local_value_sets(path):
            _add_value_set(terminology, value_set, where, include_unconfirmed, local=True)
    terminology.icd_prefixes.sort(key=lambda item: -len(item[0]))
    for kind in KINDS:
        terminology._matcher(kind)  # compiled here, not on a clinician's first request
    return terminology
