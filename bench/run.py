"""Benchmark of the calcinosis CDS Hooks service: latency against a floor, throughput, memory.

    .venv/bin/python bench/run.py            # full run, a few minutes
    .venv/bin/python bench/run.py --quick    # short run, about two minutes

Prints a markdown report and writes it to bench/RESULTS.md (see bench/README.md for what each
number means). All traffic stays on 127.0.0.1; every phase is bounded by a request count and a
time cap, and every process started here is stopped before exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench import sandbox as fhir_sandbox  # noqa: E402
from bench.app import FLOOR_PATH, ORDER_SIGN_PATH, SERVICE_PATH, build_app  # noqa: E402
from bench.rawhttp import Bodies, Connection, closed_loop, free_port, wait_until_up  # noqa: E402
from bench.workloads import HOOK_INSTANCE_PLACEHOLDER, Chart, charts, describe, long_dialysis  # noqa: E402
from hooks.wire import decode_hook_request  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


ORDER_SIGN = "heavy order-sign"
"""The heavy chart's prefetch with ten draft orders, posted to the order-sign service."""
COMPANIONS = {"heavy": ORDER_SIGN}
"""Workloads measured in the same loop as another: patient-view, the floor and order-sign on the
heavy chart take turns, so the three share one floor and one stretch of machine load (the machine
is shared: separate phases can differ by half again)."""


@dataclass(frozen=True)
class Plan:
    """Request counts and time caps (seconds) of one run."""

    name: str
    sequential: dict[str, int]
    sequential_cap: float
    warmup: int
    c8_requests: int
    c8_cap: float
    soak_requests: int
    soak_cap: float
    sandbox_runs: int
    dialysis_runs: int


FULL = Plan("full", {"typical": 200, "heavy": 40}, 60.0, 3, 3000, 8.0, 1000, 270.0, 10, 5)
QUICK = Plan("quick", {"typical": 40, "heavy": 8}, 15.0, 2, 500, 4.0, 150, 60.0, 3, 2)
TYPICAL_PAGE_SIZE = 100
"""`fhir_page_size` for the typical chart without prefetch (its Observations then come in pages)."""
LATENCY_MS = 50
"""How late the sandbox answers in the typical chart's second no-prefetch run (a FHIR server
across a network): the service's own CPU is then small beside the waiting."""


# ----- statistics -------------------------------------------------------------------------------


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else math.nan


