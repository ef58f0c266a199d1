"""Keys: public keys from JWKs (public members only), which key fits which algorithm, and the JWK
Sets fetched from allowlisted `jku` URLs (cached, refetched on an unknown `kid` at most every 30 s,
bounded in time and size, no redirects)."""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.utils import base64url_decode

from hooks.auth.errors import AuthError
from hooks.outbound import fetchable_jku

log = logging.getLogger("calcinosis_cds.auth")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Algorithm -> the key it needs (kty, crv). Only these can be configured: the two the spec
# recommends, and their SHA-256 siblings for clients that need them (never by default).
KEY_FOR_ALGORITHM: dict[str, tuple[str, str | None]] = {
    "RS384": ("RSA", None),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
}
SUPPORTED_ALGORITHMS = frozenset(KEY_FOR_ALGORITHM)
DEFAULT_ALGORITHMS = ("RS384", "ES384")
# Named so that a configuration listing them gets a message saying why, not just "unsupported".
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048


def _b64_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"member '{name}' is missing")
    try:
        return base64url_decode(value)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"member '{name}' is not base64url") from None


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """The public key of an RSA or EC (P-256/P-384) JWK, built from its public members only.

    Only ever a *public key object* comes out, so it can never be misused as an HMAC secret, and
    a JWK that also carries private members still yields only its public half. ValueError texts
    name the problem, never the key.
    """
    kty = jwk.get("kty")
    if kty == "RSA":
        n = int.from_bytes(_b64_member(jwk, "n"), "big")
        e = int.from_bytes(_b64_member(jwk, "e"), "big")
        try:
            rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise ValueError("not a valid RSA public key") from None
        if rsa_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
        return rsa_key
    if kty == "EC":
        crv = jwk.get("crv")
        curve_type = CURVES.get(crv) if isinstance(crv, str) else None
        if curve_type is None:
            raise ValueError("unsupported EC curve (P-256 and P-384 are supported)")
        curve = curve_type()
        size = (curve.key_size + 7) // 8
        x, y = _b64_member(jwk, "x"), _b64_member(jwk, "y")
        if len(x) != size or len(y) != size:
            raise ValueError(f"EC coordinates are not {size} bytes long for {crv}")
        try:
            return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve).public_key()
        except ValueError:
            raise ValueError(f"not a valid {crv} public key") from None
    raise ValueError("unsupported key type (RSA and EC are supported)")


