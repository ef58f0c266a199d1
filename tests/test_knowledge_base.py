"""The knowledge base loads, cites only known sources, and fails loudly when malformed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from calcinosis import knowledge_base
from calcinosis.knowledge_base import KnowledgeBaseError, format_number, load_knowledge

PACKAGE = Path(knowledge_base.__file__).parent


def test_loads_and_every_reference_resolves() -> None:
    kb = load_knowledge()
    assert kb.thresholds and kb.workup and kb.differentials
    for differential_id in (
        "gouty-tophus",
        "osteoma-cutis",
        "progressive-osseous-heteroplasia",
        "primary-hyperoxaluria",
        "xanthoma",
    ):
        assert kb.differential(differential_id).separating_test


def test_every_source_key_and_threshold_named_in_the_rules_exists() -> None:
    kb = load_knowledge()
    code = "\n".join(p.read_text() for p in PACKAGE.glob("*.py"))
    for key in set(re.findall(r'"([A-Z][A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)"', code)):
        if key.startswith(("CC-", "DX-", "G1")):
            continue
        assert key in kb.sources, f"rule cites unknown source {key}"
    for threshold in set(
        re.findall(r'(?<![\w])(?:value|threshold|days|number|quantity)\(["\']([a-z0-9-]+)["\']\)', code)
    ):
        assert threshold in kb.thresholds, f"rule uses unknown threshold {threshold}"


def test_biopsy_is_never_suggested_in_suspected_calciphylaxis_by_data() -> None:
    biopsy = next(item for item in load_knowledge().workup if item.id == "skin-biopsy")
    assert biopsy.never_when == "calciphylaxis-suspected" and biopsy.caution


def test_a_malformed_file_fails_start_up_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "knowledge"
    shutil.copytree(PACKAGE / "knowledge", folder)
    data = json.loads((folder / "thresholds.json").read_text())
    data["thresholds"]["phosphate-upper"]["sources"] = ["No-Such-Source"]
    (folder / "thresholds.json").write_text(json.dumps(data))
    with pytest.raises(KnowledgeBaseError, match="phosphate-upper: unknown source 'No-Such-Source'"):
        load_knowledge(folder)


def test_a_window_is_named_not_typed_and_prose_placeholders_must_exist(tmp_path: Path) -> None:
    folder = tmp_path / "knowledge"
    shutil.copytree(PACKAGE / "knowledge", folder)
    workup = json.loads((folder / "workup.json").read_text())
    workup["items"][0]["lookback_days"] = 90
    (folder / "workup.json").write_text(json.dumps(workup))
    with pytest.raises(KnowledgeBaseError, match="lookback_days' is no longer read"):
        load_knowledge(folder)
    del workup["items"][0]["lookback_days"]
    workup["items"][0]["reason"] = "above {no-such-threshold}"
    (folder / "workup.json").write_text(json.dumps(workup))
    with pytest.raises(KnowledgeBaseError, match="unknown threshold 'no-such-threshold'"):
        load_knowledge(folder)


def test_lab_retention_covers_every_window_twice() -> None:
    kb = load_knowledge()
    longest = max(item.lookback_days or 0 for item in kb.workup)
    longest = max(longest, int(kb.value("gate-lookback-days") + kb.value("ckd-chronicity-days")))
    assert kb.value("lab-retention-days") >= 2 * longest


def test_a_folder_without_a_threshold_the_rules_read_fails_with_a_clear_message(tmp_path: Path) -> None:
    """An older knowledge base (or an entry deleted by an edit) fails when loaded, naming what is
    missing, instead of a KeyError in the middle of a request or a knowledge-diff run."""
    folder = tmp_path / "knowledge"
    shutil.copytree(PACKAGE / "knowledge", folder)
    assert load_knowledge(folder).thresholds.keys() == load_knowledge().thresholds.keys()
    data = json.loads((folder / "thresholds.json").read_text())
    del data["thresholds"]["aki-creatinine-rise-hours"]
    (folder / "thresholds.json").write_text(json.dumps(data))
    with pytest.raises(KnowledgeBaseError, match="lacks aki-creatinine-rise-hours, which the rules of this version"):
        load_knowledge(folder)


def test_no_threshold_meaning_restates_its_own_value() -> None:
    """A meaning that spells its own number ("more than 5 years") goes stale when a reviewer edits
    the value: meanings say "this", the value is stated once."""
    for key, threshold in load_knowledge().thresholds.items():
        number = format_number(threshold.value)
        assert not re.search(rf"(?<![0-9.,]){re.escape(number)}(?![0-9]|[.,][0-9])", threshold.meaning), key
