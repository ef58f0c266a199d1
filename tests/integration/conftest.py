"""Real components for integration tests: the local FHIR sandbox (deploy/fhir-sandbox) and the
service itself, each a separate process on 127.0.0.1.

If the sandbox cannot start (no Node or npm, install failure), the tests FAIL with the sandbox's
own output: they never skip silently, because CI would then pass without testing anything.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realservers import service_process

REPO = Path(__file__).resolve().parents[2]
SANDBOX_START = REPO / "deploy" / "fhir-sandbox" / "start"
START_TIMEOUT = 240.0  # the first start installs the npm packages


def _stop(process: subprocess.Popen[Any]) -> None:
    """Terminate a child process, killing it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def fhir_sandbox() -> Iterator[str]:
    """Base URL (with trailing slash) of a fresh in-memory FHIR R4 server."""
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this block: closed after the session
    process = subprocess.Popen(
        [str(SANDBOX_START), "--host", "127.0.0.1", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env={**os.environ, "FHIR_SANDBOX_PAGE_SIZE": "50"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    base = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("FHIR sandbox listening on "):
            base = line.removeprefix("FHIR sandbox listening on ").strip()
            break
        if process.poll() is not None:
            break
    if base is None:
        process.kill()
        errors.seek(0)
        pytest.fail("the FHIR sandbox did not start:\n" + errors.read().decode(errors="replace")[-3000:])
    try:
        yield base
    finally:
        _stop(process)
        errors.close()


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    """Base URL of the service, run by its own command line over real HTTP (its output goes to a
    file, `tests.realservers.service_process`: an undrained pipe would block it)."""
    env = {
        "CALCINOSIS_FHIR_PAGE_SIZE": "20",  # small pages: every realistic chart is paged
        "CALCINOSIS_FETCH_DEADLINE_SECONDS": "30",
        # The sandbox's first answers (cold JIT) on a busy machine took over the 3 s default and
        # made the comparison flaky; still below the 5 s of test_fhir_server's slow fault.
        "CALCINOSIS_FHIR_REQUEST_TIMEOUT_SECONDS": "4.5",
        "CALCINOSIS_FHIR_PAGE_CAP": "200",
        "CALCINOSIS_LOG_LEVEL": "WARNING",
        "CALCINOSIS_AUTH_DISABLED": "true",  # local use; authentication is tested in test_api_security.py
    }
    with service_process(env) as service:
        yield service.url
