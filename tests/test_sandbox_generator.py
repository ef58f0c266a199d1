"""The committed sandbox patients are what `deploy/fhir-sandbox/patients/generate.py` writes, byte
for byte: a hand edit of a Bundle or of expected.json, or a change to the chart builder the
generator uses (tests.fhir_chart), shows here instead of drifting silently (issue 12 item 9).

The generator runs into a temporary folder, so the committed files are never touched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

PATIENTS = Path(__file__).resolve().parent.parent / "deploy" / "fhir-sandbox" / "patients"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sandbox_patient_generator", PATIENTS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_py_rewrites_the_committed_patient_files_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = generator()
    # The suite needs ../shared (README, "What the tests need"): a missing folder fails, never skips.
    assert Path(module.SYNTHEA).is_dir(), (
        "the shared Synthea charts the generator copies are not next to the repository"
    )
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    committed = {path.name for path in PATIENTS.glob("*.json")}
    written = {path.name for path in tmp_path.glob("*.json")}
    assert written == committed
    for name in sorted(committed):
        assert (tmp_path / name).read_bytes() == (PATIENTS / name).read_bytes(), name
