"""`python -m calcinosis_tools knowledge-diff OLD NEW`: what an edit of the knowledge base changes on
the cards. Tooling of a source checkout (it reads git revisions of this repository): not in the wheel.

OLD and NEW are each a folder of knowledge files (a reviewer's edited copy of calcinosis/knowledge)
or a git revision of this repository (`HEAD~1`, a branch, a commit). The scenario library (the
sandbox patients, plus any folders or Bundle files given with `--scenarios`, e.g. the test charts
and Synthea backgrounds written by `python -m tests.scenario_library`) is run under both, with the
same rules and value sets, and every difference in likelihoods, headlines, warning level, workup and
differentials is printed. This is how a clinician reviewing the knowledge base sees the effect of an
edit before it ships.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import orjson

from calcinosis.knowledge_base import KnowledgeBase, KnowledgeBaseError, load_knowledge
from calcinosis_tools.scenarios import ANCHOR, bundle_anchor, load_scenarios
from fhir_mapping.mapping import bundle_resources
from hooks.service import CalcinosisService

KNOWLEDGE_PATH = "calcinosis/knowledge"


class KnowledgeDiffError(ValueError):
    """A version that cannot be read, or a scenario file that is not a Bundle."""


@dataclass(frozen=True, slots=True)
class LibraryCase:
    """One chart of the library: name, patient, resources and the day it is read at."""

    name: str
    patient_id: str
    resources: list[dict[str, Any]]
    as_of: datetime


def repository_root() -> Path:
    """The source tree this module lives in (calcinosis_tools/ sits at its root)."""
    return Path(__file__).resolve().parents[1]


def knowledge_version(spec: str, workdir: Path) -> KnowledgeBase:
    """The knowledge base of a folder, or of a git revision of this repository."""
    folder = Path(spec)
    if folder.is_dir():
        target = folder / "knowledge" if (folder / "knowledge" / "thresholds.json").is_file() else folder
        try:
            return load_knowledge(target)
        except KnowledgeBaseError as error:
            raise KnowledgeDiffError(f"{spec}: {error}") from error
    archive = subprocess.run(
        ["git", "-C", str(repository_root()), "archive", "--format=tar", spec, KNOWLEDGE_PATH],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise KnowledgeDiffError(f"{spec} is neither a folder nor a git revision with {KNOWLEDGE_PATH}")
    destination = workdir / f"rev-{uuid.uuid4().hex[:8]}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    try:
        return load_knowledge(destination / KNOWLEDGE_PATH)
    except KnowledgeBaseError as error:
        raise KnowledgeDiffError(f"{spec}: {error}") from error


def _case(name: str, bundle: Any) -> LibraryCase | None:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    resources = [r for r in bundle_resources(bundle) if isinstance(r, dict)]
    patients = [r for r in resources if r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)]
    if len(patients) != 1:
        return None
    day = bundle_anchor(bundle) or ANCHOR
    return LibraryCase(name, patients[0]["id"], resources, datetime.combine(day, time(12), tzinfo=UTC))


def scenario_library(extra: Iterable[str] = (), sandbox: bool = True) -> list[LibraryCase]:
    """The sandbox patients and every Bundle in the given files or folders."""
    cases: list[LibraryCase] = []
    if sandbox:
        for scenario in load_scenarios():
            anchor = datetime.combine(bundle_anchor(scenario.bundle) or ANCHOR, time(12), tzinfo=UTC)
            resources = [e["resource"] for e in scenario.bundle.get("entry", [])]
            cases.append(LibraryCase(scenario.name, scenario.patient_id, resources, anchor))
    for spec in extra:
        path = Path(spec)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                bundle = orjson.loads(file.read_bytes())
            except (OSError, orjson.JSONDecodeError) as error:
                raise KnowledgeDiffError(f"{file}: not a readable JSON file") from error
            case = _case(file.stem, bundle)
            if case is not None:
                cases.append(case)
    return cases


def card_outline(response: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer compares: per card its indicator and summary, the likelihoods, the
    suggested and listed workup, and the differentials shown."""
    outline: dict[str, Any] = {"cards": {}, "likelihoods": {}, "workup": [], "later": [], "differentials": []}
    for card in response.get("cards", []):
        topic = card["source"]["topic"]["code"]
        outline["cards"][topic] = f"[{card['indicator']}] {card['summary']}"
        extension = card.get("extension") or {}
        for subtype in extension.get("org.calcinosis-cds.assessment", {}).get("subtypes", []):
            outline["likelihoods"][subtype["subtype"]] = subtype["likelihood"]
        for item in extension.get("org.calcinosis-cds.workup", []):
            outline["workup" if item.get("suggested") else "later"].append(item.get("label", item["item"]))
        for differential in extension.get("org.calcinosis-cds.differentials", []):
            outline["differentials"].append(differential["code"])
    return outline


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The differences between two outlines, as lines a reviewer reads."""
    lines: list[str] = []
    for subtype in sorted(set(old["likelihoods"]) | set(new["likelihoods"])):
        before, after = old["likelihoods"].get(subtype, "-"), new["likelihoods"].get(subtype, "-")
        if before != after:
            lines.append(f"  {subtype}: {before} -> {after}")
    for topic in ("subtype", "workup", "differentials"):
        before, after = old["cards"].get(topic), new["cards"].get(topic)
        if before != after:
            lines.append(f"  {topic} card: {before or '(none)'}")
            lines.append(f"  {' ' * len(topic)}    -> {after or '(none)'}")
    for key, label in (("workup", "workup suggested"), ("later", "workup listed"), ("differentials", "differentials")):
        added = [x for x in new[key] if x not in old[key]]
        removed = [x for x in old[key] if x not in new[key]]
        if added or removed:
            lines.append(f"  {label}: " + ", ".join([f"+ {x}" for x in added] + [f"- {x}" for x in removed]))
    return lines


def knowledge_diff(
    old_spec: str, new_spec: str, service: CalcinosisService, scenarios: Iterable[str] = ()
) -> tuple[list[str], int, int]:
    """Report lines, the number of charts that change and the number run."""
    with tempfile.TemporaryDirectory(prefix="calcinosis-knowledge-") as workdir:
        old_kb = knowledge_version(old_spec, Path(workdir))
        new_kb = knowledge_version(new_spec, Path(workdir))
    old_service = CalcinosisService(service.settings, knowledge=old_kb, terminology=service.terminology)
    new_service = CalcinosisService(service.settings, knowledge=new_kb, terminology=service.terminology)
    cases = scenario_library(scenarios)
    report: list[str] = []
    changed = 0
    hook_instance = uuid.UUID(int=0)
    for case in cases:
        before = old_service.respond(case.resources, case.patient_id, hook_instance, case.as_of).wire()
        after = new_service.respond(case.resources, case.patient_id, hook_instance, case.as_of).wire()
        differences = compare(card_outline(before), card_outline(after))
        if differences:
            changed += 1
            report.append(case.name)
            report.extend(differences)
    changed_thresholds = [
        f"  {key}: {old_kb.number(key)} -> {new_kb.number(key) if key in new_kb.thresholds else '(removed)'}"
        for key in sorted(old_kb.thresholds)
        if key not in new_kb.thresholds or old_kb.value(key) != new_kb.value(key)
    ] + [f"  {key}: (new) {new_kb.number(key)}" for key in sorted(set(new_kb.thresholds) - set(old_kb.thresholds))]
    header = ["Thresholds and windows changed:", *(changed_thresholds or ["  (none)"]), ""]
    return header + report, changed, len(cases)
