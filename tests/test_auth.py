"""EHR authentication: the CDS Hooks bearer JWT and the `fhirServer` SSRF guard.

Real keys (RSA 2048, EC P-384 and P-256) are generated once per module and kept in memory only;
tokens are signed with PyJWT. The JWK Set endpoint is served by respx, which also plays the
fetcher's edge cases (timeouts, errors, oversize bodies, redirects). Time is injected, never slept.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hooks.auth import (
    REASONS,
    AuthConfigError,
    AuthError,
    InMemoryReplayCache,
    JwksFetcher,
    JwtVerifier,
    TrustedClient,
    VerifiedToken,
    bearer_token,
    fhir_server_allowed,
    load_trusted_clients,
)

T = TypeVar("T")

NOW = 1_800_000_000.0
ISS = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/calcinosis"
JKU = "https://ehr.example.org/.well-known/jwks.json"
KID = "key-1"

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
# The sandbox's published public key (cds-hooks/sandbox build/.well-known/jwks.json): a static pin
# for offline use must load.
SANDBOX_PUBLIC_JWK = {
    "kty": "EC",
    "use": "sig",
    "crv": "P-384",
    "kid": SANDBOX_KID,
    "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
    "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    "alg": "ES384",
}


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


# --- keys and tokens -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_other() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec384_other() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Any, kid: str = KID, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private key (never its private members)."""
    public = key.public_key()
    jwk = RSAAlgorithm.to_jwk(public, as_dict=True) if isinstance(public, rsa.RSAPublicKey) else None
    if jwk is None:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    jwk.update(kid=kid, **extra)
    assert "d" not in jwk
    return jwk


def jwk_set(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


def claims(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": str(uuid.uuid4()),
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def sign(key: Any, alg: str = "RS384", payload: dict[str, Any] | None = None, **header: Any) -> str:
    """A token signed by `key`; header fields given as None are left out."""
    fields: dict[str, Any] = {"typ": "JWT", "kid": KID}
    fields.update(header)
    fields = {k: v for k, v in fields.items() if v is not None}
    return jwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=fields)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)))


# For verifiers whose keys are all static: never sends a request (and building an AsyncClient, with
# its TLS context, for every test would cost more than the tests themselves).
UNUSED_HTTP = httpx.AsyncClient()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_verifier(
    *clients: TrustedClient,
    http: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    fetcher: JwksFetcher | None = None,
    **options: Any,
) -> JwtVerifier:
    clock = clock or Clock()
    fetcher = fetcher or JwksFetcher(http or UNUSED_HTTP, clock=clock)
    return JwtVerifier(clients, InMemoryReplayCache(clock=clock), fetcher, clock=clock, **options)


def refused(verifier: JwtVerifier, token: str, audience: str = AUD) -> str:
    """The reason a token is refused; also checks that no part of the token leaks into the error."""
    with pytest.raises(AuthError) as caught:
        run(verifier.verify(token, audience))
    error = caught.value
    assert error.reason in REASONS
    assert str(error) == error.reason
    for part in token.split("."):
        if len(part) > 8:
            assert part not in repr(error) and part not in str(error.args)
    return error.reason


@pytest.fixture()
def rsa_client(rsa_key: rsa.RSAPrivateKey) -> TrustedClient:
    return TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)))


@pytest.fixture()
def ec_client(ec384: ec.EllipticCurvePrivateKey) -> TrustedClient:
    return TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec384)))


@pytest.fixture()
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


# --- valid tokens --------------------------------------------------------------------------------


