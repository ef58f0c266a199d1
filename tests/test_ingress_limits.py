"""The ingress in front waits as long as the service may take and admits what it accepts, and the
deployment guide's table says what the manifest sets (deploy/README.md, "The ingress: body size and
timeouts matched to the service").

The service's own bounds come from its settings' defaults and the JWK Set fetcher's time-out, so
raising one of them without the ingress fails here rather than as 504s in production."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from hooks.auth.keys import JwksFetcher
from hooks.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PREFIX = "nginx.ingress.kubernetes.io/"


def annotations() -> dict[str, str]:
    ingress: dict[str, Any] = yaml.safe_load((DEPLOY / "kubernetes/overlays/production/ingress.yaml").read_text())
    values: dict[str, str] = ingress["metadata"]["annotations"]
    return values


def test_the_ingress_waits_longer_than_the_services_longest_bounded_answer() -> None:
    settings = Settings(auth_disabled=True)
    jwks_timeout = inspect.signature(JwksFetcher.__init__).parameters["timeout"].default
    bounded = (
        jwks_timeout  # an unknown kid: the JWK Set is fetched
        + settings.replay_cache_timeout_seconds
        + settings.fetch_deadline_seconds
        + settings.feedback_timeout_seconds  # suppression look-up (hook) or feedback store
    )
    read_timeout = int(annotations()[PREFIX + "proxy-read-timeout"])
    assert read_timeout >= bounded + 1, f"proxy-read-timeout {read_timeout} s, the service may take {bounded} s"
    assert int(annotations()[PREFIX + "proxy-send-timeout"]) == settings.body_timeout_seconds


def test_the_deployment_guide_lists_every_ingress_annotation_with_its_value() -> None:
    guide = (DEPLOY / "README.md").read_text(encoding="utf-8")
    section = guide.split("### The ingress: body size and timeouts matched to the service", 1)[1]
    section = section.split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    for name, value in annotations().items():
        assert name.startswith(PREFIX), name
        short = name.removeprefix(PREFIX)
        matching = [row for row in rows if re.search(rf"`(?:{re.escape(PREFIX)})?{re.escape(short)}`", row)]
        assert matching, f"{short} is not in the guide's table"
        assert any(f'`"{value}"`' in row for row in matching), f'{short}: the guide does not say "{value}"'
