"""Authentication of the EHR: the CDS Hooks 2.0.1 bearer JWT, and the SSRF guard on `fhirServer`.

CDS Hooks (Security section, and the best-practices page) asks a service to accept a call only with
a JWT signed by a client it trusts: `iss` and `jku` allowlisted, `aud` equal to the endpoint URL,
`exp` in the future, `tenant` allowlisted where used, the signature checked against the client's
JWK Set, and each `jti` used once. RFC 8725 adds: never let the token choose the algorithm, never
accept `none` or HMAC (a public key would become the shared secret), never fetch a `jku` that is
not on the list. Everything a token says is untrusted until its signature has been checked against
a key this module chose, for an algorithm the client's configuration allows.

PyJWT checks the signature only. The claims are checked here, against an injectable clock, so each
failure has its own reason (for logs and the `calcinosis_auth_failures_total{reason}` metric) and
the tests can move time. A failure is an `AuthError` whose message *is* the reason: neither the
token, its claims nor key material ever reach an error message or a log line. (Logging the
configured `iss`, `jku`, `kid` and `jti` is allowed by the best-practices page; attacker-chosen
strings are not logged at all.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
import jwt.types
from cryptography.hazmat.primitives.asymmetric import rsa

from hooks.auth.clients import TrustedClient
from hooks.auth.errors import AuthConfigError, AuthError
from hooks.auth.keys import (
    SUPPORTED_ALGORITHMS,
    JwksFetcher,
    PublicKey,
    key_matches_algorithm,
    select_key,
)
from hooks.auth.replay import ReplayCache
from hooks.outbound import jku_to_fetch

# A CDS Hooks JWT is well under 2 KB; anything far larger is not parsed at all.
MAX_TOKEN_CHARS = 16_384
# `jti` goes into the replay cache (memory or Redis): bound what one token can store.
MAX_JTI_CHARS = 256


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token establishes: which client called, and the claims worth logging."""

    client: TrustedClient
    issuer: str
    jti: str
    tenant: str | None
    subject: str | None
    expires_at: float


# Signature only: PyJWT's claim checks use the wall clock; the verifier checks claims itself.
_SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}


