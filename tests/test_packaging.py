"""The wheel, as a site installs it: built from the sources the image receives, installed with the
exact runtime pins into a fresh venv, and every command `calcinosis-cds --help` lists run from a
directory that is not the checkout. The sandbox and knowledge-review tooling is not in the wheel:
it runs from the checkout (scripts/calcinosis-tools), from any directory too.

Slow for a unit test (a fresh venv installs every pin: about a minute here), because only a real
install shows what an installed wheel lacks: the sandbox loader once found its patients next to
its own source file, which an installed package does not have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from calcinosis_tools.scenarios import patients_dir
from hooks import __version__
from hooks.stores import FeedbackRecord, open_feedback_store
from tests.realservers import FhirServer, fhir_server, free_port

ROOT = Path(__file__).resolve().parents[1]
#: What the image's build context holds (.dockerignore), and so what the wheel is built from.
BUILD_INPUTS = ("pyproject.toml", "README.md", "calcinosis", "fhir_mapping", "hooks")
RUNTIME_PACKAGES = {"calcinosis", "fhir_mapping", "hooks"}


@dataclass
class Installed:
    """A fresh venv holding the runtime pins and the wheel; commands run in `elsewhere`."""

    venv: Path
    wheel: Path
    elsewhere: Path
    env: dict[str, str]

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "calcinosis-cds"), *args],
            cwd=self.elsewhere,
            env=self.env,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _clean_environment(venv: Path) -> dict[str, str]:
    """The caller's environment without anything that would find the checkout or configure the
    service (PYTHONPATH, the dev venv, CALCINOSIS_* and OTEL_* settings)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALCINOSIS_", "OTEL_", "PYTHON", "VIRTUAL_ENV")) and k != "PYTEST_CURRENT_TEST"
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    for cache in source.rglob("__pycache__"):
        shutil.rmtree(cache)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (work / "dist").glob("calcinosis_cds-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    venv_pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    env = _clean_environment(venv)
    for step in (
        [*venv_pip, "install", "--only-binary=:all:", "--no-deps", "-r", str(ROOT / "requirements" / "runtime.txt")],
        [*venv_pip, "install", "--no-deps", str(wheel)],
        [*venv_pip, "check"],
    ):
        done = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, f"{step[4:]}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    yield Installed(venv, wheel, elsewhere, env)


def test_the_wheel_holds_the_runtime_packages_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == RUNTIME_PACKAGES
    assert not [n for n in names if "sandbox" in n or "knowledge_diff" in n or n.startswith("tests/")]
    # The data the service reads at run time is in it.
    assert "calcinosis/knowledge/thresholds.json" in names
    assert any(n.startswith("fhir_mapping/valuesets/") and n.endswith(".json") for n in names)


def _listed_commands(help_text: str) -> set[str]:
    match = re.search(r"\{([a-z,-]+)\}", help_text)
    assert match, help_text
    return set(match.group(1).split(","))


def test_every_listed_command_works_from_the_installed_wheel(installed: Installed) -> None:
    helped = installed.run("--help")
    assert helped.returncode == 0, helped.stderr
    commands = _listed_commands(helped.stdout)
    exercised: set[str] = set()

    version = installed.run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"calcinosis-cds {__version__}"

    # evaluate: a file by a path relative to the working directory, and standard input.
    bundle = (patients_dir() / "dystrophic-ssc.json").read_bytes()
    (installed.elsewhere / "patient.json").write_bytes(bundle)
    for args, stdin in ((("evaluate", "patient.json"), None), (("evaluate", "-"), bundle)):
        evaluated = installed.run(*args, stdin=stdin)
        assert evaluated.returncode == 0, evaluated.stderr
        assert [c["source"]["topic"]["code"] for c in json.loads(evaluated.stdout)["cards"]][:1] == ["subtype"]
    exercised.add("evaluate")

    # check: a patient on a real FHIR server on this machine, no prefetch.
    chart = json.loads(bundle)
    resources = [entry["resource"] for entry in chart["entry"]]
    patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    with fhir_server(FhirServer(resources=resources)) as server:
        checked = installed.run("check", "--fhir-server", server.url + "/r4", "--patient", patient)
    assert checked.returncode == 0, checked.stderr
    assert (
        checked.stdout.startswith("[info] ")
        and "pattern consistent with dystrophic calcinosis" in checked.stdout.lower()
    )
    exercised.add("check")

    # feedback-report: read-only over the configured store (a SQLite file holding one override).
    store = installed.elsewhere / "feedback.db"
    writer = open_feedback_store(f"sqlite:///{store}")
    override = FeedbackRecord(
        "calcinosis", "card-1", "subtype", "overridden", "", None, "not-relevant", None, "2026-11-30T10:00:00Z"
    )
    assert writer.add([override]) == 1
    env = {**installed.env, "CALCINOSIS_FEEDBACK_DATABASE_URL": f"sqlite:///{store}"}
    reported = subprocess.run(
        [str(installed.venv / "bin" / "calcinosis-cds"), "feedback-report"],
        cwd=installed.elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reported.returncode == 0, reported.stderr
    assert list(json.loads(reported.stdout)["topics"]) == ["subtype"]
    exercised.add("feedback-report")

    # serve: discovery answers, with the preview page on and no scenario folder (the wheel has none).
    port = free_port()
    env = {
        **installed.env,
        "CALCINOSIS_AUTH_DISABLED": "true",
        "CALCINOSIS_FEEDBACK_DATABASE_URL": "memory://",
        "CALCINOSIS_METRICS_PORT": "0",
        "CALCINOSIS_PREVIEW_ENABLED": "true",
    }
    process = subprocess.Popen(
        [str(installed.venv / "bin" / "calcinosis-cds"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=installed.elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /healthz within 90 s"
            time.sleep(0.3)
        discovery = httpx.get(base + "/cds-services", timeout=10)
        assert discovery.status_code == 200 and "calcinosis" in [s["id"] for s in discovery.json()["services"]]
        assert httpx.get(base + "/preview", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
    exercised.add("serve")

    assert commands == exercised, f"listed but not run here: {commands - exercised}"


def test_the_checkout_tooling_says_where_it_lives(installed: Installed) -> None:
    for command in ("sandbox", "knowledge-diff"):
        moved = installed.run(command, "load")
        assert moved.returncode == 2
        assert "source checkout" in moved.stderr and "scripts/calcinosis-tools" in moved.stderr


def test_the_checkout_tooling_runs_from_any_directory(tmp_path: Path) -> None:
    tools = ROOT / "scripts" / "calcinosis-tools"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    helped = subprocess.run([str(tools), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and _listed_commands(helped.stdout) == {"sandbox", "knowledge-diff"}, helped.stderr
    # An explicit folder that is not one: said plainly, no traceback.
    missing = subprocess.run(
        [str(tools), "sandbox", "load", "--fhir-server", "http://127.0.0.1:9/r4", "--patients", "no-such-folder"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "no folder no-such-folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    # The default folder is the checkout's patients, wherever the command runs from.
    unreachable = subprocess.run(
        [str(tools), "sandbox", "load", "--fhir-server", f"http://127.0.0.1:{free_port()}/r4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr, unreachable.stderr