def test_valid_rs384_token_passes(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    payload = claims(sub="ehr-client", tenant="org-1")
    verified = run(make_verifier(rsa_client).verify(sign(rsa_key, "RS384", payload), AUD))
    assert verified == VerifiedToken(
        client=rsa_client,
        issuer=ISS,
        jti=payload["jti"],
        tenant="org-1",
        subject="ehr-client",
        expires_at=NOW + 300,
    )


def test_valid_es384_token_passes(ec384: ec.EllipticCurvePrivateKey, ec_client: TrustedClient) -> None:
    verified = run(make_verifier(ec_client).verify(sign(ec384, "ES384"), AUD))
    assert verified.issuer == ISS and verified.tenant is None and verified.subject is None


def test_audience_may_be_a_list_containing_ours(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    token = sign(rsa_key, payload=claims(aud=["https://other.example.org/x", AUD]))
    assert run(make_verifier(rsa_client).verify(token, AUD)).issuer == ISS


def test_extra_claims_and_typ_spellings_are_tolerated(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    verifier = make_verifier(rsa_client)
    epic_like = claims(nbf=int(NOW) - 5, sub="client-id", **{"epic.eci": "x", "deployment_id": 7})
    assert run(verifier.verify(sign(rsa_key, payload=epic_like), AUD))
    assert run(verifier.verify(sign(rsa_key, typ="jwt"), AUD))
    assert run(verifier.verify(sign(rsa_key, typ=None), AUD))


def test_cds_hooks_sandbox_token_with_its_jwks_served_over_https(
    ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter
) -> None:
    client = TrustedClient(issuer=SANDBOX_ISS, jku=(SANDBOX_JKU,))
    route = mock.get(SANDBOX_JKU).mock(
        return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384, SANDBOX_KID, use="sig", alg="ES384")))
    )
    audience = "http://localhost:8000/cds-services/calcinosis"

    def sandbox_token() -> str:
        # The shape of cds-hooks/sandbox's jwt-generator.js.
        payload = {
            "iss": SANDBOX_ISS,
            "aud": audience,
            "exp": round(NOW) + 300,
            "iat": round(NOW),
            "jti": str(uuid.uuid4()),
        }
        return sign(ec384, "ES384", payload, kid=SANDBOX_KID, jku=SANDBOX_JKU)

    async def scenario() -> list[VerifiedToken]:
        async with httpx.AsyncClient() as http:
            verifier = make_verifier(client, http=http)
            return [await verifier.verify(sandbox_token(), audience) for _ in range(3)]

    results = run(scenario())
    assert [r.issuer for r in results] == [SANDBOX_ISS] * 3
    assert route.call_count == 1  # cached: one fetch for three calls
    assert route.calls[0].request.headers["accept"].startswith("application/jwk-set+json")


def test_the_published_sandbox_jwks_loads_as_a_static_pin() -> None:
    config = {"clients": [{"issuer": SANDBOX_ISS, "jku": [SANDBOX_JKU], "jwks": {"keys": [SANDBOX_PUBLIC_JWK]}}]}
    (client,) = load_trusted_clients(json.dumps(config))
    assert client.jku == (SANDBOX_JKU,) and client.algorithms == ("RS384", "ES384")


def test_a_static_key_is_preferred_over_the_jku(ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter) -> None:
    """Offline use of the sandbox: its jku still points to the internet, the key is pinned."""
    client = TrustedClient(issuer=SANDBOX_ISS, jku=(SANDBOX_JKU,), jwks=jwk_set(public_jwk(ec384, SANDBOX_KID)))
    route = mock.get(SANDBOX_JKU).mock(return_value=httpx.Response(500))
    token = sign(ec384, "ES384", claims(iss=SANDBOX_ISS), kid=SANDBOX_KID, jku=SANDBOX_JKU)
    assert run(make_verifier(client).verify(token, AUD)).issuer == SANDBOX_ISS
    assert route.call_count == 0


# --- claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "https://cds.example.org/cds-services/other"}, "bad-audience"),
        ({"aud": AUD + "/"}, "bad-audience"),
        ({"aud": ["https://a.example.org", "https://b.example.org"]}, "bad-audience"),
        ({"aud": [AUD, 7]}, "malformed"),
        ({"exp": int(NOW) - 61, "iat": int(NOW) - 300}, "expired"),
        ({"iat": int(NOW) + 120, "exp": int(NOW) + 400}, "iat-in-future"),
        ({"nbf": int(NOW) + 120}, "not-yet-valid"),
        ({"exp": int(NOW) + 3601}, "lifetime-too-long"),
        ({"exp": float("inf")}, "malformed"),
        ({"exp": "soon"}, "malformed"),
        ({"jti": None}, "missing-claim"),
        ({"jti": ""}, "malformed"),
        ({"jti": "x" * 300}, "malformed"),
        ({"aud": None}, "missing-claim"),
        ({"exp": None}, "missing-claim"),
        ({"iat": None}, "missing-claim"),
        ({"iss": None}, "missing-claim"),
        ({"iss": "https://unknown.example.org"}, "unknown-issuer"),
        ({"sub": 12}, "malformed"),
    ],
)
def test_claims_that_are_refused(
    rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient, overrides: dict[str, Any], reason: str
) -> None:
    payload = claims()
    payload.update(overrides)
    payload = {k: v for k, v in payload.items() if v is not None}
    assert refused(make_verifier(rsa_client), sign(rsa_key, payload=payload)) == reason


