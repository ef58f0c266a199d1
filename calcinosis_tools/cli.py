"""The command line of the checkout's tooling: load the sandbox patients, review a knowledge edit.

sandbox load --fhir-server URL [--patients DIR] [--token T] [--no-shift]
knowledge-diff OLD NEW [--scenarios PATH ...]   # folders or git revisions
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import httpx
import orjson

from calcinosis_tools.scenarios import ANCHOR, ScenarioError, bundle_anchor, load_scenarios, patients_dir, shift_dates
from hooks.logs import configure_command_logging
from hooks.service import CalcinosisService
from hooks.settings import Settings


class LoadError(Exception):
    """A FHIR server that cannot be reached or refuses a Bundle; printed without a traceback."""


def load_sandbox(fhir_server: str, token: str | None, directory: str | Path | None, shift: bool) -> list[str]:
    """POST every scenario transaction Bundle (PUT entries: idempotent) to a FHIR server, dates
    moved to today unless `shift` is False. `directory` defaults to the checkout's patients."""
    scenarios = load_scenarios(Path(directory) if directory else None)
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lines = []
    with httpx.Client(timeout=60, follow_redirects=False) as http:
        for scenario in scenarios:
            bundle = scenario.bundle
            if shift:
                bundle = shift_dates(bundle, bundle_anchor(bundle) or ANCHOR, date.today())
            try:
                response = http.post(fhir_server.rstrip("/") + "/", content=orjson.dumps(bundle), headers=headers)
            except httpx.HTTPError as error:
                raise LoadError(f"cannot reach {fhir_server}: {type(error).__name__}") from error
            if response.status_code >= 300:
                raise LoadError(f"{scenario.name}: the FHIR server answered {response.status_code}")
            lines.append(
                f"loaded {scenario.name}: Patient/{scenario.patient_id} ({len(bundle.get('entry', []))} resources)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m calcinosis_tools` (and scripts/calcinosis-tools)."""
    parser = argparse.ArgumentParser(
        prog="calcinosis-tools", description="Sandbox and knowledge-review tooling of a calcinosis-cds source checkout"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="test patients for a FHIR sandbox")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    loading = sandbox_commands.add_parser(
        "load", help="load the scenario patients into a FHIR server (PUT, idempotent)"
    )
    loading.add_argument("--fhir-server", required=True, help="FHIR R4 base URL")
    loading.add_argument("--token", help="bearer token for the FHIR server")
    loading.add_argument(
        "--patients",
        help=f"folder of scenario Bundles with expected.json (default: {patients_dir().name} of this checkout)",
    )
    loading.add_argument("--no-shift", action="store_true", help="keep the dates as written (anchor 2026-11-01)")
    differ = commands.add_parser(
        "knowledge-diff", help="what an edit of the knowledge base changes on the cards of the scenario library"
    )
    differ.add_argument("old", help="folder of knowledge files, or a git revision (e.g. HEAD~1)")
    differ.add_argument("new", help="folder of knowledge files, or a git revision (e.g. HEAD)")
    differ.add_argument(
        "--scenarios",
        action="append",
        default=[],
        help="more charts: a Bundle file or a folder of them (repeatable); the sandbox patients always run",
    )
    args = parser.parse_args(argv)
    settings = Settings(auth_disabled=True)  # local tooling: nothing here answers an EHR
    configure_command_logging(settings.log_level, settings.log_format)
    if args.command == "sandbox":
        try:
            for line in load_sandbox(args.fhir_server, args.token, args.patients, not args.no_shift):
                print(line)
        except (LoadError, ScenarioError) as error:
            print(f"calcinosis-tools: {error}", file=sys.stderr)
            return 1
        return 0
    from calcinosis_tools.knowledge_diff import KnowledgeDiffError, knowledge_diff

    try:
        lines, changed, total = knowledge_diff(args.old, args.new, CalcinosisService(settings), args.scenarios)
    except (KnowledgeDiffError, ScenarioError) as error:
        print(f"calcinosis-tools: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("\n".join([*lines, f"{changed} of {total} charts change."]) + "\n")
    return 0
