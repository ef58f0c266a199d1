"""The no-prefetch path: the service fetching a chart from the local FHIR sandbox.

The sandbox (deploy/fhir-sandbox) is started on 127.0.0.1 with `--port 0`, the chart is loaded as
a transaction Bundle of PUT entries (ids kept), and the service is called in-process with no
prefetch and `fhirServer` pointing at the sandbox (`fhir_page_size` as given, else the service's
default). Its total latency is compared with each query the service sends timed alone through the
service's own FHIR client (same `_count`, same paging; for the Observations, each date-cut search
of `hooks.prefetch.LabWindow`), because the service runs the queries concurrently: ideally the
total is the slowest query plus the assessment, far below their sum.

The first call after loading is timed apart (the sandbox has not searched the chart yet and the
service's HTTP client has no connection): it is the warm-up, and its answer must already be a 200
within the service's deadline. Then calls without and with prefetch alternate, and the process
CPU time of each is recorded (`time.process_time`: this process only, all its threads, so the
sandbox's work is not counted): what fetching costs the service itself, against reading prefetch.

    python -m bench.sandbox --chart dialysis20 --runs 5   # the 20-year dialysis chart alone
    python -m bench.sandbox --chart typical --latency 50  # each FHIR answer 50 ms late
"""

from __future__ import annotations

import asyncio
import os
import selectors
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.app import SERVICE_PATH, build_app
from bench.rawhttp import Bodies
from bench.workloads import HOOK_INSTANCE_PLACEHOLDER, Chart
from hooks.fhir_client import FhirClient
from hooks.outbound import OutboundPolicy

REPO = Path(__file__).resolve().parents[1]
SANDBOX_START = REPO / "deploy" / "fhir-sandbox" / "start"


class SandboxUnavailableError(Exception):
    """The sandbox did not start; the message says why (its own output, shortened)."""


@dataclass
class SandboxResult:
    """Latencies in seconds."""

    base: str
    total: list[float] = field(default_factory=list)
    singles: dict[str, list[float]] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    fhir_requests: int = 0
    cards: int = 0
    same_cards_as_prefetch: bool = False
    load_seconds: float = 0.0
    first_call: float = 0.0
    """Seconds of the first call after loading (the warm-up)."""
    first_status: int = 0
    cpu_fetch: list[float] = field(default_factory=list)
    """Process CPU seconds of each call without prefetch (after the warm-up)."""
    cpu_prefetch: list[float] = field(default_factory=list)
    """Process CPU seconds of each call with the same chart as prefetch, alternating with those."""
    page_size: int = 0
    page_cap: int = 0
    deadline: float = 0.0
    """The service's settings in force: `fhir_page_size`, `fhir_page_cap`, `fetch_deadline_seconds`."""