def test_leeway_applies_to_exp_and_iat(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    verifier = make_verifier(rsa_client)
    assert run(verifier.verify(sign(rsa_key, payload=claims(exp=int(NOW) - 30, iat=int(NOW) - 300)), AUD))
    assert run(verifier.verify(sign(rsa_key, payload=claims(iat=int(NOW) + 30, exp=int(NOW) + 330)), AUD))
    strict = make_verifier(rsa_client, leeway=0)
    assert refused(strict, sign(rsa_key, payload=claims(exp=int(NOW), iat=int(NOW) - 300))) == "expired"


def test_replayed_jti_is_refused_and_only_valid_tokens_use_up_a_jti(
    rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient
) -> None:
    verifier = make_verifier(rsa_client)
    jti = str(uuid.uuid4())
    # A token refused for another reason does not burn its jti.
    assert refused(verifier, sign(rsa_key, payload=claims(jti=jti, aud="https://elsewhere"))) == "bad-audience"
    token = sign(rsa_key, payload=claims(jti=jti))
    assert run(verifier.verify(token, AUD)).jti == jti
    assert refused(verifier, token) == "replayed-jti"
    # The same jti in a freshly signed token is a replay too.
    assert refused(verifier, sign(rsa_key, payload=claims(jti=jti, exp=int(NOW) + 200))) == "replayed-jti"


def test_the_same_jti_from_two_issuers_is_not_a_replay(
    rsa_key: rsa.RSAPrivateKey, ec384: ec.EllipticCurvePrivateKey
) -> None:
    other = "https://other-ehr.example.org"
    verifier = make_verifier(
        TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key))),
        TrustedClient(issuer=other, jwks=jwk_set(public_jwk(ec384))),
    )
    assert run(verifier.verify(sign(rsa_key, payload=claims(jti="same")), AUD))
    assert run(verifier.verify(sign(ec384, "ES384", claims(iss=other, jti="same")), AUD))


def test_replay_is_remembered_until_exp_plus_leeway(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    clock = Clock()
    replay = InMemoryReplayCache(clock=clock)
    verifier = JwtVerifier([rsa_client], replay, JwksFetcher(UNUSED_HTTP, clock=clock), clock=clock)
    token = sign(rsa_key)
    run(verifier.verify(token, AUD))
    clock.now = NOW + 300 + 59  # expired but within leeway: still a replay
    assert refused(verifier, token) == "replayed-jti"
    clock.now = NOW + 300 + 61
    assert refused(verifier, token) == "expired"


def test_tenant_must_match_when_the_client_has_one(rsa_key: rsa.RSAPrivateKey) -> None:
    client = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)), tenant="org-1")
    verifier = make_verifier(client)
    assert run(verifier.verify(sign(rsa_key, payload=claims(tenant="org-1")), AUD)).tenant == "org-1"
    assert refused(verifier, sign(rsa_key, payload=claims(tenant="org-2"))) == "tenant-mismatch"
    assert refused(verifier, sign(rsa_key, payload=claims())) == "tenant-mismatch"


