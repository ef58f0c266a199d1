"""`serve` refusing its configuration at start-up (#15): the refusal is written before logging is
configured, yet with CALCINOSIS_LOG_FORMAT=json it must be one JSON line like every other line
(a log collector reading the container's output would otherwise drop or mangle the one line that
says why the service stopped); in text it stays the plain message. Exit status 2 either way.
Each case runs a real `serve` process, its stderr written to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realservers import REPO, free_port
from tests.test_logs import json_line


def serve(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `calcinosis-cds serve` with only `env` among the CALCINOSIS_ settings; its exit status
    and what it wrote to stderr."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("CALCINOSIS_")}
    errors = tmp_path / "stderr.log"
    with errors.open("wb") as stderr:
        process = subprocess.run(
            [sys.executable, "-m", "hooks.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=REPO,
            env={**base, "CALCINOSIS_FEEDBACK_DATABASE_URL": "memory://", "CALCINOSIS_METRICS_PORT": "0", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=120,
            check=False,
        )
    return process.returncode, errors.read_text(encoding="utf-8")


REFUSALS = {
    # The settings themselves are refused: authentication on, no trusted clients configured.
    "settings": ({}, "CALCINOSIS_TRUSTED_CLIENTS"),
    # The settings are valid but the audit log file cannot be opened (a folder that does not exist).
    "audit log": ({"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_AUDIT_LOG": "{tmp}/absent/audit.log"}, "audit_log"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_configuration_is_one_json_line_in_json_mode(tmp_path: Path, case: str) -> None:
    settings, named = REFUSALS[case]
    env = {key: value.replace("{tmp}", str(tmp_path)) for key, value in settings.items()}
    status, stderr = serve(tmp_path, {**env, "CALCINOSIS_LOG_FORMAT": "json"})
    assert status == 2
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    entry = json_line(lines[0])
    assert entry["level"] == "ERROR" and entry["logger"] == "calcinosis_cds"
    assert entry["message"].startswith("invalid configuration: ") and named in entry["message"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", sorted(REFUSALS))
@pytest.mark.parametrize("log_format", ["text", None])
def test_a_refused_configuration_stays_plain_text_in_text_mode(
    tmp_path: Path, case: str, log_format: str | None
) -> None:
    """Set to text, or unset (the default is text)."""
    settings, named = REFUSALS[case]
    env = {key: value.replace("{tmp}", str(tmp_path)) for key, value in settings.items()}
    if log_format is not None:
        env["CALCINOSIS_LOG_FORMAT"] = log_format
    status, stderr = serve(tmp_path, env)
    assert status == 2
    assert stderr.startswith("calcinosis-cds: invalid configuration: ") and named in stderr
    assert len(stderr.splitlines()) == 1 and not stderr.lstrip().startswith("{"), stderr


def test_an_invalid_log_format_is_refused_in_plain_text(tmp_path: Path) -> None:
    """When the format itself is what was refused, there is no JSON to honour: plain text."""
    status, stderr = serve(tmp_path, {"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_LOG_FORMAT": "xml"})
    assert status == 2
    assert stderr.startswith("calcinosis-cds: invalid configuration: log_format")