class Sandbox:
    """A running sandbox process (`args`: more of `start`'s flags); use as a context manager."""

    def __init__(self, start_timeout: float, args: tuple[str, ...] = ()) -> None:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.process = subprocess.Popen(
                [str(SANDBOX_START), "--host", "127.0.0.1", "--port", "0", "--quiet", *args],
                stdout=subprocess.PIPE,
                stderr=self.errors,
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            self.errors.close()
            raise SandboxUnavailableError(f"cannot run {SANDBOX_START}: {error}") from error
        self.base = self._wait(start_timeout)

    def _wait(self, timeout: float) -> str:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pending = b""
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.2):
                    if self.process.poll() is not None:
                        break
                    continue
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break
                pending += chunk
                for line in pending.decode(errors="replace").splitlines():
                    if line.startswith("FHIR sandbox listening on "):
                        return line.removeprefix("FHIR sandbox listening on ").strip()
        finally:
            selector.close()
        self.close()
        raise SandboxUnavailableError(f"the FHIR sandbox did not start within {timeout:.0f} s: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            self.errors.seek(0)
            text = self.errors.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return "(no output)"
        return " | ".join(text.splitlines()[-5:])[-600:] or "(no output)"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.errors.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_chart(base: str, chart: Chart) -> float:
    """POST the chart as a transaction Bundle; seconds taken."""
    started = time.perf_counter()
    response = httpx.post(
        base,
        content=orjson.dumps(chart.transaction()),
        headers={"Content-Type": "application/fhir+json"},
        timeout=120,
    )
    if response.status_code >= 300:
        raise SandboxUnavailableError(f"loading the chart answered {response.status_code}: {response.text[:300]}")
    return time.perf_counter() - started


async def _call(client: httpx.AsyncClient, body: bytes) -> tuple[float, float, httpx.Response]:
    """One hook call: wall seconds, process CPU seconds, the answer."""
    started, cpu = time.perf_counter(), time.process_time()
    response = await client.post(SERVICE_PATH, content=body, headers={"Content-Type": "application/json"})
    return time.perf_counter() - started, time.process_time() - cpu, response


def _summaries(response: httpx.Response) -> list[str]:
    if response.status_code != 200:
        raise SandboxUnavailableError(f"service answered {response.status_code}: {response.text[:300]}")
    return [str(card["summary"]) for card in response.json()["cards"]]


async def _measure(base: str, chart: Chart, runs: int, **settings: Any) -> SandboxResult:
    result = SandboxResult(base=base)
    app = build_app(**settings)
    service = app.state.service
    page_size: int = service.settings.fhir_page_size
    result.page_size, result.page_cap = page_size, service.settings.fhir_page_cap
    result.deadline = service.settings.fetch_deadline_seconds
    fetching = Bodies(chart.request_bytes(prefetch=False, fhir_server=base), HOOK_INSTANCE_PLACEHOLDER)
    prefetched = Bodies(chart.request_bytes(), HOOK_INSTANCE_PLACEHOLDER)
    async with app.router.lifespan_context(app):
        http: httpx.AsyncClient = app.state.http
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            # The warm-up: the first call after loading, timed apart.
            result.first_call, _, first = await _call(client, fetching())
            result.first_status = first.status_code
            same = True
            for _ in range(runs):
                took, cpu, response = await _call(client, fetching())
                fetched_cards = _summaries(response)
                result.total.append(took)
                result.cpu_fetch.append(cpu)
                _, cpu, response = await _call(client, prefetched())
                result.cpu_prefetch.append(cpu)
                same = same and fetched_cards == _summaries(response)
                result.cards = len(fetched_cards)
            result.same_cards_as_prefetch = same and runs > 0
        # Each query the service sends, alone, through the service's own client and page size.
        scope = OutboundPolicy.only(base).scope(base)
        assert scope is not None
        missing: list[str] = []
        for label, query, kind in service_queries(service, chart.patient_id):
            timings: list[float] = []
            for _ in range(runs + 1):
                fhir = FhirClient(http, scope, None, time.monotonic() + 120, 60.0, 50_000_000, 50)
                started = time.perf_counter()
                if kind == "read":
                    found = await fhir.read(query)
                    pages, count = 1, int(found is not None)
                elif kind == "per-analyte":
                    # The second step: one search per analyte the older page did not show; their
                    # time together counts as one query (they run concurrently).
                    newest = service.window.newest_older(chart.patient_id, missing, datetime.now(UTC))
                    found_all = await asyncio.gather(*(fhir.search(q, first_page_only=True) for q in newest))
                    pages, count = len(newest), sum(len(r.resources) for r in found_all)
                else:
                    search = await fhir.search(query, page_size, first_page_only=kind == "newest")
                    pages, count = search.pages, len(search.resources)
                    if kind == "newest":
                        missing = service.window.not_shown(search.resources)
                timings.append(time.perf_counter() - started)
            result.singles[label] = timings[1:]  # the first is a warm-up
            result.pages[label] = pages
            result.resources[label] = count
    result.fhir_requests = sum(result.pages.values())
    return result


def service_queries(service: Any, patient_id: str) -> list[tuple[str, str, str]]:
    """(label, query, kind) of every FHIR query the service sends for a chart without prefetch;
    kind is `read`, `search` (all pages) or `newest` (first page only)."""
    queries: list[tuple[str, str, str]] = []
    for spec in service.keys:
        query = spec.query.replace("{{context.patientId}}", patient_id)
        if spec.is_read:
            queries.append((spec.key, query, "read"))
        elif spec.resource_type == "Observation" and service.window is not None:
            codes = query.split("&code=", 1)[1].split("&", 1)[0]
            window, older = service.window.queries(patient_id, codes, datetime.now(UTC))
            queries += [(f"{spec.key}[window {i + 1}]", q, "search") for i, q in enumerate(window)]
            queries.append((f"{spec.key}[older]", older, "newest"))
            # The per-analyte searches the service adds depend on that page: see `_measure`.
            queries.append((f"{spec.key}[older per analyte]", "", "per-analyte"))
        else:
            queries.append((spec.key, query, "search"))
    return queries


def run(chart: Chart, runs: int, start_timeout: float, latency_ms: int = 0, **settings: Any) -> SandboxResult:
    """Start the sandbox, load the chart, measure; the sandbox is always stopped. `settings`
    override the service's (its defaults otherwise, deadline included). `latency_ms` makes the
    sandbox wait that long before each answer (its `/fault/slow:<ms>` base, which its next links
    keep), as a FHIR server across a network or busy with other clients would: the service and
    the queries timed alone then wait as they would there."""
    with Sandbox(start_timeout) as sandbox:
        seconds = load_chart(sandbox.base, chart)
        served = f"{sandbox.base.rstrip('/')}/fault/slow:{latency_ms}" if latency_ms else sandbox.base
        result = asyncio.run(_measure(served, chart, runs, **settings))
        result.load_seconds = seconds
        return result


def summary(result: SandboxResult) -> dict[str, Any]:
    """Medians in ms, the slowest single query, the ratios of the total to it and to the sum of
    the queries, the first call, and the CPU per call without and with prefetch."""
    singles = {k: statistics.median(v) * 1000 for k, v in result.singles.items()}
    slowest = max(singles, key=lambda k: singles[k])
    total = statistics.median(result.total) * 1000
    return {
        "total_ms": total,
        "singles_ms": singles,
        "slowest": slowest,
        "slowest_ms": singles[slowest],
        "sum_singles_ms": sum(singles.values()),
        "ratio": total / singles[slowest],
        "ratio_to_sum": total / sum(singles.values()),
        "first_call_ms": result.first_call * 1000,
        "first_call_status": result.first_status,
        "cpu_fetch_ms": statistics.median(result.cpu_fetch) * 1000,
        "cpu_prefetch_ms": statistics.median(result.cpu_prefetch) * 1000,
        "page_size": result.page_size,
        "page_cap": result.page_cap,
        "deadline_s": result.deadline,
    }


def main() -> None:
    """Measure one chart without prefetch and print the summary (JSON)."""
    import argparse

    from bench.workloads import charts, long_dialysis

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chart", choices=("typical", "heavy", "dialysis20"), default="dialysis20")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--deadline", type=float, help="fetch deadline and request timeout for the service, seconds (default: its own)"
    )
    parser.add_argument("--page-size", type=int, help="the service's fhir_page_size (default: its own)")
    parser.add_argument("--latency", type=int, default=0, help="ms the sandbox waits before each answer")
    args = parser.parse_args()
    chart = long_dialysis() if args.chart == "dialysis20" else charts()[args.chart]
    settings: dict[str, Any] = {}
    if args.deadline is not None:
        settings.update(fetch_deadline_seconds=args.deadline, fhir_request_timeout_seconds=args.deadline)
    if args.page_size is not None:
        settings.update(fhir_page_size=args.page_size)
    result = run(chart, args.runs, 240.0, args.latency, **settings)
    report = summary(result)
    report.update(
        chart=args.chart,
        observations=len(chart.of_type("Observation")),
        fhir_requests=result.fhir_requests,
        same_cards_as_prefetch=result.same_cards_as_prefetch,
        load_seconds=round(result.load_seconds, 1),
        pages=result.pages,
    )
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