def p99_ms(values: list[float]) -> float:
    """Nearest-rank 99th percentile (with fewer than 100 samples this is the maximum)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000


@dataclass
class Pair:
    """Sequential latencies of the service and the floor, measured interleaved."""

    service: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median_ms(self.service) / median_ms(self.floor)


# ----- in-process (ASGI) ------------------------------------------------------------------------


async def _inprocess(bodies: dict[str, Bodies], plan: Plan) -> dict[str, Pair]:
    app = build_app()
    results: dict[str, Pair] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:

            async def timed(path: str, body: bytes) -> tuple[float, httpx.Response]:
                started = time.perf_counter()
                response = await client.post(path, content=body, headers=HEADERS)
                took = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")
                return took, response

            for name, make in bodies.items():
                if name in COMPANIONS.values():
                    continue  # measured in the same loop as the workload it accompanies
                pair = Pair()
                _, response = await timed(SERVICE_PATH, make())
                pair.summaries = [card["summary"] for card in response.json()["cards"]]
                companion_name = COMPANIONS.get(name)
                companion = Pair(floor=pair.floor) if companion_name else None
                if companion_name and companion is not None:
                    _, response = await timed(ORDER_SIGN_PATH, bodies[companion_name]())
                    companion.summaries = [card["summary"] for card in response.json()["cards"]]
                for _ in range(plan.warmup):
                    await timed(SERVICE_PATH, make())
                    await timed(FLOOR_PATH, make())
                    if companion_name:
                        await timed(ORDER_SIGN_PATH, bodies[companion_name]())
                stop_at = time.monotonic() + plan.sequential_cap
                while len(pair.service) < plan.sequential[name] and time.monotonic() < stop_at:
                    body = make()
                    pair.service.append((await timed(SERVICE_PATH, body))[0])
                    body = make()
                    pair.floor.append((await timed(FLOOR_PATH, body))[0])
                    if companion_name and companion is not None:
                        body = bodies[companion_name]()
                        companion.service.append((await timed(ORDER_SIGN_PATH, body))[0])
                results[name] = pair
                if companion_name and companion is not None:
                    results[companion_name] = companion
    return results


def _decoding(bodies: dict[str, Bodies], rounds: int) -> dict[str, tuple[float, float]]:
    """Median seconds to decode each body with orjson in full (what the floor does) and with the
    service's restricted decode (`hooks.wire`), interleaved. The service decodes less than the
    floor does, so the report shows both: the ratios against the floor are not about decoding."""
    decoded: dict[str, tuple[float, float]] = {}
    for name, make in bodies.items():
        full: list[float] = []
        restricted: list[float] = []
        for _ in range(rounds):
            for decode, into in ((orjson.loads, full), (decode_hook_request, restricted)):
                body = make()
                started = time.perf_counter()
                decode(body)
                into.append(time.perf_counter() - started)
        decoded[name] = (statistics.median(full), statistics.median(restricted))
    return decoded


# ----- over HTTP (uvicorn) ----------------------------------------------------------------------


class Server:
    """uvicorn serving bench.app:build_app, one worker, in a subprocess on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(REPO), "CALCINOSIS_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.app:build_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        try:
            wait_until_up(self.port, time.monotonic() + 60, lambda: self.process.poll() is None)
        except Exception:
            self.close()
            raise

    def status(self, field_name: str) -> float:
        """A /proc/<pid>/status memory field (VmRSS, VmHWM) in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
        return math.nan

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class HttpResult:
    pair: Pair
    rps_service: float
    rps_floor: float
    rps_client: str
    peak_rss_mb: float
    rss_mb: dict[int, float] = field(default_factory=dict)
    soak_served: int = 0


def _sequential(port: int, make: Bodies, count: int, plan: Plan) -> Pair:
    pair = Pair()
    with Connection(port) as conn:
        for _ in range(plan.warmup):
            conn.post(SERVICE_PATH, make())
            conn.post(FLOOR_PATH, make())
        stop_at = time.monotonic() + plan.sequential_cap
        while len(pair.service) < count and time.monotonic() < stop_at:
            for path, into in ((SERVICE_PATH, pair.service), (FLOOR_PATH, pair.floor)):
                body = make()
                started = time.perf_counter()
                status, _ = conn.post(path, body)
                into.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status} over HTTP")
    return pair


def _wrk_rps(port: int, path: str, body: bytes, seconds: float) -> float | None:
    """Requests per second from wrk at 8 connections, or None when wrk is absent or fails."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        body_file = Path(folder) / "body.json"
        body_file.write_bytes(body)
        script = Path(folder) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        )
        try:
            out = subprocess.run(
                [wrk, "-t2", "-c8", f"-d{max(1, int(seconds))}s", "-s", str(script), f"http://127.0.0.1:{port}{path}"],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError):
            return None
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def _rps(port: int, path: str, make: Bodies, plan: Plan) -> tuple[float, str]:
    by_wrk = _wrk_rps(port, path, make(), plan.c8_cap)
    if by_wrk is not None:
        return by_wrk, "wrk -c8"
    return closed_loop(port, path, make, 8, plan.c8_requests, plan.c8_cap).rps, "python -c8"


def _http(name: str, make: Bodies, plan: Plan) -> HttpResult:
    with Server() as server:
        pair = _sequential(server.port, make, plan.sequential[name], plan)
        rps_floor, client = _rps(server.port, FLOOR_PATH, make, plan)
        result = HttpResult(pair, math.nan, rps_floor, client, math.nan)
        if name == "heavy":
            # The soak is the service's c8 run: RSS is read every 100 service requests served.
            before = plan.warmup + len(pair.service)

            def sample(completed: int) -> float | None:
                served = before + completed
                return server.status("VmRSS") if served % 100 == 0 or completed == plan.soak_requests else None

            soak = closed_loop(server.port, SERVICE_PATH, make, 8, plan.soak_requests, plan.soak_cap, sample)
            result.rps_service, result.rps_client = soak.rps, "python -c8"
            result.rss_mb = {before + n: mb for n, mb in soak.samples.items()}
            result.soak_served = before + soak.completed
            result.rss_mb.setdefault(result.soak_served, server.status("VmRSS"))
        else:
            result.rps_service, result.rps_client = _rps(server.port, SERVICE_PATH, make, plan)
        result.peak_rss_mb = server.status("VmHWM")
    return result


