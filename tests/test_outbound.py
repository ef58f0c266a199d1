"""The outbound policy (hooks.outbound): URL normalisation, whole-segment comparison, and the
attacks of the red team replayed against a real hostile HTTP server, through the service with
authentication on (real signatures), asserting that the FHIR bearer token never leaves the
allowlisted base."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hooks.outbound import FhirScope, OutboundPolicy, jku_to_fetch, normalise
from tests.charts import ICD10, Chart
from tests.hookclient import make_app, post, prefetch_of
from tests.realservers import FhirServer, fhir_server

BASE = "http://testserver"
ISSUER = "https://ehr.example.org"
KID = "ehr-key-1"
FHIR_TOKEN = "fhir-bearer-token-7f3a"
PATH = "/cds-services/calcinosis"


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Fhir.Example.ORG:443/r4/Patient/1", "https://fhir.example.org/r4/Patient/1"),
        ("http://h:80/a/./b/../c", "http://h/a/c"),
        ("http://h/b/x/../../secret/p", "http://h/secret/p"),
        ("http://h/b/%2e%2E/secret", "http://h/secret"),
        ("http://h/b/.%2e/secret", "http://h/secret"),
        ("http://h/%7euser/%41%62", "http://h/~user/Ab"),
        ("http://h/a%3ab?x=%3a%41", "http://h/a%3Ab?x=%3AA"),
        ("http://h/..", "http://h/"),
        ("http://h", "http://h/"),
        ("http://h:8080/r4/", "http://h:8080/r4/"),
        ("http://[::1]:8080/r4", "http://[::1]:8080/r4"),
    ],
)
def test_normalisation(url: str, normal: str) -> None:
    result = normalise(url)
    assert result is not None and result.text == normal


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/a",
        "http://user@h/a",
        "http://h/a#frag",
        "http://h/a\\b",
        "http://h/a b",
        "http://h/a%2Fb",
        "http://h/a%5cb",
        "http://h/a%0ab",
        "http://h/a%zz",
        "http://h/a%4",
        "http://h%2e/a",
        "http://h:99999/a",
        "//h/a",
        "",
    ],
)
def test_urls_the_service_never_calls(url: str) -> None:
    assert normalise(url) is None


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        ("https://h/exact", True),
        ("https://h/exact/", True),
        ("https://h/exact/Patient/1", True),
        ("https://h/exact?x=1", True),
        ("https://h/exact-evil/", False),
        ("https://h/exact-evil/Condition?patient=1", False),
        ("https://h/exactly", False),
        ("https://h/exact/../exact-evil/x", False),
        ("https://h/exact/%2e%2e/evil", False),
        ("https://h/exact/a/../../evil", False),
        ("https://h/exact/a/../Patient/1", True),
        ("https://h:444/exact/x", False),
        ("http://h/exact/x", False),
        ("https://H/exact/x", True),
    ],
)
def test_scope_compares_whole_segments(url: str, inside: bool) -> None:
    base = normalise("https://h/exact")
    assert base is not None
    assert (FhirScope(base).resolve(url) is not None) is inside


def test_policies_have_no_allow_everything() -> None:
    assert not OutboundPolicy.deny_all().allows("https://fhir.example.org/r4")
    assert not OutboundPolicy(()).allows("http://127.0.0.1/fhir")
    local = OutboundPolicy((), allow_http=True, loopback=True)
    assert local.allows("http://127.0.0.1:8080/fhir") and not local.allows("http://10.0.0.1/fhir")
    only = OutboundPolicy.only("http://fhir.local/r4/")
    assert only.allows("http://fhir.local/r4") and not only.allows("http://fhir.local/r4/Patient")
    assert not only.allows("http://fhir.local/r4-evil")


def test_jku_is_matched_after_normalisation_and_the_configured_url_is_fetched() -> None:
    configured = ("https://ehr.example.org/jwks",)
    assert jku_to_fetch(configured, "HTTPS://EHR.example.org:443/jwks") == "https://ehr.example.org/jwks"
    assert jku_to_fetch(configured, "https://ehr.example.org/x/../jwks") == "https://ehr.example.org/jwks"
    for attack in (
        "https://ehr.example.org/jwks/../../evil",
        "https://ehr.example.org/jwks-evil",
        "https://ehr.example.org/jwks/",
        "https://ehr.example.org/jwks?x",
        "http://ehr.example.org/jwks",
        "https://ehr.example.org@evil.org/jwks",
    ):
        assert jku_to_fetch(configured, attack) is None, attack


# --- the attacks, against a real hostile server -------------------------------------------------


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def secured_app(key: ec.EllipticCurvePrivateKey, fhir_servers: list[str]) -> Any:
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    clients = {
        "clients": [
            {"issuer": ISSUER, "jwks": {"keys": [public]}, "fhir_servers": fhir_servers, "allow_http_fhir": True}
        ]
    }
    return make_app(auth_disabled=False, trusted_clients=json.dumps(clients), public_base_url=BASE)


def bearer(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + PATH, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    token = jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})
    return {"Authorization": f"Bearer {token}"}


def chart() -> Chart:
    c = Chart(patient_id="p1")
    c.calcinosis()
    c.condition("M34.1", ICD10, "CR(E)ST syndrome")
    c.mineral_panel(9.4, 4.1, 3.6)
    return c


def request(server_url: str, base_path: str, prefetch: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": server_url + base_path,
        "fhirAuthorization": {
            "access_token": FHIR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        },
        "context": {"userId": "Practitioner/doc-1", "patientId": "p1"},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def leaks(server: FhirServer, base_path: str) -> list[str]:
    """Requests the hostile server received outside the allowlisted base (with or without the token)."""
    folder = base_path.rstrip("/") + "/"
    return [s.path for s in server.seen if not (s.path + "/").startswith(folder)]


def searchset_with_next(server: FhirServer, kind: str, next_path: str) -> dict[str, Any]:
    found = [r for r in server.resources if r.get("resourceType") == kind]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in found],
        "link": [{"relation": "next", "url": server.url + next_path}],
    }


@pytest.mark.parametrize(
    ("base_path", "next_path"),
    [
        ("/b", "/b/x/../../secret/Condition?page=2"),  # dot segments in a fetched page's next link
        ("/b", "/b/x/%2e%2e/%2E%2E/secret/Condition?page=2"),  # the same, percent-encoded
        ("/exact", "/exact-evil/Condition?page=2"),  # a sibling sharing the base as a string prefix
    ],
)
def test_a_next_link_never_takes_the_token_outside_the_base(
    key: ec.EllipticCurvePrivateKey, base_path: str, next_path: str
) -> None:
    server = FhirServer(resources=chart().resources)

    def hostile(path: str) -> tuple[int, Any] | None:
        if path.startswith(base_path + "/Condition?"):
            return 200, searchset_with_next(server, "Condition", next_path)
        return None

    server.answer = hostile
    with fhir_server(server):
        app = secured_app(key, [server.url + base_path])
        response = post(app, PATH, request(server.url, base_path, {}), bearer(key))
    assert response.status_code == 412  # conditions are required; a next link we will not follow
    assert "outside the FHIR server" in response.text
    assert any(s.authorization == f"Bearer {FHIR_TOKEN}" for s in server.seen)  # the base was called
    assert leaks(server, base_path) == []


def test_a_prefetch_bundles_next_link_never_takes_the_token_outside_the_base(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    server = FhirServer(resources=chart().resources)
    with fhir_server(server):
        prefetch = prefetch_of(chart())
        prefetch["conditions"]["link"] = [{"relation": "next", "url": server.url + "/b/../evil/Condition?page=2"}]
        app = secured_app(key, [server.url + "/b"])
        response = post(app, PATH, request(server.url, "/b", prefetch), bearer(key))
    assert response.status_code == 412 and "outside the FHIR server" in response.text
    assert server.seen == [] and leaks(server, "/b") == []


def test_a_next_link_inside_the_base_is_followed_with_the_token(key: ec.EllipticCurvePrivateKey) -> None:
    """The control: the policy does not simply refuse next links."""
    server = FhirServer(resources=chart().resources)

    def paged(path: str) -> tuple[int, Any] | None:
        if path.startswith("/exact/Condition?patient="):
            return 200, searchset_with_next(server, "Condition", "/exact/x/../Condition?page=2")
        return None

    server.answer = paged
    with fhir_server(server):
        app = secured_app(key, [server.url + "/exact"])
        response = post(app, PATH, request(server.url, "/exact", {}), bearer(key))
    assert response.status_code == 200 and len(response.json()["cards"]) == 2
    assert "/exact/Condition?page=2" in [s.path for s in server.seen]  # requested in normal form
    assert all(s.authorization == f"Bearer {FHIR_TOKEN}" for s in server.seen)
    assert leaks(server, "/exact") == []


def test_a_fhir_server_outside_the_allowlist_is_never_called(key: ec.EllipticCurvePrivateKey) -> None:
    server = FhirServer(resources=chart().resources)
    with fhir_server(server):
        app = secured_app(key, [server.url + "/exact"])
        for base_path in ("/exact-evil", "/exact/../evil", "/exact/%2e%2e/evil"):
            response = post(app, PATH, request(server.url, base_path, {}), bearer(key))
            assert response.status_code == 412, base_path
    assert server.seen == []
