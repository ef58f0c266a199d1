"""What the no-prefetch path spends on its HTTP client (issue 13, item 7).

httpcore asks which async library runs it on every request it sends through its connection pool,
with `import sniffio` inside a function. Without the package, each of those imports fails after a
search of every `sys.path` entry: about 30 µs each, some 80 times per call without prefetch
(about 2.5 ms of CPU per call). `requirements/runtime.txt` pins sniffio, so the import is found
once and then read from `sys.modules`. bench/RESULTS.md has the CPU per call measured.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import httpx

from hooks.fhir_client import FhirClient
from hooks.outbound import OutboundPolicy
from tests.realservers import FhirServer, fhir_server


class ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every module name the import system goes looking for (it finds none)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(fullname)
        return None


def test_fhir_requests_search_for_no_module_on_each_request() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    observations = [{"resourceType": "Observation", "id": f"o{i}", "status": "final"} for i in range(3)]
    with fhir_server(FhirServer(resources=[patient, *observations])) as server:

        async def looked_up() -> list[str]:
            async with httpx.AsyncClient(follow_redirects=False) as http:
                scope = OutboundPolicy.only(server.url).scope(server.url)
                assert scope is not None
                client = FhirClient(http, scope, None, time.monotonic() + 30, 10.0, 1_000_000, 5)
                assert await client.read("Patient/p1") is not None  # first use: imports happen here
                recorder = ImportRecorder()
                sys.meta_path.insert(0, recorder)
                try:
                    for _ in range(5):
                        found = await client.search("Observation?patient=p1")
                        assert len(found.resources) == 3
                        assert await client.read("Patient/p1") is not None
                finally:
                    sys.meta_path.remove(recorder)
                return recorder.names

        names = asyncio.run(looked_up())
    assert names == [], f"modules searched for on every request: {sorted(set(names))}"