def test_max_lifetime_is_configurable(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    verifier = make_verifier(rsa_client, max_lifetime=300)
    assert run(verifier.verify(sign(rsa_key), AUD))
    assert refused(verifier, sign(rsa_key, payload=claims(exp=int(NOW) + 301))) == "lifetime-too-long"


# --- header, algorithm and key -------------------------------------------------------------------


def test_unsigned_alg_none_token_is_refused(rsa_client: TrustedClient) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": KID}
    verifier = make_verifier(rsa_client)
    assert refused(verifier, forge(header, claims(), b"")) == "alg-not-allowed"
    assert refused(verifier, forge({**header, "alg": "None"}, claims(), b"")) == "alg-not-allowed"
    assert refused(verifier, jwt.encode(claims(), None, algorithm="none", headers={"kid": KID})) == "alg-not-allowed"


def test_hs256_signed_with_the_public_key_pem_is_refused(
    rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient, ec384: ec.EllipticCurvePrivateKey
) -> None:
    """The key-confusion attack: the attacker knows the public key and uses it as an HMAC secret."""
    verifier = make_verifier(rsa_client)
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
        header = {"alg": alg, "typ": "JWT", "kid": KID}
        head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims()).encode())
        token = head + "." + b64(hmac.new(pem, head.encode(), digest).digest())
        assert refused(verifier, token) == "alg-not-allowed"
    # Nor can a configuration open the door: HMAC is refused when a client is built...
    with pytest.raises(AuthConfigError, match="HS256"):
        TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)), algorithms=("RS384", "HS256"))
    # ...and the fetcher hands out keys for asymmetric algorithms only.
    fetcher = JwksFetcher(UNUSED_HTTP)
    with pytest.raises(AuthError, match="alg-not-allowed"):
        run(fetcher.key_for(JKU, KID, "HS256"))


def test_tampered_payload_fails_the_signature(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    head, _, signature = sign(rsa_key, payload=claims(tenant="org-1")).split(".")
    tampered = b64(json.dumps(claims(tenant="org-2")).encode())
    assert refused(make_verifier(rsa_client), f"{head}.{tampered}.{signature}") == "bad-signature"


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(
    rsa_other: rsa.RSAPrivateKey,
    ec384_other: ec.EllipticCurvePrivateKey,
    rsa_client: TrustedClient,
    ec_client: TrustedClient,
) -> None:
    assert refused(make_verifier(rsa_client), sign(rsa_other, "RS384")) == "bad-signature"
    assert refused(make_verifier(ec_client), sign(ec384_other, "ES384")) == "bad-signature"


def test_kid_is_required(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    verifier = make_verifier(rsa_client)
    assert refused(verifier, sign(rsa_key, kid=None)) == "missing-kid"
    assert refused(verifier, sign(rsa_key, kid="")) == "missing-kid"


def test_unknown_kid_without_jku_is_refused(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    assert refused(make_verifier(rsa_client), sign(rsa_key, kid="key-2")) == "unknown-kid"


def test_rs256_only_when_the_client_lists_it(rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient) -> None:
    token = sign(rsa_key, "RS256")
    assert refused(make_verifier(rsa_client), token) == "alg-not-allowed"
    listing = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)), algorithms=("RS256", "RS384"))
    assert run(make_verifier(listing).verify(token, AUD)).issuer == ISS


def test_es256_only_when_listed_and_only_with_a_p256_key(
    ec256: ec.EllipticCurvePrivateKey, ec384: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec256, "ES256")
    default = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec256)), algorithms=("ES384", "ES256"))
    assert run(make_verifier(default).verify(token, AUD))
    assert refused(make_verifier(TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec384)))), token) == (
        "alg-not-allowed"
    )
    # ES256 declared, but the kid names a P-384 key: the curve must match the algorithm.
    wrong_curve = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec384)), algorithms=("ES384", "ES256"))
    assert refused(make_verifier(wrong_curve), token) == "key-mismatch"


