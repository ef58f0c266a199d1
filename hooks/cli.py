"""`calcinosis-cds`: run the service, or evaluate one patient without an EHR.

    calcinosis-cds serve [--host H] [--port P] [--workers N]
    calcinosis-cds evaluate PATH      # a FHIR Bundle or a CDS Hooks request JSON
    calcinosis-cds check --fhir-server URL --patient ID [--token T] [--json]
    calcinosis-cds feedback-report
    calcinosis-cds --version

`evaluate` prints exactly the CDS Hooks response the service would return, so integration
engineers and hospital IT can check a patient file before any EHR is involved.

Every command here works from an installed wheel and inside the image. Loading the sandbox
patients and reviewing a knowledge-base edit work on the repository itself, so they are tooling of
a source checkout (`scripts/calcinosis-tools`, package `calcinosis_tools`, not in the wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from fhir_mapping.mapping import bundle_resources
from hooks import __version__
from hooks.logs import configure_command_logging, refusal_line, server_log_config
from hooks.models import HookRequest
from hooks.outbound import OutboundPolicy
from hooks.overload import GuardedHttpToolsProtocol
from hooks.prefetch import DataUnobtainableError
from hooks.registry import DeclaredService, build_registry
from hooks.service import CalcinosisService, InvalidContextError
from hooks.settings import Settings
from hooks.stores import StoreConfigError, StoreUnavailableError, feedback_report, open_feedback_store


class UsageError(Exception):
    """Bad input to a command; printed without a traceback."""


#: Commands that moved to the checkout's tooling, with what to run instead.
CHECKOUT_TOOLS = {
    "sandbox": "scripts/calcinosis-tools sandbox load --fhir-server URL [--patients DIR]",
    "knowledge-diff": "scripts/calcinosis-tools knowledge-diff OLD NEW",
}


def _load(path: str) -> Any:
    try:
        data = Path(path).read_bytes() if path != "-" else sys.stdin.buffer.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON") from error


def run_hook(service: CalcinosisService | DeclaredService, request: HookRequest) -> dict[str, Any]:
    """The response the service gives to `request`, fetching from its fhirServer if needed. The
    command's user names the server (`--fhir-server`, or the request file's `fhirServer`), so the
    outbound policy is exactly that server: every read, search and next link must stay under it."""
    policy = OutboundPolicy.deny_all() if request.fhir_server is None else OutboundPolicy.only(request.fhir_server)

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(follow_redirects=False) as http:
            handler = service.handler if isinstance(service, DeclaredService) else service.handle
            return (await handler(request, http, policy, None)).response.wire()

    try:
        return asyncio.run(run())
    except (InvalidContextError, DataUnobtainableError) as error:
        raise UsageError(str(error)) from error


def evaluate(path: str, settings: Settings) -> dict[str, Any]:
    """The CDS Hooks response for a Bundle (any type) or a CDS Hooks request."""
    document = _load(path)
    if not isinstance(document, dict):
        raise UsageError("expected a JSON object: a FHIR Bundle or a CDS Hooks request")
    service = CalcinosisService(settings)
    if document.get("resourceType") == "Bundle":
        resources = list(bundle_resources(document))
        patients = [
            r
            for r in resources
            if isinstance(r, dict) and r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)
        ]
        if len(patients) != 1:
            raise UsageError(f"the Bundle must hold exactly one Patient with an id (found {len(patients)})")
        return service.respond(resources, patients[0]["id"], uuid.uuid4()).wire()
    if "hook" in document:
        try:
            request = HookRequest.model_validate(document)
        except ValidationError as error:
            fields = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in error.errors()[:10])
            raise UsageError(f"not a valid CDS Hooks request: {fields}") from error

        declared = next((d for d in build_registry(settings, service) if d.hook == request.hook), None)
        if declared is None:
            raise UsageError(f"no service of this deployment answers the '{request.hook}' hook")
        return run_hook(declared, request)
    raise UsageError("expected a FHIR Bundle (resourceType Bundle) or a CDS Hooks request (with 'hook')")


def check(
    fhir_server: str, patient_id: str, token: str | None, settings: Settings, draft_orders: str | None = None
) -> dict[str, Any]:
    """The service's patient-view answer for a patient on a FHIR server, with no prefetch, as an
    EHR would get it: every resource is fetched through `fhirServer`. With `draft_orders` (a file
    holding a FHIR Bundle of unsigned orders) the order-sign answer for those orders instead."""
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server.rstrip("/"),
        "context": {"userId": "Practitioner/calcinosis-cds-check", "patientId": patient_id},
    }
    if draft_orders is not None:
        orders = _load(draft_orders)
        if not isinstance(orders, dict) or orders.get("resourceType") != "Bundle":
            raise UsageError(
                f"{draft_orders} must hold a FHIR Bundle of draft orders (MedicationRequest, ServiceRequest)"
            )
        body["hook"] = "order-sign"
        body["context"]["draftOrders"] = orders
    if token:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        }
    try:
        request = HookRequest.model_validate(body)
    except ValidationError as error:
        raise UsageError(
            "invalid --fhir-server or --patient: " + "; ".join(e["msg"] for e in error.errors())
        ) from error
    declared = next(d for d in build_registry(settings) if d.hook == request.hook)
    return run_hook(declared, request)


def describe_cards(response: dict[str, Any], order_sign: bool = False) -> str:
    """The cards as an integration engineer reads them on a terminal."""
    cards = response.get("cards", [])
    if not cards and order_sign:
        return "no cards (none of these draft orders needs one for this patient)"
    if not cards:
        return "no cards (calcinosis is not documented for this patient)"
    lines = []
    for card in cards:
        lines.append(f"[{card['indicator']}] {card['summary']}")
        for suggestion in card.get("suggestions", []):
            lines.append(f"    suggestion: {suggestion['label']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="calcinosis-cds", description="Calcinosis cutis CDS Hooks service")
    parser.add_argument("--version", action="version", version=f"calcinosis-cds {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", help="bind address (default from CALCINOSIS_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from CALCINOSIS_PORT, else 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    run = commands.add_parser("evaluate", help="print the cards for a FHIR Bundle or CDS Hooks request file")
    run.add_argument("path", help="JSON file, or - for standard input")
    commands.add_parser("feedback-report", help="acceptance rate per card topic and top override reasons (read-only)")
    checking = commands.add_parser(
        "check", help="run patient-view (or order-sign, with --draft-orders) with no prefetch against a FHIR server"
    )
    checking.add_argument(
        "--draft-orders", help="JSON file with a FHIR Bundle of unsigned orders: run the order-sign service on them"
    )
    checking.add_argument("--fhir-server", required=True, help="FHIR R4 base URL")
    checking.add_argument("--patient", required=True, help="Patient id on that server")
    checking.add_argument("--token", help="bearer token for the FHIR server")
    checking.add_argument("--json", action="store_true", help="print the CDS Hooks response JSON")
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in CHECKOUT_TOOLS:
        print(
            f"calcinosis-cds: '{arguments[0]}' is tooling of a source checkout, not of the installed service; "
            f"from a checkout run: {CHECKOUT_TOOLS[arguments[0]]}",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(arguments)
    try:
        # Only `serve` accepts calls from an EHR; the other commands run locally for their user.
        # `--workers` goes through the settings' checks too: several workers with authentication
        # on need a shared replay cache, or a token replayed to another worker is accepted.
        workers = {"workers": args.workers} if getattr(args, "workers", None) else {}
        settings = Settings(**workers) if args.command == "serve" else Settings(auth_disabled=True)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors())
        # The settings were refused, so the format is read as they would have read it (text when
        # it is unset or is itself what was refused).
        requested = os.environ.get("CALCINOSIS_LOG_FORMAT", "text").strip().lower()
        print(refusal_line(f"invalid configuration: {problems}", requested), file=sys.stderr)
        return 2
    configure_command_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        import uvicorn

        if settings.audit_log not in ("stderr", "stdout"):
            try:
                Path(settings.audit_log).open("a", encoding="utf-8").close()
            except OSError as error:
                problem = f"audit_log: cannot append to it ({error.strerror})"
                print(refusal_line(f"invalid configuration: {problem}", settings.log_format), file=sys.stderr)
                return 2

        uvicorn.run(
            "hooks.app:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port if args.port is not None else settings.port,
            workers=settings.workers,
            log_level=settings.log_level.lower(),
            log_config=server_log_config(settings.log_level, settings.log_format, settings.audit_log),
            # X-Forwarded-For is resolved by the app, from CALCINOSIS_TRUSTED_PROXIES only
            # (hooks.request_context); uvicorn's own handling would trust 127.0.0.1 by default.
            proxy_headers=False,
            http=GuardedHttpToolsProtocol,  # closes connections that never finish a header
            # Building the app (knowledge base, validators) holds a worker for seconds on a busy
            # machine; uvicorn's default of 5 s took that for a dead worker and restarted it.
            timeout_worker_healthcheck=60,
        )
        return 0
    if args.command == "check":
        try:
            response = check(args.fhir_server, args.patient, args.token, settings, args.draft_orders)
        except UsageError as error:
            print(f"calcinosis-cds: {error}", file=sys.stderr)
            return 1
        text = (
            orjson.dumps(response, option=orjson.OPT_INDENT_2).decode()
            if args.json
            else describe_cards(response, args.draft_orders is not None)
        )
        sys.stdout.write(text + "\n")
        return 0
    if args.command == "feedback-report":
        store = None
        try:
            store = open_feedback_store(settings.feedback_database_url, read_only=True)
            records = store.records()
        except StoreConfigError as error:
            print(f"calcinosis-cds: {error}", file=sys.stderr)
            return 2
        except StoreUnavailableError as error:
            print(f"calcinosis-cds: {error}", file=sys.stderr)
            return 1
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        report = feedback_report(records)
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    try:
        response = evaluate(args.path, settings)
    except UsageError as error:
        print(f"calcinosis-cds: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
