"""The CDS Hooks bearer JWT checks (hooks.auth.verify): valid tokens, claims, header, algorithm and
key, and the Authorization header."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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
    load_trusted_clients,
)
from tests.auth.tokens import (
    AUD,
    ISS,
    JKU,
    KID,
    NOW,
    SANDBOX_ISS,
    SANDBOX_JKU,
    SANDBOX_KID,
    SANDBOX_PUBLIC_JWK,
    UNUSED_HTTP,
    Clock,
    b64,
    claims,
    forge,
    jwk_set,
    make_verifier,
    public_jwk,
    refused,
    run,
    sign,
)

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


# --- bearer header -------------------------------------------------------------------------------


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc.def.ghi ") == "abc.def.ghi"
    for header in (None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer a b", "abc.def.ghi"):
        with pytest.raises(AuthError, match="missing-token"):
            bearer_token(header)


def test_reasons_are_listed() -> None:
    assert len(set(REASONS)) == len(REASONS)
    assert all(reason == reason.lower() and " " not in reason for reason in REASONS)