# ----- report -----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = ", ".join(
        f"{p} {metadata.version(p)}"
        for p in ("fastapi", "starlette", "uvicorn", "pydantic", "orjson", "msgspec", "httpx")
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "calcinosis", "fhir_mapping", "hooks"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        commit += " with uncommitted changes to the service" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "wrk": shutil.which("wrk") or "not installed (Python raw-socket client used)",
        "server": _uvicorn_stack(),
    }


def _uvicorn_stack() -> str:
    """The HTTP parser and event loop uvicorn picks by itself ("auto"): httptools and uvloop
    when installed (requirements/runtime.txt pins them), else h11 and asyncio."""
    return " and ".join(
        f"{module} {metadata.version(module)}" if importlib.util.find_spec(module) else fallback
        for module, fallback in (("httptools", "h11"), ("uvloop", "asyncio"))
    )


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def report(
    plan: Plan,
    info: dict[str, str],
    sizes: dict[str, str],
    inproc: dict[str, Pair],
    decoding: dict[str, tuple[float, float]],
    http: dict[str, HttpResult],
    sandbox: dict[str, Any] | str,
    latency: dict[str, Any] | str,
    dialysis: dict[str, Any] | str,
    elapsed: float,
    load_after: str,
) -> str:
    lines = [
        "# calcinosis-cds benchmark",
        "",
        f"Run `{plan.name}` of commit {info['commit']} on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{elapsed:.0f} s. "
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['python']}, {info['os']}; "
        f"load average {info['load']} before, {load_after} after (shared machine: compare ratios within one run). "
        f"{info['versions']}; uvicorn with {info['server']}, one worker; wrk: {info['wrk']}.",
        "",
        "Workloads (patient-view, EHR-style prefetch, calcinosis documented):",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in sizes.items()]
    lines += [
        "",
        "## Latency (ms), sequential requests, service interleaved with the floor",
        "",
        "| workload | path | n | service median | service p99 | floor median | floor p99 | service − floor | service / floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("typical", "heavy"):
        for label, pair in (("in-process (ASGI)", inproc[name]), ("HTTP (uvicorn)", http[name].pair)):
            lines.append(
                f"| {name} | {label} | {len(pair.service)} | {_fmt(median_ms(pair.service))} | "
                f"{_fmt(p99_ms(pair.service))} | {_fmt(median_ms(pair.floor))} | {_fmt(p99_ms(pair.floor))} | "
                f"{_fmt(median_ms(pair.service) - median_ms(pair.floor))} | {_fmt(pair.ratio, 2)}x |"
            )
    heavy = http["heavy"]
    order_sign, heavy_in = inproc[ORDER_SIGN], inproc["heavy"]
    lines.append(
        f"| {ORDER_SIGN} | in-process (ASGI) | {len(order_sign.service)} | {_fmt(median_ms(order_sign.service))} | "
        f"{_fmt(p99_ms(order_sign.service))} | {_fmt(median_ms(order_sign.floor))} | {_fmt(p99_ms(order_sign.floor))} | "
        f"{_fmt(median_ms(order_sign.service) - median_ms(order_sign.floor))} | {_fmt(order_sign.ratio, 2)}x |"
    )
    lines += [
        "",
        f"Order-sign ({len(order_sign.summaries)} cards for the ten draft orders), measured in turn with patient-view "
        f"and the floor on the heavy chart: {_fmt(order_sign.ratio, 2)}x the floor, where patient-view is "
        f"{_fmt(heavy_in.ratio, 2)}x; order-sign median / patient-view median "
        f"{_fmt(median_ms(order_sign.service) / median_ms(heavy_in.service), 2)}.",
        "",
        "p99 is nearest-rank: with fewer than 100 requests it is the slowest one.",
        "",
        "The floor decodes the whole body with orjson, as the issue defines it. The service decodes only the "
        "elements it reads (msgspec, `hooks.wire`), which is cheaper than the floor's decode:",
        "",
        "| workload | decode in full (orjson, the floor) | restricted decode (the service) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {_fmt(full * 1000, 2)} ms | {_fmt(restricted * 1000, 2)} ms |"
        for name, (full, restricted) in decoding.items()
    ]
    lines += [
        "",
        "## Throughput and memory over HTTP (one uvicorn worker)",
        "",
        "| workload | service req/s at c8 | floor req/s at c8 | peak RSS (VmHWM) |",
        "|---|---|---|---|",
    ]
    for name in ("typical", "heavy"):
        r = http[name]
        lines.append(f"| {name} | {_fmt(r.rps_service)} | {_fmt(r.rps_floor)} | {_fmt(r.peak_rss_mb, 0)} MB |")
    trend = ", ".join(f"{n}: {_fmt(mb, 0)}" for n, mb in sorted(heavy.rss_mb.items()))
    rss_100 = min(heavy.rss_mb.items(), key=lambda item: abs(item[0] - 100))
    rss_last = max(heavy.rss_mb.items())
    lines += [
        "",
        f"Heavy soak (concurrency 8): {heavy.soak_served} heavy requests served; RSS after {rss_100[0]}: "
        f"{_fmt(rss_100[1], 0)} MB, after {rss_last[0]}: {_fmt(rss_last[1], 0)} MB "
        f"(growth {_fmt(rss_last[1] - rss_100[1], 0)} MB). RSS (MB) by requests served: {trend}.",
    ]
    if heavy.soak_served < plan.soak_requests:
        lines.append(f"The soak stopped at its {plan.soak_cap:.0f} s cap before {plan.soak_requests} requests.")
    lines += ["", "## No prefetch: the typical chart fetched from the local FHIR sandbox", ""]
    sandbox_ratio: float | None = None
    if isinstance(sandbox, str):
        lines.append(f"Skipped: {sandbox}")
    else:
        sandbox_ratio = sandbox["ratio"]
        lines += [
            f"`fhir_page_size={sandbox['page_size']}`, {sandbox['runs']} calls after a warm-up; "
            f"{sandbox['fhir_requests']} FHIR requests per call; cards "
            f"{'identical to' if sandbox['same_cards'] else '**different from**'} the prefetch call.",
            "",
            *_no_prefetch_table(sandbox),
            "",
            f"Total minus the typical in-process service median ({_fmt(median_ms(inproc['typical'].service))} ms, "
            f"the assessment with prefetch) leaves {_fmt(sandbox['total_ms'] - median_ms(inproc['typical'].service))} ms "
            f"for fetching, against {_fmt(sandbox['slowest_ms'])} ms for the slowest query alone.",
        ]
    lines += ["", f"## No prefetch: the typical chart, each FHIR answer {LATENCY_MS} ms late", ""]
    latency_ratio: float | None = None
    if isinstance(latency, str):
        lines.append(f"Skipped: {latency}")
    else:
        latency_ratio = latency["ratio"]
        lines += [
            f"The same, with the sandbox waiting {LATENCY_MS} ms before each answer (its `/fault/slow:{LATENCY_MS}` "
            f"base), as a FHIR server across a network would: {latency['runs']} calls after a warm-up, cards "
            f"{'identical to' if latency['same_cards'] else '**different from**'} the prefetch call.",
            "",
            *_no_prefetch_table(latency),
        ]
    lines += ["", "## No prefetch: the 20-year dialysis chart, service defaults", ""]
    dialysis_ok: bool | None = None
    if isinstance(dialysis, str):
        lines.append(f"Skipped: {dialysis}")
    else:
        dialysis_ok = dialysis["first_call_status"] == 200 and dialysis["same_cards"]
        lines += [
            f"`workloads.long_dialysis`: {dialysis['observations']:,} relevant Observations over 20 years, loaded "
            f"into a fresh sandbox ({_fmt(dialysis['load_seconds'])} s). The service runs with its default "
            f"settings (deadline {_fmt(dialysis['deadline_s'])} s, `fhir_page_size={dialysis['page_size']}`, "
            f"page cap {dialysis['page_cap']}). The first call after loading (the sandbox has not searched the "
            f"chart yet) answered **{dialysis['first_call_status']}** in {_fmt(dialysis['first_call_ms'], 0)} ms; "
            f"then {dialysis['runs']} calls: {dialysis['fhir_requests']} FHIR requests per call, cards "
            f"{'identical to' if dialysis['same_cards'] else '**different from**'} the prefetch call "
            f"(12,000 Observations sent in the request).",
            "",
            *_no_prefetch_table(dialysis),
        ]
        typical_in, heavy_in = inproc["typical"], inproc["heavy"]
    soak_done = heavy.soak_served >= 1000
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| heavy in-process: service at most 2x the floor | {_fmt(heavy_in.ratio, 2)}x | {_verdict(heavy_in.ratio <= 2)} |",
        f"| heavy in-process: median under 50 ms | {_fmt(median_ms(heavy_in.service))} ms | "
        f"{_verdict(median_ms(heavy_in.service) < 50)} |",
        f"| heavy order-sign (ten drafts) at most as slow as patient-view, against the same floor | "
        f"{_fmt(inproc[ORDER_SIGN].ratio, 2)}x vs {_fmt(heavy_in.ratio, 2)}x | "
        f"{_verdict(inproc[ORDER_SIGN].ratio <= heavy_in.ratio)} |",
        f"| typical in-process: median under 10 ms | {_fmt(median_ms(typical_in.service))} ms | "
        f"{_verdict(median_ms(typical_in.service) < 10)} |",
        f"| RSS under 200 MB after 1,000 heavy requests | {_fmt(rss_last[1], 0)} MB after {rss_last[0]} | "
        f"{_verdict(rss_last[1] < 200 if soak_done else None)}{'' if soak_done else ' (1,000 not reached)'} |",
        f"| no prefetch: total within 1.5x of the slowest query | "
        f"{_fmt(sandbox_ratio, 2) + 'x' if sandbox_ratio is not None else 'skipped'} | "
        f"{_verdict(sandbox_ratio <= 1.5 if sandbox_ratio is not None else None)} |",
        f"| no prefetch, each FHIR answer {LATENCY_MS} ms late: total within 1.5x of the slowest query | "
        f"{_fmt(latency_ratio, 2) + 'x' if latency_ratio is not None else 'skipped'} | "
        f"{_verdict(latency_ratio <= 1.5 if latency_ratio is not None else None)} |",
        f"| no prefetch: the 20-year chart's first call answered within the default deadline, same cards | "
        f"{_dialysis_measured(dialysis)} | {_verdict(dialysis_ok)} |",
        "",
    ]
    return "\n".join(lines)