def jwk_fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a JWK may verify `alg`: the key family and curve the algorithm needs (RSA for RS*,
    P-384 for ES384, P-256 for ES256), and no `alg`/`use`/`key_ops` saying otherwise."""
    kty, crv = KEY_FOR_ALGORITHM[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return False
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    if "use" in jwk and jwk["use"] != "sig":
        return False
    ops = jwk.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def key_matches_algorithm(key: Any, alg: str) -> bool:
    """Last check before PyJWT sees the key: a public key object of the family `alg` needs."""
    kty, crv = KEY_FOR_ALGORITHM[alg]
    if kty == "RSA":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    return isinstance(key, ec.EllipticCurvePublicKey) and crv is not None and isinstance(key.curve, CURVES[crv])


def select_key(jwks: Sequence[Mapping[str, Any]], kid: str, alg: str) -> PublicKey:
    """The key with this kid that fits alg; AuthError unknown-kid / key-mismatch."""
    candidates = [jwk for jwk in jwks if jwk.get("kid") == kid]
    if not candidates:
        raise AuthError("unknown-kid")
    for jwk in candidates:
        if jwk_fits(jwk, alg):
            try:
                return public_key_from_jwk(jwk)
            except ValueError:
                continue
    raise AuthError("key-mismatch")


@dataclass(slots=True)
class _JwkSet:
    keys: list[dict[str, Any]]
    fetched_at: float
    built: dict[tuple[str, str], PublicKey] = field(default_factory=dict)

    def key(self, kid: str, alg: str) -> PublicKey:
        """`select_key`, built once per set (a JWK becomes a key object with a curve-point check)."""
        built = self.built.get((kid, alg))
        if built is None:
            built = self.built[(kid, alg)] = select_key(self.keys, kid, alg)
        return built


class _FetchError(Exception):
    """Why a JWK Set could not be fetched; safe to log (no body, no key)."""


class JwksFetcher:
    """JWK Sets from allowlisted `jku` URLs, cached per URL.

    The `jku` is attacker-influenced, so the caller only passes URLs on the client's list; this
    class still refuses anything but https. One fetch: `timeout` for the whole exchange, at most
    `max_bytes`, no redirects (a redirect could lead anywhere). A set is kept for `ttl`; an unknown
    `kid` (key rotation) triggers a refetch, but each URL is fetched at most once per
    `min_refresh_interval`, whatever the cause, so tokens with made-up kids cannot turn the
    service into a request amplifier. A failed refresh keeps the last good set in service (an
    outage of the EHR's key endpoint should not lock out tokens signed with known keys).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        timeout: float = 2.0,
        max_bytes: int = 65536,
        ttl: float = 600.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._sets: dict[str, _JwkSet] = {}
        self._last_attempt: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    async def key_for(self, jku: str, kid: str, alg: str) -> PublicKey:
        """The public key `kid` of the set at `jku`, usable with `alg`.

        Raises AuthError: "jwks-unavailable" (no set could be obtained), "unknown-kid" (not in the
        set, even after the refetch allowed now), "key-mismatch" (the kid names a key of another
        family or curve than `alg` needs)."""
        if alg not in KEY_FOR_ALGORITHM:
            raise AuthError("alg-not-allowed")
        lock = self._locks.setdefault(jku, asyncio.Lock())
        async with lock:
            now = self._clock()
            current = self._sets.get(jku)
            refreshed = False
            if (current is None or now - current.fetched_at >= self.ttl) and self._may_fetch(jku, now):
                current = await self._refresh(jku, now)
                refreshed = True
            if current is None:
                raise AuthError("jwks-unavailable")
            if any(k.get("kid") == kid for k in current.keys):
                return current.key(kid, alg)
            if not refreshed and self._may_fetch(jku, now):
                current = await self._refresh(jku, now) or current
            return current.key(kid, alg)

    def _may_fetch(self, jku: str, now: float) -> bool:
        last = self._last_attempt.get(jku)
        # A clock that went backwards must not block refreshes until it catches up.
        return last is None or now - last >= self.min_refresh_interval or now < last

    async def _refresh(self, jku: str, now: float) -> _JwkSet | None:
        """Fetch and cache the set; on failure log why and return what was cached before."""
        self._last_attempt[jku] = now
        self.fetches += 1
        try:
            keys = await self._fetch(jku)
        except _FetchError as error:
            stale = self._sets.get(jku)
            log.warning(
                "JWKS fetch failed jku=%s reason=%s%s", jku, error, "; still using the cached set" if stale else ""
            )
            return stale
        fresh = _JwkSet(keys, now)
        self._sets[jku] = fresh
        return fresh

    async def _fetch(self, jku: str) -> list[dict[str, Any]]:
        url = fetchable_jku(jku)
        if url is None:
            raise _FetchError("jku is not an https URL")
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._download(url)
        except (TimeoutError, httpx.TimeoutException):
            raise _FetchError("timed out") from None
        except httpx.HTTPError as error:
            raise _FetchError(f"unreachable ({type(error).__name__})") from None
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _FetchError("not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _FetchError("not a JWK Set")
        return [k for k in document["keys"] if isinstance(k, dict) and isinstance(k.get("kid"), str)]

    async def _download(self, jku: str) -> bytes:
        headers = {"Accept": "application/jwk-set+json, application/json"}
        async with self.http.stream(
            "GET", jku, headers=headers, timeout=httpx.Timeout(self.timeout), follow_redirects=False
        ) as response:
            if 300 <= response.status_code < 400:
                raise _FetchError(f"redirected ({response.status_code}); redirects are not followed")
            if response.status_code != 200:
                raise _FetchError(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise _FetchError("larger than the size cap")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _FetchError("larger than the size cap")
                chunks.append(chunk)
        return b"".join(chunks)