def test_alg_family_must_match_the_key_type(
    rsa_key: rsa.RSAPrivateKey, ec384: ec.EllipticCurvePrivateKey, rsa_client: TrustedClient
) -> None:
    # ES384 token whose kid names the client's RSA key.
    assert refused(make_verifier(rsa_client), sign(ec384, "ES384")) == "key-mismatch"
    # A JWK whose own `alg` says RS256 cannot verify RS384.
    bound = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key, alg="RS256")), algorithms=("RS384", "RS256"))
    assert refused(make_verifier(bound), sign(rsa_key, "RS384")) == "key-mismatch"
    # An encryption key is not a signing key.
    enc = TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key, use="enc"), public_jwk(ec384, "other")))
    assert refused(make_verifier(enc), sign(rsa_key, "RS384")) == "key-mismatch"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"typ": "at+jwt"}, "typ-not-allowed"),
        ({"typ": 1}, "typ-not-allowed"),
        ({"kid": 5}, "malformed"),
        ({"jku": ["https://x"]}, "malformed"),
        ({"crit": ["exp"], "exp": 1}, "malformed"),
        ({"alg": "PS384"}, "alg-not-allowed"),
        ({"alg": "RS512"}, "alg-not-allowed"),
    ],
)
def test_headers_that_are_refused(
    rsa_key: rsa.RSAPrivateKey, rsa_client: TrustedClient, header: dict[str, Any], reason: str
) -> None:
    fields = {"alg": "RS384", "typ": "JWT", "kid": KID, **header}
    head = b64(json.dumps(fields).encode()) + "." + b64(json.dumps(claims()).encode())
    signature = rsa_key.sign(head.encode(), *_pkcs1_sha384())
    assert refused(make_verifier(rsa_client), head + "." + b64(signature)) == reason


def _pkcs1_sha384() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA384()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "e30.e30.",
        "W10.e30.AA",
        "x" * 20_000,
        "eyJhbGciOiJSUzM4NCJ9.bm90IGpzb24.AA",
    ],
)
def test_garbage_is_malformed_or_refused(rsa_client: TrustedClient, token: str) -> None:
    assert refused(make_verifier(rsa_client), token) in ("malformed", "alg-not-allowed")


def test_unknown_issuer_is_refused_before_any_key_lookup(
    ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter
) -> None:
    route = mock.get(url__startswith="https://").mock(return_value=httpx.Response(200, json=jwk_set()))
    client = TrustedClient(issuer=SANDBOX_ISS, jku=(SANDBOX_JKU,))
    token = sign(ec384, "ES384", claims(iss="https://evil.example.org"), jku="https://evil.example.org/jwks")
    with pytest.raises(AuthError) as caught:
        run(make_verifier(client).verify(token, AUD))
    assert caught.value.reason == "unknown-issuer" and caught.value.issuer is None
    assert route.call_count == 0


def test_jku_not_on_the_list_is_never_fetched(ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter) -> None:
    route = mock.get(url__startswith="https://").mock(return_value=httpx.Response(200, json=jwk_set()))
    client = TrustedClient(issuer=SANDBOX_ISS, jku=(SANDBOX_JKU,))
    for jku in (
        "https://evil.example.org/.well-known/jwks.json",
        "http://sandbox.cds-hooks.org/.well-known/jwks.json",
        SANDBOX_JKU + "?x=1",
        "https://sandbox.cds-hooks.org/.well-known/jwks.json/",
        "http://169.254.169.254/latest/meta-data/",
    ):
        token = sign(ec384, "ES384", claims(iss=SANDBOX_ISS), kid=SANDBOX_KID, jku=jku)
        with pytest.raises(AuthError) as caught:
            run(make_verifier(client).verify(token, AUD))
        assert caught.value.reason == "jku-not-allowed" and caught.value.issuer == SANDBOX_ISS
    assert route.call_count == 0


# --- JWKS fetching -------------------------------------------------------------------------------


def jku_client() -> TrustedClient:
    return TrustedClient(issuer=ISS, jku=(JKU,))


def jku_token(key: Any, kid: str = KID, alg: str = "ES384", now: float = NOW) -> str:
    return sign(key, alg, claims(iat=int(now), exp=int(now) + 300), kid=kid, jku=JKU)


