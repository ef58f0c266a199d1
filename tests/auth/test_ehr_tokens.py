"""Tokens as real EHRs send them (issue 13, item 5), through the app with real signatures:

- the CDS Hooks sandbox: ES384 with `jku` and `kid` in the header and `aud` the exact endpoint URL;
  a client whose key is pinned (`jwks`) accepts it whatever the `jku` (the decision documented in
  the README), and never fetches that `jku`;
- Epic: the health system types the audience in once, so every call (feedback included) carries
  the service URL; a client configured with that `audience` is accepted on every endpoint;
- Oracle Health: keys published at a JWK URL and rotated; the set is served over HTTPS in the test,
  rotated, and a token signed with the new key verifies after one refetch on its unknown `kid`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hooks.app import create_app
from hooks.auth import InMemoryReplayCache, JwksFetcher, JwtVerifier
from hooks.settings import Settings
from tests.auth.tokens import SANDBOX_ISS, SANDBOX_JKU, Clock, public_jwk
from tests.charts import Chart
from tests.hookclient import hook_request

BASE = "https://cds.example.org"
SERVICE = "/cds-services/calcinosis"
FEEDBACK = SERVICE + "/feedback"


def token(key: Any, alg: str, iss: str, aud: str, kid: str, jku: str | None = None, **extra: Any) -> str:
    now = int(time.time())
    header: dict[str, Any] = {"typ": "JWT", "kid": kid}
    if jku is not None:
        header["jku"] = jku
    payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **extra}
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def app_for(clients: list[dict[str, Any]]) -> Any:
    settings = Settings(
        auth_disabled=False,
        trusted_clients=json.dumps({"clients": clients}),
        public_base_url=BASE,
        feedback_database_url="memory://",
    )
    return create_app(settings)


async def exchange(app: Any, http: httpx.AsyncClient, calls: list[tuple[str, str, Any, str]]) -> list[httpx.Response]:
    """Each (method, path, body, token) in turn; `http` is the app's outbound client (JWKS)."""
    app.state.http = http
    transport = httpx.ASGITransport(app=app)
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as caller:
        for method, path, body, bearer in calls:
            headers = {"Authorization": f"Bearer {bearer}"}
            if method == "GET":
                answers.append(await caller.get(path, headers=headers))
            else:
                answers.append(await caller.post(path, json=body, headers=headers))
    return answers


def run_calls(
    app: Any, calls: list[tuple[str, str, Any, str]], http: httpx.AsyncClient | None = None
) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        if http is not None:
            return await exchange(app, http, calls)
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse_network)) as offline:
            return await exchange(app, offline, calls)

    return asyncio.run(main())


def refuse_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no outbound request was expected, got one to {request.url.host}")


def calcinosis_call() -> dict[str, Any]:
    chart = Chart()
    chart.calcinosis()
    chart.mineral_panel(9.4, 4.1, 3.6)
    return hook_request(chart)


# ----- (a) the CDS Hooks sandbox -----------------------------------------------------------------


@pytest.mark.parametrize("jku_listed", [False, True], ids=["pinned key only", "pinned key and jku listed"])
def test_sandbox_tokens_verify_against_a_pinned_key_whatever_their_jku(jku_listed: bool) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    kid = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    client: dict[str, Any] = {"issuer": SANDBOX_ISS, "jwks": {"keys": [public_jwk(key, kid)]}}
    if jku_listed:
        client["jku"] = [SANDBOX_JKU]
    app = app_for([client])
    calls = [
        ("GET", "/cds-services", None, token(key, "ES384", SANDBOX_ISS, BASE + "/cds-services", kid, SANDBOX_JKU)),
        ("POST", SERVICE, calcinosis_call(), token(key, "ES384", SANDBOX_ISS, BASE + SERVICE, kid, SANDBOX_JKU)),
    ]
    discovery, call = run_calls(app, calls)  # the offline client fails the test on any fetch
    assert discovery.status_code == 200 and call.status_code == 200
    assert call.json()["cards"], "the sandbox must see cards, not 'All clear!'"
    card = call.json()["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-01T12:00:00Z"}]}
    (answer,) = run_calls(
        app, [("POST", FEEDBACK, feedback, token(key, "ES384", SANDBOX_ISS, BASE + FEEDBACK, kid, SANDBOX_JKU))]
    )
    assert answer.status_code == 200


def test_a_pinned_client_still_refuses_another_key_and_an_unlisted_jku_for_an_unknown_kid() -> None:
    key, other = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    app = app_for([{"issuer": SANDBOX_ISS, "jwks": {"keys": [public_jwk(key, "k1")]}}])
    forged = token(other, "ES384", SANDBOX_ISS, BASE + SERVICE, "k1", SANDBOX_JKU)
    unknown = token(other, "ES384", SANDBOX_ISS, BASE + SERVICE, "k2", "https://evil.example.org/jwks.json")
    answers = run_calls(
        app, [("POST", SERVICE, calcinosis_call(), forged), ("POST", SERVICE, calcinosis_call(), unknown)]
    )
    assert [a.status_code for a in answers] == [401, 401]


