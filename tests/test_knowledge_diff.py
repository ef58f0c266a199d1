"""`scripts/calcinosis-tools knowledge-diff` shows a reviewer what an edit of the knowledge base changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calcinosis import knowledge_base
from calcinosis_tools.cli import main
from tests.scenario_library import write_library

PACKAGE_KNOWLEDGE = Path(knowledge_base.__file__).parent / "knowledge"


def edited_copy(tmp_path: Path, threshold: str, value: float) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(PACKAGE_KNOWLEDGE, folder)
    data = json.loads((folder / "thresholds.json").read_text())
    data["thresholds"][threshold]["value"] = value
    (folder / "thresholds.json").write_text(json.dumps(data))
    return folder


def test_an_edit_shows_its_effect_across_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    charts = tmp_path / "charts"
    write_library(charts)
    edited = edited_copy(tmp_path, "caxp-metastatic", 90)
    assert main(["knowledge-diff", str(PACKAGE_KNOWLEDGE), str(edited), "--scenarios", str(charts)]) == 0
    out = capsys.readouterr().out
    assert "caxp-metastatic: 70 -> 90" in out
    # The ESRD patient with Ca x P 78.5 is no longer above the cut-off: its headline changes.
    assert "metastatic-esrd-si-units" in out
    assert "Ca x P 78.5 mg²/dL² (above 70)" in out and "phosphate 2.55 mmol/L (7.9 mg/dL) above range" in out
    assert out.strip().splitlines()[-1].endswith("charts change.")


def test_the_same_knowledge_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knowledge-diff", "HEAD", str(PACKAGE_KNOWLEDGE)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("0 of ")


def test_an_unknown_version_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knowledge-diff", "no-such-revision-xyz", str(PACKAGE_KNOWLEDGE)]) == 2
    assert "neither a folder nor a git revision" in capsys.readouterr().err