def test_unknown_kid_refetches_once_then_fails_and_refetches_are_rate_limited(
    ec384: ec.EllipticCurvePrivateKey, ec384_other: ec.EllipticCurvePrivateKey, mock: respx.MockRouter
) -> None:
    route = mock.get(JKU).mock(return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384))))
    clock = Clock()

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = make_verifier(jku_client(), http=http, clock=clock)
            await verifier.verify(jku_token(ec384), AUD)
            assert route.call_count == 1
            # Right after a fetch, an unknown kid is refused without asking again.
            with pytest.raises(AuthError, match="unknown-kid"):
                await verifier.verify(jku_token(ec384_other, "key-2"), AUD)
            assert route.call_count == 1
            # Later, an unknown kid gets one refetch, then is refused.
            clock.now += 31
            with pytest.raises(AuthError, match="unknown-kid"):
                await verifier.verify(jku_token(ec384_other, "key-2", now=clock.now), AUD)
            assert route.call_count == 2
            # Made-up kids in a burst: no more fetches within the interval.
            for n in range(5):
                with pytest.raises(AuthError, match="unknown-kid"):
                    await verifier.verify(jku_token(ec384_other, f"made-up-{n}", now=clock.now), AUD)
            clock.now += 29
            with pytest.raises(AuthError, match="unknown-kid"):
                await verifier.verify(jku_token(ec384_other, "key-2", now=clock.now), AUD)
            assert route.call_count == 2
            # The EHR rotates its keys; after the interval the new kid is fetched and accepted.
            rotated = jwk_set(public_jwk(ec384), public_jwk(ec384_other, "key-2"))
            route.mock(return_value=httpx.Response(200, json=rotated))
            clock.now += 2
            await verifier.verify(jku_token(ec384_other, "key-2", now=clock.now), AUD)
            assert route.call_count == 3
            # Known keys never cause a fetch.
            await verifier.verify(jku_token(ec384, now=clock.now), AUD)
            assert route.call_count == 3

    run(scenario())


def test_the_cache_expires_after_ttl_and_a_failed_refresh_keeps_the_old_keys(
    ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter
) -> None:
    route = mock.get(JKU).mock(return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384))))
    clock = Clock()

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = make_verifier(jku_client(), http=http, clock=clock)
            await verifier.verify(jku_token(ec384), AUD)
            clock.now += 599
            await verifier.verify(jku_token(ec384, now=clock.now), AUD)
            assert route.call_count == 1
            route.mock(return_value=httpx.Response(503))
            clock.now += 2  # past the 600 s TTL: refresh attempted, fails, old keys still serve
            await verifier.verify(jku_token(ec384, now=clock.now), AUD)
            assert route.call_count == 2
            await verifier.verify(jku_token(ec384, now=clock.now), AUD)  # no retry within the interval
            assert route.call_count == 2

    run(scenario())


FETCH_FAILURE_LOG = {
    "connect-timeout": "timed out",
    "read-timeout": "timed out",
    "connect-error": "unreachable (ConnectError)",
    "slow-body": "timed out",
    "500": "HTTP 500",
    "404": "HTTP 404",
    "redirect": "redirected (302); redirects are not followed",
    "oversize": "larger than the size cap",
    "not-json": "not JSON",
    "not-object": "not a JWK Set",
    "keys-not-list": "not a JWK Set",
}


def _slow(request: httpx.Request) -> Awaitable[httpx.Response]:
    async def answer() -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, json=jwk_set())

    return answer()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("refused"),
        "slow",
        httpx.Response(500),
        httpx.Response(404),
        httpx.Response(302, headers={"Location": "https://elsewhere.example.org/jwks.json"}),
        httpx.Response(200, content=b"x" * 70_000),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"keys": "none"}),
    ],
    ids=list(FETCH_FAILURE_LOG),
)
def test_jwks_fetch_failures_are_jwks_unavailable(
    ec384: ec.EllipticCurvePrivateKey,
    mock: respx.MockRouter,
    answer: Any,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = mock.get(JKU)
    if answer == "slow":
        route.mock(side_effect=_slow)
    elif isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    elsewhere = mock.get("https://elsewhere.example.org/jwks.json").mock(
        return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384)))
    )

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            fetcher = JwksFetcher(http, timeout=0.05)
            verifier = make_verifier(jku_client(), fetcher=fetcher)
            with pytest.raises(AuthError, match="jwks-unavailable"):
                await verifier.verify(jku_token(ec384), AUD)

    run(scenario())
    assert elsewhere.call_count == 0  # redirects are not followed
    # The operator's log says why (and names the configured jku, nothing from the token).
    expected = FETCH_FAILURE_LOG[request.node.callspec.id]
    assert [r.getMessage() for r in caplog.records] == [f"JWKS fetch failed jku={JKU} reason={expected}"]


