"""The `calcinosis-cds evaluate` command: a Bundle or a CDS Hooks request in, the response out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hooks.cli import main
from hooks.models import HookResponse
from tests.charts import ICD10, Chart
from tests.hookclient import hook_request


def chart() -> Chart:
    c = Chart()
    c.calcinosis()
    c.condition("M34.1", ICD10, "CR(E)ST syndrome")
    c.mineral_panel(9.4, 4.1, 3.6)
    return c


@pytest.mark.parametrize("bundle_type", ["collection", "transaction", "searchset"])
def test_evaluate_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str], bundle_type: str) -> None:
    path = tmp_path / "bundle.json"
    bundle = chart().bundle(bundle_type)
    if bundle_type == "transaction":
        for entry in bundle["entry"]:
            entry["request"] = {
                "method": "PUT",
                "url": f"{entry['resource']['resourceType']}/{entry['resource']['id']}",
            }
    path.write_text(json.dumps(bundle))
    assert main(["evaluate", str(path)]) == 0
    response = json.loads(capsys.readouterr().out)
    HookResponse.model_validate(response)
    assert response["cards"][0]["summary"].startswith("Pattern consistent with dystrophic calcinosis: ")


def test_evaluate_a_cds_hooks_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(hook_request(chart())))
    assert main(["evaluate", str(path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["cards"]) == 2  # no differential raised: no third card


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"resourceType": "Patient"}', "expected a FHIR Bundle"),
        ('{"resourceType": "Bundle", "type": "collection", "entry": []}', "exactly one Patient"),
        ('{"hook": "patient-view", "context": {}}', "not a valid CDS Hooks request"),
    ],
)
def test_evaluate_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_evaluate_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "/nonexistent/file.json"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_settings_come_from_the_environment_and_bad_values_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hooks.settings import Settings

    monkeypatch.setenv("CALCINOSIS_CORS_ORIGINS", "https://sandbox.cds-hooks.org, https://ehr.example.org")
    assert Settings(auth_disabled=True).cors_origins == ["https://sandbox.cds-hooks.org", "https://ehr.example.org"]
    monkeypatch.setenv("CALCINOSIS_PORT", "not-a-port")
    assert main(["evaluate", "-"]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_serve_refuses_to_start_without_authentication_configured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALCINOSIS_AUTH_DISABLED", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CALCINOSIS_TRUSTED_CLIENTS" in err and "Traceback" not in err


def test_version_is_printed_from_the_one_place_it_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from hooks import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"calcinosis-cds {__version__}"
    assert version("calcinosis-cds") == __version__  # the installed metadata reads it too
