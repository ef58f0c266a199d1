"""Keys, tokens and verifiers shared by the authentication tests (real keys, real signatures;
time is injected, never slept)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hooks.auth import (
    REASONS,
    AuthError,
    InMemoryReplayCache,
    JwksFetcher,
    JwtVerifier,
    TrustedClient,
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
