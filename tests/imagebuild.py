"""Building and running deploy/Dockerfile without a Docker engine, for tests/test_image.py.

The Dockerfile's base image (`python:3.11.17-slim-bookworm`) cannot be pulled here: only the
Debian and PyPI registries are reachable. So the base is made from Debian itself: `debootstrap`
of bookworm with python3 (the same distribution and Python minor as the official image), imported
into a private containers-storage under the Dockerfile's base-image name. `buildah bud` then
builds the *unmodified* Dockerfile (chroot isolation, vfs storage: no daemon, no overlay mounts,
no user namespaces), in the docker format so that `HEALTHCHECK` is kept, and podman runs the
result read-only, as UID 10001, with every capability dropped.

The Debian mirror is the one apt already uses on this machine (read from /etc/apt/sources.list*
at run time), so no host name is written here. The bootstrapped base is cached between runs in
the user's cache directory (`CALCINOSIS_IMAGE_CACHE`, else `$XDG_CACHE_HOME/calcinosis-cds`, else
`~/.cache/calcinosis-cds`), never in the repository; everything else lives in a temporary
directory removed afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SUITE = "bookworm"
# What the official slim image brings that the Dockerfile uses: python3 with venv and ensurepip,
# `python` on PATH (the HEALTHCHECK and the builder call it so), CA certificates; groupadd and
# useradd come with the minimal base.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Debian package of each tool the test needs.
TOOLS = {"debootstrap": "debootstrap", "buildah": "buildah", "podman": "podman", "runc": "runc"}


class ImageToolError(RuntimeError):
    """A tool is missing or failed; the message says which and what it printed."""


def run(
    command: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    merged: bool = False,
    stdin: str | None = None,
) -> str:
    """Run a command (with `stdin` as its standard input, else none); its output (with its error
    output if `merged`), or ImageToolError with the tail of what it printed."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
        )
    except subprocess.TimeoutExpired as error:
        raise ImageToolError(f"{command[0]} {command[1]} did not finish within {timeout:.0f} s") from error
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise ImageToolError(f"{' '.join(command[:3])} ... exited {result.returncode}:\n{tail}")
    return result.stdout + result.stderr if merged else result.stdout


def ensure_tools() -> dict[str, str]:
    """Every tool's path, installing the missing ones with apt-get (as scripts/test's set-up for
    the browser does). A tool that still cannot be found is an error, never a skip."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        apt = shutil.which("apt-get")
        if apt is None:
            raise ImageToolError(f"{', '.join(missing)} missing and there is no apt-get to install them")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=600"]
        run([apt, *lock, "update", "-q"], timeout=900, env=env)
        run([apt, *lock, "install", "-y", "-q", "--no-install-recommends", *missing], timeout=1800, env=env)
    paths = {tool: shutil.which(tool) for tool in TOOLS}
    absent = [tool for tool, path in paths.items() if path is None]
    if absent:
        raise ImageToolError(f"cannot install {', '.join(absent)} with apt-get")
    return {tool: path for tool, path in paths.items() if path is not None}


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses here for bookworm: the first `deb` source (one-line or deb822
    format) whose suites include bookworm itself, main component."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if (
                    "deb" in fields.get("types", "").split()
                    and SUITE in fields.get("suites", "").split()
                    and "main" in fields.get("components", "").split()
                    and fields.get("uris")
                ):
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", " ", line).split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == SUITE and "main" in parts[3:]:
                    return parts[1]
    raise ImageToolError(f"no Debian {SUITE} source in {sources}/sources.list*: cannot bootstrap the base image")


def base_image_name() -> str:
    """The Dockerfile's default base image, fully qualified as buildah resolves the short name."""
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    if match is None:
        raise ImageToolError("deploy/Dockerfile has no `ARG PYTHON_IMAGE=` default")
    name = match.group(1).split("@", 1)[0]
    return name if "/" in name else f"docker.io/library/{name}"


def cache_dir() -> Path:
    """Where the bootstrapped base is kept between runs (outside the repository)."""
    configured = os.environ.get("CALCINOSIS_IMAGE_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "calcinosis-cds"


def bootstrap_base(debootstrap: str, mirror: str) -> tuple[Path, bool]:
    """A tarball of a Debian bookworm root with python3, built once and cached. Returns the path
    and whether it was built now. Parallel test runs share it; a lock lets one of them build."""
    key = hashlib.sha256(f"{SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:16]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"base-{SUITE}-{key}.tar"
    with (cache / "base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball, False
        with tempfile.TemporaryDirectory(dir=cache, prefix="bootstrap-") as work:
            root = Path(work) / "root"
            run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(root),
                    mirror,
                ],
                timeout=1800,
            )
            # Downloaded packages and indexes are not part of a base image.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (root / leftover).glob("*"):
                    if item.is_file():
                        item.unlink()
            partial = Path(work) / "base.tar"
            run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], timeout=600)
            partial.replace(tarball)
        return tarball, True


@dataclass
class Engine:
    """buildah and podman on one private containers-storage (vfs) in a temporary directory."""

    tools: dict[str, str]
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    def _storage(self) -> list[str]:
        return [
            "--root",
            str(self.workdir / "storage"),
            "--runroot",
            str(self.workdir / "run"),
            "--storage-driver",
            "vfs",
        ]

    def podman(self, *args: str, timeout: float = 300, merged: bool = False, stdin: str | None = None) -> str:
        # No systemd in a CI container: cgroupfs, and events in a file.
        options = ["--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        return run(
            [self.tools["podman"], *self._storage(), *options, *args], timeout=timeout, merged=merged, stdin=stdin
        )

    def buildah(self, *args: str, timeout: float = 1800) -> str:
        return run([self.tools["buildah"], *self._storage(), *args], timeout=timeout)

    def import_base(self, tarball: Path, name: str) -> None:
        self.podman("import", str(tarball), name, timeout=600)

    def build(self, tag: str, secrets: dict[str, Path], build_args: dict[str, str]) -> None:
        command = ["bud", "--isolation", "chroot", "--format", "docker", "--pull=never", "--layers=false"]
        for name, path in secrets.items():
            command += ["--secret", f"id={name},src={path}"]
        for name, value in build_args.items():
            command += ["--build-arg", f"{name}={value}"]
        started = time.monotonic()
        self.buildah(*command, "-f", str(DOCKERFILE), "-t", tag, str(ROOT))
        self.timings["build"] = time.monotonic() - started


def site_build_inputs(workdir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """This machine's own CA bundle and package index, passed the way the deployment guide tells
    a site to (build secrets): pip inside the build then trusts what pip outside it trusts."""
    secrets: dict[str, Path] = {}
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            secrets["site_ca"] = Path(value)
            break
    index = os.environ.get("PIP_INDEX_URL")
    if index:
        url_file = workdir / "package-index-url"
        url_file.write_text(index, encoding="utf-8")
        url_file.chmod(0o600)
        secrets["package_index_url"] = url_file
    return secrets, {}


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """An Engine on fresh storage, removed afterwards (with vfs each layer is a full copy)."""
    tools = ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="calcinosis-image-"))
    try:
        yield Engine(tools, workdir)
    finally:
        with contextlib.suppress(ImageToolError):
            Engine(tools, workdir).podman("rm", "--all", "--force", "--time", "0", timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)
