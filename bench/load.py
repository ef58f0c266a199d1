"""Load test: past its limit the service sheds with 503 + Retry-After, never 500, and no queue grows
beyond the configured limit.

Starts the service with its own command line (`calcinosis-cds serve`, one worker, authentication
off, feedback in memory) on a free loopback port, with `CALCINOSIS_MAX_CONCURRENT_REQUESTS` set
low, and drives it in closed loops (each connection sends its next request as soon as the last
one answered) at concurrencies from below the limit to many times it, with the typical chart of
`bench/workloads.py`. Each level stops at a request count or a time cap, whichever comes first.
After each level it reads the worker's own gauges from /metrics (on the metrics port): the most requests it ever held at
once (`calcinosis_requests_in_flight_peak`) and how many it shed.

    .venv/bin/python bench/load.py                      # writes bench/LOAD.md
    .venv/bin/python bench/load.py --limit 8 --levels 4,32,256 --requests 2000 --cap 60

Exit status 0 when every level had no answer but 200 and 503, every 503 carried Retry-After, no
connection error, and the peak never passed the limit; 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `bench` and `hooks` importable
    sys.path.insert(0, str(REPO))

from bench.rawhttp import LOOPBACK, Bodies, Connection, HttpError, free_port, wait_until_up  # noqa: E402
from bench.workloads import HOOK_INSTANCE_PLACEHOLDER, typical  # noqa: E402

SERVICE_PATH = "/cds-services/calcinosis"


@dataclass
class Level:
    """What one concurrency level produced."""

    concurrency: int
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    without_retry_after: int = 0
    connection_errors: int = 0
    elapsed: float = 0.0
    peak: float = 0.0
    shed_total: float = 0.0

    def ms(self, status: int, quantile: float) -> str:
        values = sorted(self.latencies.get(status, []))
        if not values:
            return "-"
        return f"{values[min(len(values) - 1, int(quantile * len(values)))] * 1000:.0f}"


class RetryAwareConnection(Connection):
    """The bench client, also noting whether a 503 carried Retry-After."""

    last_head = b""

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        self.last_head = self.buffer.split(b"\r\n\r\n", 1)[0].lower()
        return super()._response()


def drive(port: int, make: Bodies, concurrency: int, total: int, cap: float) -> Level:
    level = Level(concurrency)
    lock = threading.Lock()
    issued = 0
    stop_at = time.monotonic() + cap

    def worker() -> None:
        nonlocal issued
        connection: RetryAwareConnection | None = None
        while True:
            with lock:
                if issued >= total or time.monotonic() > stop_at:
                    break
                issued += 1
            body = make()
            try:
                if connection is None:
                    connection = RetryAwareConnection(port, timeout=60)
                started = time.perf_counter()
                status, _ = connection.post(SERVICE_PATH, body)
                took = time.perf_counter() - started
            except (OSError, HttpError):
                with lock:
                    level.connection_errors += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            with lock:
                level.statuses[status] += 1
                level.latencies.setdefault(status, []).append(took)
                if status == 503 and b"retry-after:" not in connection.last_head:
                    level.without_retry_after += 1
        if connection is not None:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=cap + 120)
    level.elapsed = time.monotonic() - started
    return level


def gauge(port: int, name: str) -> float:
    with Connection(port, timeout=10) as connection:
        status, body = connection.request("GET", "/metrics")
    match = re.search(rf"^{name} ([0-9.e+]+)$", body.decode(), re.M) if status == 200 else None
    return float(match.group(1)) if match else float("nan")


def report(levels: list[Level], limit: int, ok: bool, path: Path) -> str:
    lines = [
        "# Load test: shedding past the limit (bench/load.py)",
        "",
        f"One uvicorn worker, `CALCINOSIS_MAX_CONCURRENT_REQUESTS={limit}`, typical chart (prefetch), "
        f"closed loops on 127.0.0.1; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs (shared).",
        "",
        "| concurrency | answers | 200 | 503 | other | 503 without Retry-After | connection errors "
        "| 200 p50 / p99 ms | 503 p50 / p99 ms | peak in flight | shed (cumulative) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        other = sum(n for s, n in level.statuses.items() if s not in (200, 503))
        lines.append(
            f"| {level.concurrency} | {sum(level.statuses.values())} | {level.statuses[200]} | "
            f"{level.statuses[503]} | {other} | {level.without_retry_after} | {level.connection_errors} | "
            f"{level.ms(200, 0.5)} / {level.ms(200, 0.99)} | {level.ms(503, 0.5)} / {level.ms(503, 0.99)} | "
            f"{level.peak:.0f} | {level.shed_total:.0f} |"
        )
    lines += ["", f"Verdict: {'PASS' if ok else 'FAIL'} (only 200 and 503, Retry-After on every 503, peak <= {limit})."]
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=8, help="CALCINOSIS_MAX_CONCURRENT_REQUESTS of the worker")
    parser.add_argument("--levels", default="4,32,128,512", help="concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=1500, help="requests per level (at most)")
    parser.add_argument("--cap", type=float, default=45.0, help="seconds per level (at most)")
    parser.add_argument("--output", default=str(REPO / "bench" / "LOAD.md"))
    args = parser.parse_args(argv)

    port, metrics_port = free_port(), free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CALCINOSIS_AUTH_DISABLED": "true",
        "CALCINOSIS_FEEDBACK_DATABASE_URL": "memory://",
        "CALCINOSIS_LOG_LEVEL": "WARNING",
        "CALCINOSIS_MAX_CONCURRENT_REQUESTS": str(args.limit),
        "CALCINOSIS_METRICS_PORT": str(metrics_port),  # the metrics have a port of their own
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hooks.cli", "serve", "--host", LOOPBACK, "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        wait_until_up(port, time.monotonic() + 90, lambda: process.poll() is None)
        make = Bodies(typical().request_bytes(), HOOK_INSTANCE_PLACEHOLDER)
        levels = []
        for concurrency in (int(c) for c in args.levels.split(",")):
            level = drive(port, make, concurrency, args.requests, args.cap)
            level.peak = gauge(metrics_port, "calcinosis_requests_in_flight_peak")
            level.shed_total = gauge(metrics_port, "calcinosis_shed_requests_total")
            levels.append(level)
            print(f"concurrency {concurrency}: {dict(level.statuses)} in {level.elapsed:.1f} s", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.seek(0)
        server_log = log.read().decode(errors="replace")
        log.close()
    ok = (
        all(
            set(level.statuses) <= {200, 503}
            and level.without_retry_after == 0
            and level.connection_errors == 0
            and level.peak <= args.limit
            for level in levels
        )
        and " 500" not in server_log
        and "Traceback" not in server_log
    )
    sys.stdout.write(report(levels, args.limit, ok, Path(args.output)))
    if not ok:
        sys.stdout.write(server_log[-3000:])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