# ----- (b) Epic: one audience on every call ------------------------------------------------------


@pytest.fixture(scope="module")
def epic_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


EPIC_ISS = "https://fhir.hospital.example/api/FHIR/R4"


def test_epic_feedback_carrying_the_service_audience_is_accepted_when_configured(epic_key: rsa.RSAPrivateKey) -> None:
    kid = "Xk3+lAbc/def=="  # Epic kids are base64 thumbprints: compared as opaque strings
    client = {"issuer": EPIC_ISS, "jwks": {"keys": [public_jwk(epic_key, kid)]}, "audience": BASE + SERVICE}
    configured, unconfigured = app_for([client]), app_for([{k: v for k, v in client.items() if k != "audience"}])

    def epic(aud: str) -> str:
        return token(epic_key, "RS384", EPIC_ISS, aud, kid, sub="calcinosis-client-id", nbf=int(time.time()) - 300)

    (first,) = run_calls(configured, [("POST", SERVICE, calcinosis_call(), epic(BASE + SERVICE))])
    assert first.status_code == 200
    card = first.json()["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-01T12:00:00Z"}]}
    assert run_calls(configured, [("POST", FEEDBACK, feedback, epic(BASE + SERVICE))])[0].status_code == 200
    assert run_calls(configured, [("GET", "/cds-services", None, epic(BASE + SERVICE))])[0].status_code == 200
    assert (
        run_calls(configured, [("POST", FEEDBACK, feedback, epic("https://elsewhere.example/x"))])[0].status_code == 401
    )
    assert run_calls(unconfigured, [("POST", FEEDBACK, feedback, epic(BASE + SERVICE))])[0].status_code == 401
    assert run_calls(unconfigured, [("POST", FEEDBACK, feedback, epic(BASE + FEEDBACK))])[0].status_code == 400


# ----- (c) Oracle Health: a rotating key set at a JWK URL ----------------------------------------


@dataclass
class JwkHost:
    """An HTTPS server publishing a JWK Set that the test rotates; counts fetches."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    ca: bytes = b""


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def jwk_host() -> Iterator[JwkHost]:
    host = JwkHost()
    cert, key = self_signed()
    host.ca = cert

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.fetches += 1
            body = json.dumps({"keys": host.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "cert.pem").write_bytes(cert)
        (Path(folder) / "key.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(folder) / "cert.pem", Path(folder) / "key.pem")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    host.url = f"https://127.0.0.1:{httpd.server_address[1]}/jwk"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


ORACLE_ISS = "https://cds-hooks.cerner.com"


def test_oracle_key_rotation_is_picked_up_on_an_unknown_kid(jwk_host: JwkHost) -> None:
    """Served over HTTPS (a certificate made for the test), rotated: the new key's first token
    makes the service refetch the set once; the withdrawn old key no longer matters."""
    old, new = rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP384R1())
    jwk_host.keys = [public_jwk(old, "2026-11")]
    app = app_for([{"issuer": ORACLE_ISS, "jku": [jwk_host.url], "tenant": "hospital-tenant"}])

    def oracle(key: Any, alg: str, kid: str, path: str = SERVICE) -> str:
        return token(key, alg, ORACLE_ISS, BASE + path, kid, jwk_host.url, tenant="hospital-tenant")

    clock = Clock(time.time())

    async def main() -> list[int]:
        verify = ssl.create_default_context(cadata=jwk_host.ca.decode())
        async with httpx.AsyncClient(verify=verify) as http:
            # The app's verifier, over this client (it trusts the test's certificate) and a clock
            # the test moves: refetches on an unknown kid are at most every 30 s.
            authenticator = app.state.authenticator
            authenticator._verifier = JwtVerifier(
                authenticator.clients, InMemoryReplayCache(clock=clock), JwksFetcher(http, clock=clock), clock=clock
            )
            statuses = []
            (first,) = await exchange(
                app, http, [("POST", SERVICE, calcinosis_call(), oracle(old, "RS384", "2026-11"))]
            )
            statuses.append(first.status_code)
            jwk_host.keys = [public_jwk(new, "2026-12", alg="ES384"), public_jwk(old, "2026-11")]  # rotation
            clock.now += 45  # a while later (the cached set is still fresh: its lifetime is 10 min)
            (second,) = await exchange(
                app, http, [("POST", SERVICE, calcinosis_call(), oracle(new, "ES384", "2026-12"))]
            )
            statuses.append(second.status_code)
            jwk_host.keys = [public_jwk(new, "2026-12", alg="ES384")]  # the old key is withdrawn
            (third,) = await exchange(
                app, http, [("POST", SERVICE, calcinosis_call(), oracle(new, "ES384", "2026-12"))]
            )
            statuses.append(third.status_code)
            return statuses

    assert asyncio.run(main()) == [200, 200, 200]
    assert jwk_host.fetches == 2  # the first use, and one refetch for the unknown kid; then cached