def test_oversize_body_without_content_length_is_cut_off(
    ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter
) -> None:
    big = json.dumps(jwk_set(*(public_jwk(ec384, f"k{n}") for n in range(400)))).encode()

    async def chunks() -> Any:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    mock.get(JKU).mock(return_value=httpx.Response(200, content=chunks()))

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="jwks-unavailable"):
                await JwksFetcher(http).key_for(JKU, "k1", "ES384")

    assert len(big) > 65536
    run(scenario())


def test_failed_fetches_are_rate_limited_too(ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter) -> None:
    route = mock.get(JKU).mock(return_value=httpx.Response(500))
    clock = Clock()

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            fetcher = JwksFetcher(http, clock=clock)
            for _ in range(3):
                with pytest.raises(AuthError, match="jwks-unavailable"):
                    await fetcher.key_for(JKU, KID, "ES384")
            assert route.call_count == 1
            route.mock(return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384))))
            clock.now += 30
            assert isinstance(await fetcher.key_for(JKU, KID, "ES384"), ec.EllipticCurvePublicKey)
            assert route.call_count == 2

    run(scenario())


def test_concurrent_first_requests_share_one_fetch(ec384: ec.EllipticCurvePrivateKey, mock: respx.MockRouter) -> None:
    route = mock.get(JKU).mock(return_value=httpx.Response(200, json=jwk_set(public_jwk(ec384))))

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = make_verifier(jku_client(), http=http)
            results = await asyncio.gather(*(verifier.verify(jku_token(ec384), AUD) for _ in range(10)))
            assert len(results) == 10

    run(scenario())
    assert route.call_count == 1


def test_fetched_keys_keep_only_their_public_half_and_skip_unusable_entries(
    ec384: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    private = ECAlgorithm.to_jwk(ec384, as_dict=True)  # includes "d": a careless publisher
    private["kid"] = KID
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    keys = [
        "junk",
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        public_jwk(small, "small"),
        {"kty": "EC", "crv": "P-384", "kid": "bad-point", "x": "AA", "y": "AA"},
        private,
    ]
    mock.get(JKU).mock(return_value=httpx.Response(200, json={"keys": keys}))

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            fetcher = JwksFetcher(http)
            key = await fetcher.key_for(JKU, KID, "ES384")
            assert isinstance(key, ec.EllipticCurvePublicKey)
            for kid, alg in (("sym", "RS384"), ("small", "RS384"), ("bad-point", "ES384")):
                with pytest.raises(AuthError, match="key-mismatch"):
                    await fetcher.key_for(JKU, kid, alg)

    run(scenario())


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


# --- replay cache --------------------------------------------------------------------------------


def test_in_memory_replay_cache_forgets_expired_keys_and_stays_bounded() -> None:
    clock = Clock()
    cache = InMemoryReplayCache(max_entries=3, clock=clock)

    async def scenario() -> None:
        assert await cache.first_use("a", NOW + 10)
        assert not await cache.first_use("a", NOW + 10)
        clock.now += 11
        assert await cache.first_use("a", NOW + 100)  # expired, so new again
        assert not await cache.first_use("a", NOW + 100)
        for key in ("b", "c", "d", "e"):
            assert await cache.first_use(key, NOW + 50)
        assert len(cache) == 3
        assert not await cache.first_use("e", NOW + 50)

    run(scenario())


def test_in_memory_replay_cache_under_concurrency() -> None:
    cache = InMemoryReplayCache()

    async def scenario() -> list[bool]:
        return list(await asyncio.gather(*(cache.first_use("same", NOW + 60) for _ in range(50))))

    results = asyncio.run(scenario())
    assert results.count(True) == 1


# --- bearer header -------------------------------------------------------------------------------


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc.def.ghi ") == "abc.def.ghi"
    for header in (None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer a b", "abc.def.ghi"):
        with pytest.raises(AuthError, match="missing-token"):
            bearer_token(header)


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


def test_reasons_are_listed() -> None:
    assert len(set(REASONS)) == len(REASONS)
    assert all(reason == reason.lower() and " " not in reason for reason in REASONS)
