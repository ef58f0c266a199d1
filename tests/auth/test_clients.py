"""Trusted-client configuration (hooks.auth.clients) and the fhirServer allowlist of a client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from hooks.auth import (
    AuthConfigError,
    TrustedClient,
    fhir_server_allowed,
    load_trusted_clients,
)
from tests.auth.tokens import (
    ISS,
    JKU,
    KID,
    SANDBOX_ISS,
    SANDBOX_JKU,
    jwk_set,
    make_verifier,
    public_jwk,
)

# --- configuration -------------------------------------------------------------------------------


def config(**entry: Any) -> str:
    return json.dumps({"clients": [{"issuer": ISS, "jku": [JKU], **entry}]})


def test_load_trusted_clients_inline_and_from_a_file(tmp_path: Path, ec384: ec.EllipticCurvePrivateKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.jwks.json").write_text(json.dumps(jwk_set(public_jwk(ec384))))
    document = {
        "clients": [
            {
                "issuer": ISS,
                "jwks_file": "keys/ehr.jwks.json",
                "tenant": "org-1",
                "algorithms": ["ES384"],
                "fhir_servers": ["https://fhir.example.org/r4"],
            },
            {
                "issuer": SANDBOX_ISS,
                "jku": [SANDBOX_JKU],
                "fhir_servers": ["http://localhost:8080/fhir/"],
                "allow_http_fhir": True,
            },
        ]
    }
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(document))
    ehr, sandbox = load_trusted_clients(str(path))
    assert ehr.jwks == jwk_set(public_jwk(ec384)) and ehr.tenant == "org-1" and ehr.algorithms == ("ES384",)
    assert ehr.fhir_servers == ("https://fhir.example.org/r4",) and ehr.jku == ()
    assert sandbox.allow_http_fhir and sandbox.algorithms == ("RS384", "ES384")
    assert load_trusted_clients(config()) == (TrustedClient(issuer=ISS, jku=(JKU,)),)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (config(algorithms=["RS384", "HS256"]), "clients\\[0\\] \\(issuer 'https://ehr.example.org'\\).*HS256"),
        (config(algorithms=["none"]), "'none'"),
        (config(algorithms=["PS512"]), "not supported"),
        (config(algorithms=[]), "must not be empty"),
        (json.dumps({"clients": [{"jku": [JKU]}]}), "clients\\[0\\]: 'issuer' is required"),
        (json.dumps({"clients": [{"issuer": "", "jku": [JKU]}]}), "issuer"),
        ('{"clients": [', "not valid JSON"),
        ("{}", "exactly one field, 'clients'"),
        (json.dumps({"clients": []}), "no clients"),
        (json.dumps({"clients": ["x"]}), "must be an object"),
        (config(jwks_file="/nonexistent/jwks.json"), "cannot read jwks_file '/nonexistent/jwks.json'"),
        (config(jwks={"keys": []}, jwks_file="x.json"), "not both"),
        (config(tennant="org-1"), "unknown field 'tennant'"),
        (config(jku=JKU), "'jku' must be a list"),
        (config(jku=["http://ehr.example.org/jwks"]), "https"),
        (config(jku=["https://user:pw@ehr.example.org/jwks"]), "https"),
        (config(jku=[JKU, JKU]), "twice"),
        (json.dumps({"clients": [{"issuer": ISS}]}), "needs 'jku'"),
        (config(fhir_servers=["http://fhir.example.org"]), "allow_http_fhir"),
        (config(fhir_servers=["ftp://fhir.example.org"]), "not an http\\(s\\) URL"),
        (config(fhir_servers=["https://fhir.example.org/r4?x=1"]), "not an http\\(s\\) URL"),
        (config(allow_http_fhir="yes"), "true or false"),
        (config(tenant=5), "'tenant' must be a string"),
        (json.dumps({"clients": [{"issuer": ISS, "jku": [JKU]}, {"issuer": ISS, "jku": [JKU]}]}), "configured twice"),
        (config(jwks={"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}), "no 'kid'"),
        (config(jwks={"keys": [{"kty": "EC", "crv": "P-384", "kid": "k", "x": "AA", "y": "AA"}]}), "coordinates"),
        (config(jwks={"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}), "private key material"),
        (config(jwks={"keys": [{"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": "AA"}]}), "unsupported key type"),
        (config(jwks=[1]), "'jwks' must be a JWK Set"),
    ],
)
def test_configuration_errors_name_the_entry_and_the_problem(source: str, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        load_trusted_clients(source)


def test_configuration_file_errors(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AuthConfigError, match="cannot read trusted-clients file"):
        load_trusted_clients(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"clients": [{"issuer": "x",}]}')
    with pytest.raises(AuthConfigError, match=r"not valid JSON \(.* line 1 column"):
        load_trusted_clients(str(bad))
    (tmp_path / "broken.jwks.json").write_text("{")
    (tmp_path / "clients.json").write_text(config(jwks_file="broken.jwks.json"))
    with pytest.raises(AuthConfigError, match=r"jwks_file 'broken\.jwks\.json' is not valid JSON"):
        load_trusted_clients(str(tmp_path / "clients.json"))


def test_static_keys_are_checked_when_the_client_is_built(
    rsa_key: rsa.RSAPrivateKey, ec256: ec.EllipticCurvePrivateKey
) -> None:
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    private["kid"] = KID
    with pytest.raises(AuthConfigError, match="private key material"):
        TrustedClient(issuer=ISS, jwks=jwk_set(private))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AuthConfigError, match="shorter than 2048"):
        TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(small)))
    with pytest.raises(AuthConfigError, match="twice"):
        TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key), public_jwk(rsa_key)))
    with pytest.raises(AuthConfigError, match="no key in 'jwks' can verify"):
        TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec256)))  # P-256 key, ES384/RS384 only
    with pytest.raises(AuthConfigError, match="configured twice"):
        client = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)))
        make_verifier(client, client)


def test_error_messages_never_contain_key_material(rsa_key: rsa.RSAPrivateKey) -> None:
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    private["kid"] = KID
    with pytest.raises(AuthConfigError) as caught:
        load_trusted_clients(config(jwks=jwk_set(private)))
    for member in ("n", "d", "p", "q"):
        assert private[member][:16] not in str(caught.value)


# --- SSRF guard ----------------------------------------------------------------------------------


FHIR_CLIENT = TrustedClient(
    issuer=ISS,
    jku=(JKU,),
    fhir_servers=("https://fhir.example.org/r4", "https://fhir.example.org/tenants/", "https://10.1.2.3:8443/fhir"),
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fhir.example.org/r4", True),
        ("https://fhir.example.org/r4/", True),
        ("HTTPS://FHIR.example.org/r4", True),
        ("https://fhir.example.org:443/r4", True),
        ("https://fhir.example.org/tenants/a", True),
        ("https://fhir.example.org/tenants/a/b/", True),
        ("https://fhir.example.org/tenants/", True),
        ("https://10.1.2.3:8443/fhir", True),
        ("https://fhir.example.org/r4/Patient", False),  # exact entry: no sub-paths
        ("https://fhir.example.org/r4x", False),
        ("https://fhir.example.org/R4", False),
        ("https://fhir.example.org/tenantsX/a", False),
        ("https://fhir.example.org/tenants/../r5", False),
        ("https://fhir.example.org/tenants/%2e%2e/r5", False),
        ("https://fhir.example.org/tenants/a%2F..%2Fb", False),
        ("https://fhir.example.org/tenants/a\\b", False),
        ("http://fhir.example.org/r4", False),
        ("https://fhir.example.org:8443/r4", False),
        ("https://fhir.example.org.evil.org/r4", False),
        ("https://evil.org/r4", False),
        ("https://user:pw@fhir.example.org/r4", False),
        ("https://fhir.example.org@evil.org/r4", False),
        ("https://fhir.example.org/r4#frag", False),
        ("https://fhir.example.org/r4#", False),
        ("https://fhir.example.org/r4?_format=json", False),
        ("https://fhir.example.org/r4 ", False),
        ("https://fhir.example.org/r4\n", False),
        ("ftp://fhir.example.org/r4", False),
        ("file:///etc/passwd", False),
        ("gopher://fhir.example.org/r4", False),
        ("//fhir.example.org/r4", False),
        ("fhir.example.org/r4", False),
        ("https://10.1.2.3/fhir", False),
        ("https://10.1.2.3:99999/fhir", False),
        ("https:///r4", False),
        ("", False),
    ],
)
def test_fhir_server_allowed(url: str, allowed: bool) -> None:
    assert fhir_server_allowed(FHIR_CLIENT, url) is allowed


def test_fhir_server_http_only_when_the_client_allows_it() -> None:
    local = TrustedClient(
        issuer="local", jku=(JKU,), fhir_servers=("http://localhost:8080/fhir",), allow_http_fhir=True
    )
    assert fhir_server_allowed(local, "http://localhost:8080/fhir/")
    assert fhir_server_allowed(local, "http://LOCALHOST:8080/fhir")
    assert not fhir_server_allowed(local, "https://localhost:8080/fhir")  # scheme is part of the match
    assert not fhir_server_allowed(local, "http://localhost:8081/fhir")


def test_fhir_server_without_a_client_allows_nothing() -> None:
    assert not fhir_server_allowed(None, "https://fhir.example.org/r4")
    assert not fhir_server_allowed(TrustedClient(issuer=ISS, jku=(JKU,)), "https://fhir.example.org/r4")
