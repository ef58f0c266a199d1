"""The container image, built from the unmodified deploy/Dockerfile and run as a site runs it.

Without a Docker engine (tests/imagebuild.py says how): a Debian bookworm base with python3 is
bootstrapped (cached between runs), `buildah bud` builds the Dockerfile in the docker format, and
podman runs the image read-only, as UID 10001, with every capability dropped and authentication
on. The tests then call it over HTTP like an EHR: discovery and a hook call with a signed JWT, the
image's own HEALTHCHECK, and the commands an operator runs inside the image.

Nothing here is skipped: a tool that cannot be installed with apt-get fails the module loudly.
Duration on the 2-core CI machine: about 4 minutes to bootstrap the base (first run only), about
4 minutes to build, under a minute to run and check.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hooks import __version__
from tests.charts import ICD10, Chart
from tests.hookclient import hook_request
from tests.imagebuild import (
    ROOT,
    Engine,
    ImageToolError,
    base_image_name,
    bootstrap_base,
    debian_mirror,
    engine,
    site_build_inputs,
)
from tests.realservers import FhirServer, fhir_server

TAG = "localhost/calcinosis-cds:under-test"
UID = 10001
ISSUER = "https://ehr.image-test.example"
KID = "image-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    """The built image, one container of it serving on `base_url`, and how to sign its tokens."""

    engine: Engine
    container: str
    base_url: str
    metrics_url: str
    key: ec.EllipticCurvePrivateKey
    timings: dict[str, float]

    def token(self, path: str) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": self.base_url + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})

    def exec(self, *command: str, stdin: str | None = None) -> str:
        """Run a command in the container; `stdin` is fed to it (`podman exec -i`)."""
        if stdin is not None:
            return self.engine.podman("exec", "-i", self.container, *command, timeout=120, stdin=stdin)
        return self.engine.podman("exec", self.container, *command, timeout=120)


def _container_options(port: int) -> list[str]:
    """How deploy/README.md runs the image: read-only root, numeric non-root user, no
    capabilities, no privilege escalation. The host network keeps the test free of CNI set-up;
    ulimits are lowered because this machine's runc may not set them at the host's own values."""
    return [
        "--runtime",
        "runc",
        "--read-only",
        "--user",
        f"{UID}:{UID}",
        "--cap-drop=all",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=2048:2048",
        # The HEALTHCHECK is run on demand below (no systemd timer in CI).
        "--health-interval=disable",
    ]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    try:
        with engine() as eng:
            started = time.monotonic()
            tarball, built = bootstrap_base(eng.tools["debootstrap"], debian_mirror())
            eng.timings["base (bootstrapped now)" if built else "base (cached)"] = time.monotonic() - started
            eng.import_base(tarball, base_image_name())
            secrets, build_args = site_build_inputs(eng.workdir)
            eng.build(TAG, secrets, build_args)

            key = ec.generate_private_key(ec.SECP384R1())
            public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            public.update(kid=KID, use="sig", alg="ES384")
            clients = tmp_path_factory.mktemp("image-config") / "trusted-clients.json"
            # The jku is never fetched: the key is pinned in the file (as for an offline sandbox).
            clients.write_text(
                json.dumps(
                    {
                        "clients": [
                            {
                                "issuer": ISSUER,
                                "jku": [ISSUER + "/jwks.json"],
                                "jwks": {"keys": [public]},
                                "algorithms": ["ES384"],
                                "fhir_servers": [],
                            }
                        ]
                    }
                ),
                encoding="utf-8",
            )
            clients.chmod(0o644)
            port, metrics_port = _free_port(), _free_port()
            base_url = f"http://127.0.0.1:{port}"
            name = f"calcinosis-image-test-{uuid.uuid4().hex[:8]}"
            eng.podman(
                "run",
                "--detach",
                "--name",
                name,
                *_container_options(port),
                "--volume",
                f"{clients}:/etc/calcinosis/trusted-clients.json:ro",
                "--env",
                f"CALCINOSIS_PORT={port}",
                "--env",
                f"CALCINOSIS_METRICS_PORT={metrics_port}",
                "--env",
                "CALCINOSIS_TRUSTED_CLIENTS=/etc/calcinosis/trusted-clients.json",
                "--env",
                f"CALCINOSIS_PUBLIC_BASE_URL={base_url}",
                TAG,
            )
            started = time.monotonic()
            deadline = started + 120
            while True:
                try:
                    if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                state = eng.podman("inspect", "--format", "{{.State.Status}}", name).strip()
                if state != "running" or time.monotonic() > deadline:
                    logs = eng.podman("logs", name, merged=True)
                    pytest.fail(f"the container ({state}) did not answer /healthz; its log:\n{logs[-3000:]}")
                time.sleep(0.5)
            eng.timings["start"] = time.monotonic() - started
            yield Running(eng, name, base_url, f"http://127.0.0.1:{metrics_port}", key, eng.timings)
    except ImageToolError as error:
        pytest.fail(f"building or running the image failed: {error}")


def test_the_image_keeps_its_healthcheck_and_the_check_passes(image: Running) -> None:
    config = json.loads(image.engine.podman("image", "inspect", TAG))[0]
    healthcheck = config.get("Healthcheck") or config.get("Config", {}).get("Healthcheck")
    assert healthcheck and "/healthz" in " ".join(healthcheck["Test"]), "the docker format keeps HEALTHCHECK"
    # `healthcheck run` executes the image's own HEALTHCHECK command inside the container; it
    # exits non-zero (an ImageToolError here) when the check fails.
    image.engine.podman("healthcheck", "run", image.container, timeout=60)


def test_the_container_runs_read_only_as_uid_10001_without_capabilities(image: Running) -> None:
    status = dict(line.split(":", 1) for line in image.exec("cat", "/proc/1/status").splitlines() if ":" in line)
    assert status["Uid"].split()[:2] == [str(UID), str(UID)]
    for capabilities in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities].strip(), 16) == 0, capabilities
    assert status["NoNewPrivs"].strip() == "1"
    with pytest.raises(ImageToolError, match="Read-only file system"):
        image.exec("python", "-c", "open('/opt/venv/written-at-runtime', 'w')")


def test_discovery_and_a_hook_call_answer_with_a_signed_token(image: Running) -> None:
    assert httpx.get(image.base_url + "/cds-services", timeout=10).status_code == 401
    path = "/cds-services"
    discovery = httpx.get(image.base_url + path, headers={"Authorization": f"Bearer {image.token(path)}"}, timeout=10)
    assert discovery.status_code == 200, discovery.text
    assert "calcinosis" in [s["id"] for s in discovery.json()["services"]]

    chart = Chart()
    chart.calcinosis(body_sites=["Left knee"])
    chart.condition("N18.6", ICD10, "End stage renal disease")
    chart.dialysis(since_days=900)
    chart.mineral_panel(10.2, 4.0, 7.7, egfr=7)
    path = "/cds-services/calcinosis"
    answer = httpx.post(
        image.base_url + path,
        json=hook_request(chart),
        headers={"Authorization": f"Bearer {image.token(path)}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    topics = [card["source"]["topic"]["code"] for card in answer.json()["cards"]]
    assert topics == ["subtype", "workup"]  # no differential is raised by this record: no third card
    assert "metastatic" in answer.json()["cards"][0]["summary"].lower()
    ready = httpx.get(image.base_url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(image.metrics_url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'calcinosis_requests_total{endpoint="/cds-services/{service_id}",status="200"} 1.0' in metrics.text


def test_the_commands_work_inside_the_image(image: Running) -> None:
    """Every command `calcinosis-cds --help` lists, run as an operator runs it in the container
    (`serve` is the container itself). The patient file goes in on standard input: nothing is
    copied into the container, whose root filesystem is read-only."""
    listed = re.search(r"\{([a-z,-]+)\}", image.exec("calcinosis-cds", "--help"))
    assert listed is not None
    assert set(listed.group(1).split(",")) == {"serve", "evaluate", "check", "feedback-report"}
    assert image.exec("calcinosis-cds", "--version").strip() == f"calcinosis-cds {__version__}"
    bundle = (ROOT / "deploy" / "fhir-sandbox" / "patients" / "dystrophic-ssc.json").read_text(encoding="utf-8")
    response = json.loads(image.exec("calcinosis-cds", "evaluate", "-", stdin=bundle))
    assert [card["source"]["topic"]["code"] for card in response["cards"]][:1] == ["subtype"]
    # check: the container shares the host network, so a FHIR server on the host's loopback is
    # what a FHIR server beside the pod is to it.
    resources = [entry["resource"] for entry in json.loads(bundle)["entry"]]
    patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    with fhir_server(FhirServer(resources=resources)) as server:
        checked = image.exec("calcinosis-cds", "check", "--fhir-server", server.url + "/r4", "--patient", patient)
    assert "pattern consistent with dystrophic calcinosis" in checked.lower()
    # feedback-report reads the container's own store (the SQLite file in /data the service made).
    assert json.loads(image.exec("calcinosis-cds", "feedback-report"))["topics"] == {}
    # The checkout's tooling is not in the image, and the command says where it lives.
    with pytest.raises(ImageToolError, match="scripts/calcinosis-tools"):
        image.exec("calcinosis-cds", "sandbox", "load", "--fhir-server", server.url + "/r4")


def test_the_image_carries_an_sbom_of_exactly_the_pinned_runtime(image: Running) -> None:
    sbom: dict[str, Any] = json.loads(image.exec("cat", "/opt/venv/share/calcinosis-cds/sbom.cdx.json"))
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {c["name"].lower().replace("_", "-").replace(".", "-"): c["version"] for c in sbom["components"]}
    pins = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split(";")[0].strip().split("==")
            pins[name.lower().replace("_", "-").replace(".", "-")] = version
    # Every pin is in the image at its pinned version (async-timeout only below Python 3.11.3,
    # which Debian bookworm's 3.11.2 is), and nothing unpinned besides the project itself.
    assert pins == {k: v for k, v in listed.items() if k != "calcinosis-cds"}
    metadata = sbom["metadata"]["component"] if "component" in sbom.get("metadata", {}) else None
    assert listed.get("calcinosis-cds", metadata and metadata.get("version")) in (__version__, None)


def test_report_how_long_the_image_took(image: Running, pytestconfig: pytest.Config) -> None:
    """Not an assertion on time (speed is not tested here): the durations are printed in the
    test run's output, and the deployment guide quotes them."""
    assert "build" in image.timings and "start" in image.timings
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in image.timings.items())
        reporter.write_line(f"\ncontainer image: {stages}")
