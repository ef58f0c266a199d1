"""JWK Set fetching (hooks.auth.keys): cache, refetch on an unknown kid and its rate limit, failures
(timeouts, errors, oversize bodies, redirects) played by respx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from hooks.auth import (
    AuthError,
    JwksFetcher,
    TrustedClient,
)
from tests.auth.tokens import (
    AUD,
    ISS,
    JKU,
    KID,
    NOW,
    Clock,
    claims,
    jwk_set,
    make_verifier,
    public_jwk,
    run,
    sign,
)

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