def _dialysis_measured(dialysis: dict[str, Any] | str) -> str:
    if isinstance(dialysis, str):
        return "skipped"
    return f"{dialysis['first_call_status']} in {_fmt(dialysis['first_call_ms'], 0)} ms"


def _no_prefetch_table(measured: dict[str, Any]) -> list[str]:
    """Latency against the queries alone, and CPU per call against the prefetch call."""
    singles = ", ".join(
        f"{k} {_fmt(v)} ({measured['pages'][k]} page{'s' if measured['pages'][k] != 1 else ''})"
        for k, v in measured["singles_ms"].items()
    )
    return [
        "| total median | total p99 | slowest query alone | total / slowest | sum of queries alone | total / sum |",
        "|---|---|---|---|---|---|",
        f"| {_fmt(measured['total_ms'])} ms | {_fmt(measured['total_p99_ms'])} ms | {measured['slowest']} "
        f"{_fmt(measured['slowest_ms'])} ms | {_fmt(measured['ratio'], 2)}x | {_fmt(measured['sum_singles_ms'])} ms | "
        f"{_fmt(measured['ratio_to_sum'], 2)}x |",
        "",
        f"Each query alone (median ms): {singles}.",
        "",
        f"CPU time of the service process per call (`time.process_time`, median; calls without and with prefetch "
        f"alternating): **{_fmt(measured['cpu_fetch_ms'])} ms without prefetch, "
        f"{_fmt(measured['cpu_prefetch_ms'])} ms with the same chart as prefetch**.",
    ]


