"""`calcinosis-cds`: run the service, or evaluate one patient without an EHR.

    calcinosis-cds serve [--host H] [--port P] [--workers N]
    calcinosis-cds evaluate PATH      # a FHIR Bundle or a CDS Hooks request JSON

`evaluate` prints exactly the CDS Hooks response the service would return, so integration
engineers and hospital IT can check a patient file before any EHR is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from fhir_mapping.mapping import bundle_resources
from hooks.models import HookRequest
from hooks.prefetch import DataUnobtainableError
from hooks.service import CalcinosisService, InvalidContextError
from hooks.settings import Settings
from hooks.stores import StoreConfigError, feedback_report, open_feedback_store


class UsageError(Exception):
    """Bad input to a command; printed without a traceback."""


def _load(path: str) -> Any:
    try:
        data = Path(path).read_bytes() if path != "-" else sys.stdin.buffer.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON") from error


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

        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient(follow_redirects=False) as http:
                return (await service.handle(request, http)).response.wire()

        try:
            return asyncio.run(run())
        except (InvalidContextError, DataUnobtainableError) as error:
            raise UsageError(str(error)) from error
    raise UsageError("expected a FHIR Bundle (resourceType Bundle) or a CDS Hooks request (with 'hook')")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="calcinosis-cds", description="Calcinosis cutis CDS Hooks service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", help="bind address (default from CALCINOSIS_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from CALCINOSIS_PORT, else 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    run = commands.add_parser("evaluate", help="print the cards for a FHIR Bundle or CDS Hooks request file")
    run.add_argument("path", help="JSON file, or - for standard input")
    commands.add_parser("feedback-report", help="acceptance rate per card topic and top override reasons (read-only)")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"calcinosis-cds: invalid configuration: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        import uvicorn

        uvicorn.run(
            "hooks.app:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port if args.port is not None else settings.port,
            workers=args.workers or settings.workers,
            log_level=settings.log_level.lower(),
        )
        return 0
    if args.command == "feedback-report":
        try:
            store = open_feedback_store(settings.feedback_database_url)
        except StoreConfigError as error:
            print(f"calcinosis-cds: {error}", file=sys.stderr)
            return 2
        report = feedback_report(store.records())
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
