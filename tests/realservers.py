"""Real servers for tests, on free loopback ports: a small FHIR server (which can turn hostile) in a
thread, and the service itself run by its own command line in a child process.

The FHIR server answers reads (`Type/id`) and searches (`Type?...`) from a chart, and records every
request it receives (path with query, the Authorization and W3C `traceparent` headers), so a test
can assert where the service's bearer token went and which trace a fetch belongs to. `pages` lets
a test add next links that point wherever it likes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Seen:
    """One request the FHIR server received."""

    path: str
    authorization: str | None
    traceparent: str | None = None


Answer = Callable[[str], tuple[int, Any] | None]
"""Given the request path (with query), an answer (status, JSON body) or None for the default."""


@dataclass
class FhirServer:
    """A FHIR server in a thread; `url` is its origin (no path)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    answer: Answer | None = None
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def default(self, path: str) -> tuple[int, Any]:
        """Reads by `Type/id` and searches by type, whatever folder they are under."""
        route = urlsplit(path)
        parts = [p for p in route.path.split("/") if p]
        if "?" in path:
            kind = parts[-1] if parts else ""
            found = [r for r in self.resources if r.get("resourceType") == kind]
            return 200, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}
        if len(parts) >= 2:
            kind, ident = parts[-2], parts[-1]
            for r in self.resources:
                if r.get("resourceType") == kind and r.get("id") == ident:
                    return 200, r
        return 404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}

    def respond(self, path: str) -> tuple[int, Any]:
        self.seen.append(Seen(path, None))
        special = self.answer(path) if self.answer else None
        return special if special is not None else self.default(path)


@contextmanager
def fhir_server(server: FhirServer) -> Iterator[FhirServer]:
    """Serve `server` on a free loopback port for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = server.respond(self.path)
            server.seen[-1].authorization = self.headers.get("Authorization")
            server.seen[-1].traceparent = self.headers.get("traceparent")
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `server.seen`."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class ServiceProcess:
    """The service run by `calcinosis-cds serve`; `log()` is everything it wrote so far."""

    url: str
    process: subprocess.Popen[bytes]
    output: IO[bytes]

    def log(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


@contextmanager
def service_process(env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[ServiceProcess]:
    """Start the service on a free port with `env` added to the environment; stop it after."""
    port = free_port()
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "hooks.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=REPO,
        # No metrics port unless the test asks for one (it would be shared by parallel runs).
        env={**os.environ, "CALCINOSIS_FEEDBACK_DATABASE_URL": "memory://", "CALCINOSIS_METRICS_PORT": "0", **env},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    running = ServiceProcess(f"http://127.0.0.1:{port}", process, output)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError("the service did not start:\n" + running.log()[-3000:])
            try:
                if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the service did not answer /healthz within 90 s:\n" + running.log()[-3000:])
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()