# ----- no prefetch (the local FHIR sandbox) -------------------------------------------------------


def _no_prefetch(chart: Chart, runs: int, latency_ms: int = 0, **settings: Any) -> dict[str, Any] | str:
    """`bench.sandbox` on one chart (the service's default settings unless given), or why not."""
    try:
        measured = fhir_sandbox.run(chart, runs, 240.0, latency_ms, **settings)
    except fhir_sandbox.SandboxUnavailableError as error:
        print(f"the FHIR sandbox was not usable: {error}", file=sys.stderr)
        return f"the FHIR sandbox was not usable: {error}"
    return {
        **fhir_sandbox.summary(measured),
        "total_p99_ms": p99_ms(measured.total),
        "pages": measured.pages,
        "runs": len(measured.total),
        "fhir_requests": measured.fhir_requests,
        "same_cards": measured.same_cards_as_prefetch,
        "observations": len(chart.of_type("Observation")),
        "load_seconds": measured.load_seconds,
    }


# ----- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (fewer requests, shorter caps)")
    parser.add_argument("--output", default=str(REPO / "bench" / "RESULTS.md"), help="markdown file to write")
    parser.add_argument("--no-sandbox", action="store_true", help="skip the FHIR sandbox part")
    parser.add_argument("--soak-requests", type=int, help="heavy requests in the memory soak (default 1000, quick 150)")
    parser.add_argument("--soak-cap", type=float, help="time cap of the memory soak in seconds (default 200, quick 60)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.soak_requests is not None or args.soak_cap is not None:
        plan = replace(
            plan,
            soak_requests=args.soak_requests if args.soak_requests is not None else plan.soak_requests,
            soak_cap=args.soak_cap if args.soak_cap is not None else plan.soak_cap,
        )
    started = time.monotonic()
    info = machine()

    def phase(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    phase("generating workloads")
    workloads: dict[str, Chart] = charts()
    sizes = {name: describe(chart) for name, chart in workloads.items()}
    bodies = {name: Bodies(chart.request_bytes(), HOOK_INSTANCE_PLACEHOLDER) for name, chart in workloads.items()}
    bodies[ORDER_SIGN] = Bodies(workloads["heavy"].order_sign_bytes(), HOOK_INSTANCE_PLACEHOLDER)
    sizes[ORDER_SIGN] = (
        f"the heavy chart's prefetch and ten draft orders; request {len(bodies[ORDER_SIGN]()) / 1e6:.2f} MB"
    )
    # Keep only the request bytes: thousands of live chart dicts in this process would make every
    # full garbage collection of the in-process app slower than in a real server.
    del workloads
    gc.collect()

    phase("in-process (ASGI)")
    inproc = asyncio.run(_inprocess(bodies, plan))
    for name, pair in inproc.items():
        if not pair.summaries:
            raise RuntimeError(f"{name}: the service answered no cards; the workload does not exercise the reasoning")
    phase("decoding alone")
    decoding = _decoding(bodies, plan.warmup * 10)
    http: dict[str, HttpResult] = {}
    for name in ("typical", "heavy"):
        phase(f"HTTP (uvicorn): {name}")
        http[name] = _http(name, bodies[name], plan)

    sandbox: dict[str, Any] | str
    latency: dict[str, Any] | str
    dialysis: dict[str, Any] | str
    if args.no_sandbox:
        sandbox = latency = dialysis = "disabled with --no-sandbox"
    else:
        phase("FHIR sandbox (no prefetch): typical")
        sandbox = _no_prefetch(charts()["typical"], plan.sandbox_runs, fhir_page_size=TYPICAL_PAGE_SIZE)
        phase(f"FHIR sandbox (no prefetch): typical, answers {LATENCY_MS} ms late")
        latency = _no_prefetch(
            charts()["typical"], plan.sandbox_runs, latency_ms=LATENCY_MS, fhir_page_size=TYPICAL_PAGE_SIZE
        )
        phase("FHIR sandbox (no prefetch): 20-year dialysis chart")
        dialysis = _no_prefetch(long_dialysis(), plan.dialysis_runs)

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = report(
        plan, info, sizes, inproc, decoding, http, sandbox, latency, dialysis, time.monotonic() - started, load_after
    )
    print(text)
    Path(args.output).write_text(text, encoding="utf-8")
    phase(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