def _numeric_date(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("malformed")
    return float(value)


def _typ_allowed(typ: Any) -> bool:
    # RFC 7515 §4.1.9: a media type, compared case-insensitively, "application/" optional.
    return isinstance(typ, str) and typ.lower() in ("jwt", "application/jwt")


@dataclass(slots=True)
class _ClientKeys:
    client: TrustedClient
    static: list[dict[str, Any]] = field(default_factory=list)
    built: dict[tuple[str, str], PublicKey] = field(default_factory=dict)


def _signature_length_fits(token: str, key: PublicKey) -> bool:
    """Whether the signature has the one length the key's algorithm produces (an RSA signature is
    as long as the modulus, an ECDSA one two coordinates), checked without cryptography."""
    encoded = token.rsplit(".", 1)[1]
    if len(encoded) % 4 == 1:
        return False
    size = len(encoded) * 3 // 4  # base64url without padding
    expected = (key.key_size + 7) // 8 if isinstance(key, rsa.RSAPublicKey) else 2 * ((key.curve.key_size + 7) // 8)
    return size == expected


class JwtVerifier:
    """Checks a CDS Hooks bearer token (see the module docstring for the rules)."""

    def __init__(
        self,
        clients: Sequence[TrustedClient],
        replay: ReplayCache,
        jwks: JwksFetcher,
        *,
        leeway: float = 60.0,
        max_lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway < 0 or max_lifetime <= 0:
            raise AuthConfigError("leeway must be >= 0 and max_lifetime > 0")
        self._clients: dict[str, _ClientKeys] = {}
        for client in clients:
            if client.issuer in self._clients:
                raise AuthConfigError(f"issuer {client.issuer!r:.120} is configured twice")
            static = list(client.jwks["keys"]) if client.jwks is not None else []
            self._clients[client.issuer] = _ClientKeys(client, static)
        self.replay = replay
        self.jwks = jwks
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self._clock = clock
        self._jwt = jwt.PyJWT()

    async def verify(self, token: str, audience: str) -> VerifiedToken:
        """The verified token, or AuthError. `audience` is the exact public URL of the endpoint
        called (the configured external base URL + path, never derived from proxy headers)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AuthError("malformed")
        try:
            unverified = self._jwt.decode_complete(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthError("malformed") from None
        header: dict[str, Any] = unverified["header"]
        claims: dict[str, Any] = unverified["payload"]

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise AuthError("alg-not-allowed")
        if "typ" in header and not _typ_allowed(header["typ"]):
            raise AuthError("typ-not-allowed")
        if "crit" in header or "b64" in header:
            raise AuthError("malformed")  # no extension is used by CDS Hooks; refuse rather than ignore
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("missing-kid")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise AuthError("malformed")

        iss = claims.get("iss")
        if iss is None:
            raise AuthError("missing-claim")
        entry = self._clients.get(iss) if isinstance(iss, str) else None
        if entry is None:
            raise AuthError("unknown-issuer")
        client = entry.client
        try:
            if alg not in client.algorithms:
                raise AuthError("alg-not-allowed")
            # A key the client pinned (jwks/jwks_file) under this kid verifies whatever `jku` the
            # token names: nothing is fetched, so the jku cannot steer a request, and the pinned
            # key is the trust decision. (The CDS Hooks sandbox always sends its jku.) Otherwise
            # the jku must be one of the client's.
            pinned = any(k.get("kid") == kid for k in entry.static)
            fetch_url = None if jku is None or pinned else jku_to_fetch(client.jku, jku)
            if jku is not None and not pinned and fetch_url is None:
                raise AuthError("jku-not-allowed")
            # Everything that needs no cryptography first, so that a flood of forged, expired or
            # misaddressed tokens costs a JSON parse each, not a signature check.
            checked = self._claims(client, claims, audience)
            key = await self._key(entry, fetch_url, kid, alg)
            if not key_matches_algorithm(key, alg):
                raise AuthError("key-mismatch")
            if not _signature_length_fits(token, key):
                raise AuthError("bad-signature")
            try:
                verified = self._jwt.decode_complete(token, key=key, algorithms=[alg], options=_SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                raise AuthError("bad-signature") from None
            except jwt.InvalidAlgorithmError:
                raise AuthError("alg-not-allowed") from None
            except jwt.InvalidKeyError:
                raise AuthError("key-mismatch") from None
            except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
                raise AuthError("malformed") from None
            if verified["payload"] != claims:
                raise AuthError("malformed")  # cannot differ (the same bytes); belt and braces
            return await self._first_use(checked)
        except AuthError as error:
            error.issuer = client.issuer
            raise

    async def _key(self, entry: _ClientKeys, jku: str | None, kid: str, alg: str) -> PublicKey:
        """The static key when the client pinned one with this kid, else the jku's (if any)."""
        if entry.static and any(k.get("kid") == kid for k in entry.static):
            built = entry.built.get((kid, alg))
            if built is None:
                built = entry.built[(kid, alg)] = select_key(entry.static, kid, alg)
            return built
        if jku is None:
            raise AuthError("unknown-kid")
        return await self.jwks.key_for(jku, kid, alg)

    def _claims(self, client: TrustedClient, claims: dict[str, Any], audience: str) -> VerifiedToken:
        """The claims checks (all but replay), on the decoded payload; AuthError on failure."""
        for name in ("iss", "aud", "exp", "iat", "jti"):
            if claims.get(name) is None:
                raise AuthError("missing-claim")
        if claims["iss"] != client.issuer:
            raise AuthError("unknown-issuer")  # cannot differ from the unverified read; belt and braces
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthError("malformed")
        # The exact URL of the endpoint called, or the one audience the client is configured to
        # send on every call (Epic: the endpoint the health system typed in, also on feedback).
        if audience not in audiences and (client.audience is None or client.audience not in audiences):
            raise AuthError("bad-audience")

        now = self._clock()
        exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
        if exp <= now - self.leeway:
            raise AuthError("expired")
        if iat > now + self.leeway:
            raise AuthError("iat-in-future")
        if claims.get("nbf") is not None and _numeric_date(claims, "nbf") > now + self.leeway:
            raise AuthError("not-yet-valid")
        if exp - iat > self.max_lifetime:
            raise AuthError("lifetime-too-long")

        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise AuthError("malformed")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthError("malformed")
        if client.tenant is not None and tenant != client.tenant:
            raise AuthError("tenant-mismatch")
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise AuthError("malformed")

        return VerifiedToken(
            client=client, issuer=client.issuer, jti=jti, tenant=tenant, subject=subject, expires_at=exp
        )

    async def _first_use(self, token: VerifiedToken) -> VerifiedToken:
        """Last, so that only otherwise valid tokens use up a jti. Kept until the token could no
        longer pass the `exp` check (exp + leeway), not just until exp. A replay cache that cannot
        answer raises ReplayCacheUnavailableError (503): the token is not accepted."""
        if not await self.replay.first_use(f"{token.issuer}|{token.jti}", token.expires_at + self.leeway):
            raise AuthError("replayed-jti")
        return token


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthError("missing-token") if the
    header is absent or of another scheme (the scheme name is case-insensitive, RFC 9110 §11.1)."""
    if not authorization:
        raise AuthError("missing-token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("missing-token")
    return token
