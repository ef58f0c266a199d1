"""The audit trail and the client address it records.

- Feedback calls are audited like hook calls, refused ones included (no token, a token for another
  URL, a body that is not feedback, entries for cards this service never issued, an unknown service).
- The client address comes from `X-Forwarded-For` only when the TCP peer is a configured trusted
  proxy: a spoofed header from anyone else changes nothing, in-process and in a served process
  (where uvicorn, left to itself, believed the header from 127.0.0.1).
- `serve` writes the audit trail to its own destination (`CALCINOSIS_AUDIT_LOG`), one JSON object
  per line in the JSON format, and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from hooks.request_context import client_address, parse_networks
from hooks.settings import Settings
from tests.hookclient import hook_request, make_app
from tests.realservers import REPO, service_process
from tests.test_api_security import BASE, ISSUER, calcinosis_chart, secured_app, token
from tests.test_logs import json_line

CALL = "/cds-services/calcinosis"
FEEDBACK = CALL + "/feedback"
SPOOFED = "203.0.113.66"  # documentation range (RFC 5737): what a caller claims to be
EHR = "198.51.100.20"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def audit_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "calcinosis_cds.audit"]


def feedback_item(card: str) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {"userComment": "known"},
        "outcomeTimestamp": "2026-11-01T12:00:00Z",
    }


def request(app: Any, method: str, path: str, peer: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    """One request from `peer` (the TCP peer address the ASGI server reports)."""

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(follow_redirects=False) as outbound:
            app.state.http = outbound
            transport = httpx.ASGITransport(app=app, client=(peer, 50123))
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                return await client.request(method, path, **kwargs)

    return asyncio.run(main())


def test_feedback_calls_are_audited_refused_ones_included(
    key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    app = secured_app(key)
    chart = calcinosis_chart()
    with caplog.at_level(logging.INFO, logger="calcinosis_cds.audit"):
        answered = request(
            app, "POST", CALL, json=hook_request(chart), headers={"Authorization": f"Bearer {token(key, CALL)}"}
        )
        card = answered.json()["cards"][0]["uuid"]
        caplog.clear()

        def send(path: str, body: Any, bearer: str | None) -> int:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            return request(app, "POST", path, json=body, headers=headers).status_code

        statuses = [
            send(FEEDBACK, {"feedback": [feedback_item(card)]}, None),  # no token
            send(FEEDBACK, {"feedback": [feedback_item(card)]}, token(key, CALL)),  # token for another URL
            send(FEEDBACK, {"feedback": "not a list"}, token(key, FEEDBACK)),
            send(FEEDBACK, {"feedback": [feedback_item("not-issued-" + chart.patient_id)]}, token(key, FEEDBACK)),
            send("/cds-services/nope/feedback", {"feedback": []}, token(key, "/cds-services/nope/feedback")),
            send(FEEDBACK, {"feedback": [feedback_item(card), feedback_item("forged")]}, token(key, FEEDBACK)),
        ]
    assert statuses == [401, 401, 400, 400, 404, 200]
    events = audit_events(caplog)
    assert [e["outcomeDesc"] for e in events] == [
        "HTTP 401",
        "HTTP 401",
        "HTTP 400",
        "HTTP 400, 1 items, 1 rejected",
        "HTTP 404",
        "HTTP 200, 2 items, 1 new, 1 rejected",
    ]
    assert [e["outcome"] for e in events] == ["4", "4", "4", "4", "4", "0"]
    assert all(e["subtype"][0]["code"] == "feedback" and e["action"] == "C" for e in events)
    assert all(e["agent"][0]["network"]["address"] == "127.0.0.1" for e in events)
    accepted = events[-1]
    assert accepted["agent"][0]["who"]["identifier"]["system"] == ISSUER
    assert accepted["source"]["observer"]["display"] == "calcinosis-cds/calcinosis"
    # A refused token is not "authentication disabled": the line says what happened.
    assert [e["agent"][0]["who"]["display"] for e in events[:2]] == ["not authenticated (token not accepted)"] * 2
    assert events[4]["source"]["observer"]["display"] == "calcinosis-cds/(unknown service)"
    assert chart.patient_id not in json.dumps(events)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("198.51.100.9", [SPOOFED], [], "198.51.100.9"),  # no proxy configured: the header is ignored
        ("198.51.100.9", [SPOOFED], ["10.0.0.0/8"], "198.51.100.9"),  # the peer is not a proxy
        ("10.1.2.3", [EHR], ["10.0.0.0/8"], EHR),  # the ingress says who called
        ("10.1.2.3", [f"{SPOOFED}, {EHR}"], ["10.0.0.0/8"], EHR),  # the caller's own entry is not believed
        ("10.1.2.3", [f"{SPOOFED}, {EHR}, 10.9.9.9"], ["10.0.0.0/8"], EHR),  # two proxies
        ("10.1.2.3", [SPOOFED, EHR], ["10.0.0.0/8"], EHR),  # the header sent twice: read in order
        ("10.1.2.3", ["not-an-address"], ["10.0.0.0/8"], "10.1.2.3"),  # garbage: the proxy itself
        ("10.1.2.3", [], ["10.0.0.0/8"], "10.1.2.3"),  # no header
        ("10.1.2.3", ["10.4.4.4"], ["10.0.0.0/8"], "10.4.4.4"),  # only proxies: the farthest one
        ("2001:db8::1", ["2001:db8:ffff::7"], ["2001:db8::/48"], "2001:db8:ffff::7"),
        ("::ffff:10.1.2.3", [EHR], ["10.0.0.0/8"], EHR),  # an IPv4 proxy seen through a dual-stack socket
        ("10.1.2.3", [f"{EHR}:51234"], ["10.1.2.3"], EHR),  # an entry with a port
    ],
)
def test_the_client_address_behind_trusted_proxies_only(
    peer: str, forwarded: list[str], trusted: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, parse_networks(trusted)) == expected


def test_a_bad_trusted_proxy_setting_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(auth_disabled=True, trusted_proxies="10.0.0.0/8, ingress.local")
    assert Settings(auth_disabled=True, trusted_proxies="10.0.0.0/8, 192.0.2.7").trusted_proxies == [
        "10.0.0.0/8",
        "192.0.2.7",
    ]


def test_the_audit_line_records_the_resolved_client_in_process(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(trusted_proxies=["10.0.0.0/8"])
    body = hook_request(calcinosis_chart())
    headers = {"X-Forwarded-For": f"{SPOOFED}, {EHR}", "X-Request-ID": "ingress-req-0001"}
    with caplog.at_level(logging.INFO, logger="calcinosis_cds.audit"):
        behind = request(app, "POST", CALL, peer="10.1.2.3", json=body, headers=headers)
        direct = request(app, "POST", CALL, peer="198.51.100.9", json=body, headers=headers)
    assert behind.status_code == direct.status_code == 200
    first, second = audit_events(caplog)
    assert first["agent"][0]["network"]["address"] == EHR
    assert second["agent"][0]["network"]["address"] == "198.51.100.9"  # spoofed header ignored
    assert behind.headers["x-request-id"] == "ingress-req-0001"  # the ingress's id, kept
    assert direct.headers["x-request-id"] != "ingress-req-0001"  # anyone else's is replaced


def test_a_served_process_believes_x_forwarded_for_only_from_its_trusted_proxies(tmp_path: Path) -> None:
    """Both ways against `calcinosis-cds serve` (uvicorn, access log on, JSON format): spoofed from
    an untrusted peer (the loopback address, which uvicorn trusted by default), then from the
    configured proxy. The audit trail goes to its own file, nowhere else."""
    spoof = {"X-Forwarded-For": SPOOFED, "X-Request-ID": "spoofed-request-id"}
    env = {"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_LOG_FORMAT": "json"}
    body = hook_request(calcinosis_chart())

    untrusted_audit = tmp_path / "untrusted-audit.jsonl"
    with service_process({**env, "CALCINOSIS_AUDIT_LOG": str(untrusted_audit)}) as service:
        answer = httpx.post(service.url + CALL, json=body, headers=spoof, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-request-id"] != "spoofed-request-id"
        logged = service.log()
    lines = [json_line(line) for line in logged.splitlines() if line.strip()]
    access = [e for e in lines if e["logger"] == "uvicorn.access" and e["path"] == CALL]
    assert [e["client"] for e in access] == ["127.0.0.1"]
    assert SPOOFED not in logged and "spoofed-request-id" not in logged
    assert "calcinosis_cds.audit" not in logged  # only in its own file
    audited = [json_line(line) for line in untrusted_audit.read_text().splitlines()]
    assert [e["auditEvent"]["agent"][0]["network"]["address"] for e in audited] == ["127.0.0.1"]

    trusted_audit = tmp_path / "trusted-audit.jsonl"
    trusted_env = {**env, "CALCINOSIS_AUDIT_LOG": str(trusted_audit), "CALCINOSIS_TRUSTED_PROXIES": "127.0.0.1/32"}
    request_id = "ingress-" + uuid.uuid4().hex
    with service_process(trusted_env) as service:
        answer = httpx.post(
            service.url + CALL,
            json=body,
            headers={"X-Forwarded-For": f"{SPOOFED}, {EHR}", "X-Request-ID": request_id},
            timeout=30,
        )
        feedback = httpx.post(service.url + FEEDBACK, json={"feedback": "none"}, timeout=30)
        logged = service.log()
    assert answer.status_code == 200 and answer.headers["x-request-id"] == request_id
    assert feedback.status_code == 400
    lines = [json_line(line) for line in logged.splitlines() if line.strip()]
    access = {e["path"]: e for e in lines if e["logger"] == "uvicorn.access" and e["method"] == "POST"}
    assert access[CALL]["client"] == EHR and access[CALL]["requestId"] == request_id
    assert access[FEEDBACK]["client"] == "127.0.0.1"  # no header: the proxy itself
    audited = [json_line(line) for line in trusted_audit.read_text().splitlines()]
    assert [e["logger"] for e in audited] == ["calcinosis_cds.audit"] * 2
    hook_event, feedback_event = (e["auditEvent"] for e in audited)
    assert hook_event["agent"][0]["network"]["address"] == EHR and audited[0]["requestId"] == request_id
    assert feedback_event["subtype"][0]["code"] == "feedback" and feedback_event["outcomeDesc"] == "HTTP 400"
    assert "calcinosis_cds.audit" not in logged


def test_serve_refuses_an_audit_file_it_cannot_write(tmp_path: Path) -> None:
    env = {"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_AUDIT_LOG": str(tmp_path / "missing" / "audit.log")}
    run = subprocess.run(
        [sys.executable, "-m", "hooks.cli", "serve", "--port", "0"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2 and "audit_log" in run.stderr
