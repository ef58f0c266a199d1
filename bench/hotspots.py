"""Where a request's time goes: a stage breakdown and a cProfile of the service, in-process.

    .venv/bin/python bench/hotspots.py                    # heavy workload, 10 profiled requests
    .venv/bin/python bench/hotspots.py --workload typical --requests 30 --top 25
    .venv/bin/python bench/hotspots.py --gc freeze        # same, after gc.freeze() at start-up
    .venv/bin/py-spy record -o heavy.svg -- .venv/bin/python bench/hotspots.py --loop 20   # sampled

Stages are timed without the profiler (medians over the requests), by calling the same functions
the route calls, in order: JSON decode, request validation, prefetch resolution, mapping, the
reasoning, validation of the cited resources, card rendering, response encoding. The profile then
covers whole requests through the ASGI app (httpx.ASGITransport), so framework costs show up too.
`--gc` compares garbage-collector settings (the service itself is not changed): `default`,
`freeze` (gc.freeze() after the app is built, as a server could do at start-up), `threshold`
(freeze, then gc.set_threshold(100_000, 50, 1000)), or `off`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import math
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench.app import SERVICE_PATH, build_app  # noqa: E402
from bench.rawhttp import Bodies  # noqa: E402
from bench.workloads import HOOK_INSTANCE_PLACEHOLDER, charts  # noqa: E402
from calcinosis.engine import assess  # noqa: E402
from fhir_mapping.mapping import map_resources  # noqa: E402
from fhir_mapping.pipeline import validation_problem  # noqa: E402
from hooks.cards import render_cards  # noqa: E402
from hooks.models import HookRequest, HookResponse  # noqa: E402
from hooks.outbound import OutboundPolicy  # noqa: E402
from hooks.prefetch import PrefetchResolver  # noqa: E402
from hooks.wire import decode_hook_request  # noqa: E402


class _Stopwatch:
    """Accumulates durations per stage name."""

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {}
        self._name = ""
        self._started = 0.0

    def start(self, name: str) -> None:
        self._name, self._started = name, time.perf_counter()

    def stop(self) -> None:
        self.timings.setdefault(self._name, []).append(time.perf_counter() - self._started)


def _stages(app: Any, make: Bodies, requests: int) -> dict[str, float]:
    """Median milliseconds per stage of the service call."""
    service = app.state.service
    watch = _Stopwatch()
    loop = asyncio.new_event_loop()  # one loop: asyncio.run per call would add its own costs
    for _ in range(requests + 1):
        body = make()
        watch.start("1 JSON decode (hooks.wire)")
        data = decode_hook_request(body)
        watch.stop()
        watch.start("2 HookRequest validation")
        request = HookRequest.model_validate(data)
        watch.stop()
        context = service.context(request)
        resolver = PrefetchResolver(
            service.keys, service.settings, None, service.documents_calcinosis, OutboundPolicy.deny_all()
        )
        watch.start("3 prefetch resolution")
        resolved = loop.run_until_complete(resolver.resolve(request, context.patient_id))
        watch.stop()
        watch.start("4 mapping (map_resources)")
        mapped = map_resources(resolved.resources, service.terminology, datetime.now(UTC), context.patient_id)
        watch.stop()
        watch.start("5 reasoning (engine.assess)")
        assessment = assess(mapped.findings, service.knowledge)
        watch.stop()
        if assessment is None:
            raise RuntimeError("the workload does not document calcinosis")
        watch.start("6 FHIR validation of cited resources")
        for reference in assessment.evidence_references:
            if reference in mapped.index:
                validation_problem(mapped.index[reference])
        watch.stop()
        watch.start("7 card rendering")
        cards = render_cards(assessment, service.knowledge, request.hook_instance, context.patient_id)
        watch.stop()
        watch.start("8 response encoding")
        orjson.dumps(HookResponse(cards=cards).wire())
        watch.stop()
    loop.close()
    # The first round is a warm-up (lazy imports, model class look-ups).
    return {name: statistics.median(values[1:]) * 1000 for name, values in watch.timings.items()}


class _GcClock:
    """Time spent in the cyclic garbage collector, per generation (via gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.collections[generation] += 1

    def __enter__(self) -> _GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def _requests(app: Any, make: Bodies, count: int | None, seconds: float = math.inf) -> list[float]:
    """Latencies of `count` whole requests (or as many as `seconds` allow)."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:
            while (count is None or len(latencies) < count) and time.monotonic() < stop_at:
                body = make()
                started = time.perf_counter()
                response = await client.post(SERVICE_PATH, content=body, headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or not response.json()["cards"]:
                    raise RuntimeError(f"unexpected answer {response.status_code}")
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("typical", "heavy"), default="heavy")
    parser.add_argument("--requests", type=int, default=10, help="profiled requests (after 3 warm-up requests)")
    parser.add_argument("--top", type=int, default=15, help="rows per profile listing")
    parser.add_argument("--gc", choices=("default", "freeze", "threshold", "off"), default="default")
    parser.add_argument("--output", help="also write the raw profile (pstats format) here")
    parser.add_argument(
        "--loop",
        type=float,
        metavar="SECONDS",
        help="only send whole requests for this long, unprofiled, for a sampling profiler attached from outside",
    )
    args = parser.parse_args(argv)

    chart = charts()[args.workload]
    make = Bodies(chart.request_bytes(), HOOK_INSTANCE_PLACEHOLDER)
    app = build_app()
    if args.gc == "freeze":
        gc.collect()
        gc.freeze()
    elif args.gc == "threshold":
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
    elif args.gc == "off":
        gc.disable()
    print(f"workload {args.workload}: {len(chart.resources)} resources, request {make.size / 1e6:.2f} MB; gc {args.gc}")
    if args.loop is not None:
        looped = asyncio.run(_requests(app, make, None, args.loop))
        print(f"{len(looped)} requests in {args.loop:.0f} s, median {statistics.median(looped) * 1000:.1f} ms")
        return 0

    stages = _stages(app, make, max(3, args.requests))
    print("\nStage medians (ms, no profiler):")
    for name, ms in stages.items():
        print(f"  {name:<40} {ms:8.1f}")
    print(f"  {'sum':<40} {sum(stages.values()):8.1f}")

    asyncio.run(_requests(app, make, 3))
    with _GcClock() as clock:
        plain = asyncio.run(_requests(app, make, args.requests))
    print(f"\nWhole request through the ASGI app, no profiler: median {statistics.median(plain) * 1000:.1f} ms")
    per_request = [s * 1000 / args.requests for s in clock.seconds]
    counts = [c / args.requests for c in clock.collections]
    print(
        f"Cyclic GC per request: {sum(per_request):.1f} ms in {sum(counts):.0f} collections "
        f"(gen0 {per_request[0]:.1f} ms/{counts[0]:.0f}, gen1 {per_request[1]:.1f} ms/{counts[1]:.0f}, "
        f"gen2 {per_request[2]:.1f} ms/{counts[2]:.1f})"
    )

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(_requests(app, make, args.requests))
    profiler.disable()
    if args.output:
        profiler.dump_stats(args.output)
    # Cumulative: the service's own functions (framework wrappers would fill the list otherwise);
    # internal time: everything, C functions included.
    listings = (
        ("cumulative", "service code (calcinosis, fhir_mapping, hooks)", (r"/(calcinosis|fhir_mapping|hooks)/",)),
        ("tottime", "all functions", ()),
    )
    for order, what, restrictions in listings:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(order)
        stats.print_stats(*restrictions, args.top)
        text = out.getvalue()
        body = text[text.index("   ncalls") :] if "   ncalls" in text else text
        body = body.replace(str(REPO) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", "")
        print(f"\nProfile of {args.requests} requests, {what}, top {args.top} by {order} (seconds, all requests):")
        print(body.rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
