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

import asyncio
import binascii
import heapq
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import jwt
import jwt.types
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.utils import base64url_decode

from hooks.outbound import OutboundPolicy, fetchable_jku, jku_to_fetch, parse_base

log = logging.getLogger("calcinosis_cds.auth")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Algorithm -> the key it needs (kty, crv). Only these can be configured: the two the spec
# recommends, and their SHA-256 siblings for clients that need them (never by default).
_KEY_FOR_ALGORITHM: dict[str, tuple[str, str | None]] = {
    "RS384": ("RSA", None),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
}
SUPPORTED_ALGORITHMS = frozenset(_KEY_FOR_ALGORITHM)
DEFAULT_ALGORITHMS = ("RS384", "ES384")
# Named so that a configuration listing them gets a message saying why, not just "unsupported".
_FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
# A CDS Hooks JWT is well under 2 KB; anything far larger is not parsed at all.
MAX_TOKEN_CHARS = 16_384
# `jti` goes into the replay cache (memory or Redis): bound what one token can store.
MAX_JTI_CHARS = 256

# Every reason an AuthError can carry, so the caller can pre-create metric label values.
REASONS = (
    "missing-token",
    "malformed",
    "alg-not-allowed",
    "typ-not-allowed",
    "missing-kid",
    "unknown-issuer",
    "jku-not-allowed",
    "unknown-kid",
    "key-mismatch",
    "jwks-unavailable",
    "bad-signature",
    "missing-claim",
    "bad-audience",
    "expired",
    "not-yet-valid",
    "iat-in-future",
    "lifetime-too-long",
    "tenant-mismatch",
    "replayed-jti",
)


class AuthConfigError(ValueError):
    """The trusted-client configuration is unusable; the message names the entry and the problem."""


class AuthError(Exception):
    """A token was refused. `reason` (also the message) is short, fixed text fit for logs and
    metric labels; `issuer` is the configured issuer when the client was identified, else None.
    The HTTP answer should be a bare 401 whatever the reason (the spec: no detail)."""

    def __init__(self, reason: str, issuer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer = issuer


# --- trusted clients ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedClient:
    """One EHR (or sandbox) allowed to call the service, checked when built so that a bad entry
    stops the service at start-up rather than failing every request."""

    issuer: str
    jku: tuple[str, ...] = ()
    jwks: dict[str, Any] | None = None
    tenant: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    fhir_servers: tuple[str, ...] = ()
    allow_http_fhir: bool = False

    def __post_init__(self) -> None:
        # Lists from JSON become tuples, so a client cannot be changed after it was checked.
        for name in ("jku", "algorithms", "fhir_servers"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise AuthConfigError(f"'{name}' must be a list of strings")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.issuer, str) or not self.issuer or self.issuer != self.issuer.strip():
            raise AuthConfigError("'issuer' must be a non-empty string without surrounding spaces")
        _check_algorithms(self.algorithms)
        for url in self.jku:
            if not isinstance(url, str) or not _jku_acceptable(url):
                raise AuthConfigError(
                    f"every 'jku' must be an https URL without user info or fragment (got {url!r:.120})"
                )
        if len(set(self.jku)) != len(self.jku):
            raise AuthConfigError("'jku' lists the same URL twice")
        if self.jwks is not None:
            _check_static_jwks(self.jwks, self.algorithms)
        if not self.jku and self.jwks is None:
            raise AuthConfigError("needs 'jku' (allowed JWK Set URLs) or 'jwks'/'jwks_file' (a static JWK Set)")
        if self.tenant is not None and (not isinstance(self.tenant, str) or not self.tenant):
            raise AuthConfigError("'tenant' must be a non-empty string when given")
        if not isinstance(self.allow_http_fhir, bool):
            raise AuthConfigError("'allow_http_fhir' must be true or false")
        for url in self.fhir_servers:
            parsed = parse_base(url) if isinstance(url, str) else None
            if parsed is None:
                raise AuthConfigError(
                    f"'fhir_servers' entry {url!r:.120} is not an http(s) URL without user info, query or fragment"
                )
            if parsed.url.scheme != "https" and not self.allow_http_fhir:
                raise AuthConfigError(
                    f"'fhir_servers' entry {url!r:.120} is not https (set 'allow_http_fhir' for local testing only)"
                )

    def outbound_policy(self) -> OutboundPolicy:
        """The FHIR servers a request from this client may make the service call."""
        return OutboundPolicy(self.fhir_servers, allow_http=self.allow_http_fhir)


def _jku_acceptable(url: str) -> bool:
    """An https URL with a host, and no user info, fragment, spaces or control characters. (A
    query is allowed: the token's jku is compared to it as an exact string.)"""
    if not url or len(url) > 2048 or any(c.isspace() or ord(c) < 0x20 or c in "\\\x7f" for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc and "#" not in url


def _check_algorithms(algorithms: tuple[str, ...]) -> None:
    if not algorithms:
        raise AuthConfigError("'algorithms' must not be empty")
    for alg in algorithms:
        if alg in _FORBIDDEN_ALGORITHMS or (isinstance(alg, str) and alg.lower() == "none"):
            raise AuthConfigError(
                f"algorithm {alg!r} is never accepted: CDS Hooks forbids 'none' and symmetric (HMAC) algorithms"
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise AuthConfigError(
                f"algorithm {alg!r:.40} is not supported (use {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
            )


def _check_static_jwks(jwks: Any, algorithms: tuple[str, ...]) -> None:
    """A configured JWK Set: public signing keys only, each with a unique `kid`, at least one of
    them usable with one of the client's algorithms."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise AuthConfigError("'jwks' must be a JWK Set: an object with a non-empty 'keys' list")
    kids: set[str] = set()
    usable = False
    for index, jwk in enumerate(jwks["keys"]):
        where = f"jwks key #{index}"
        if not isinstance(jwk, dict):
            raise AuthConfigError(f"{where} is not an object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthConfigError(f"{where} has no 'kid' (tokens name their key by kid)")
        where = f"jwks key #{index} (kid {kid!r:.80})"
        if kid in kids:
            raise AuthConfigError(f"{where}: the kid appears twice")
        kids.add(kid)
        if _PRIVATE_JWK_MEMBERS & jwk.keys():
            raise AuthConfigError(f"{where} contains private key material; configure public keys only")
        try:
            _public_key_from_jwk(jwk)
        except ValueError as error:
            raise AuthConfigError(f"{where}: {error}") from None
        usable = usable or any(_jwk_fits(jwk, alg) for alg in algorithms)
    if not usable:
        raise AuthConfigError(f"no key in 'jwks' can verify any of the algorithms {', '.join(algorithms)}")


_CLIENT_FIELDS = frozenset(
    {"issuer", "jku", "jwks", "jwks_file", "tenant", "algorithms", "fhir_servers", "allow_http_fhir"}
)


def load_trusted_clients(source: str) -> tuple[TrustedClient, ...]:
    """Trusted clients from a JSON file path or an inline JSON string (anything starting with '{'):

        {"clients": [{"issuer": "...", "jku": ["https://..."], "jwks": {...} or "jwks_file": "path",
                      "tenant": "...", "algorithms": ["ES384"], "fhir_servers": ["https://.../"],
                      "allow_http_fhir": false}]}

    `jwks_file` is relative to the configuration file (or to the working directory for inline
    JSON). Unknown fields are errors, since a misspelt "tennant" would silently disable a check.
    """
    base = Path.cwd()
    if source.lstrip().startswith("{"):
        text, origin = source, "inline trusted-clients JSON"
    else:
        path = Path(source)
        origin = f"trusted-clients file '{source}'"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AuthConfigError(f"cannot read {origin}: {getattr(error, 'strerror', None) or error}") from None
        base = path.parent
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise AuthConfigError(
            f"{origin} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(document, dict) or set(document) != {"clients"} or not isinstance(document["clients"], list):
        raise AuthConfigError(f"{origin} must be an object with exactly one field, 'clients' (a list)")
    if not document["clients"]:
        raise AuthConfigError(f"{origin} lists no clients; every token would be refused")
    clients: list[TrustedClient] = []
    for index, entry in enumerate(document["clients"]):
        name = f"clients[{index}]"
        if isinstance(entry, dict) and isinstance(entry.get("issuer"), str):
            name += f" (issuer {entry['issuer']!r:.120})"
        try:
            clients.append(_client_from_entry(entry, base))
        except AuthConfigError as error:
            raise AuthConfigError(f"{origin}, {name}: {error}") from None
    issuers = [c.issuer for c in clients]
    duplicates = sorted({i for i in issuers if issuers.count(i) > 1})
    if duplicates:
        raise AuthConfigError(f"{origin}: issuer {duplicates[0]!r:.120} is configured twice")
    return tuple(clients)


def _client_from_entry(entry: Any, base: Path) -> TrustedClient:
    if not isinstance(entry, dict):
        raise AuthConfigError("must be an object")
    unknown = sorted(set(entry) - _CLIENT_FIELDS)
    if unknown:
        raise AuthConfigError(f"unknown field {unknown[0]!r:.60} (allowed: {', '.join(sorted(_CLIENT_FIELDS))})")
    if "issuer" not in entry:
        raise AuthConfigError("'issuer' is required")
    if "jwks" in entry and "jwks_file" in entry:
        raise AuthConfigError("give 'jwks' or 'jwks_file', not both")
    jwks = entry.get("jwks")
    if "jwks_file" in entry:
        jwks = _read_jwks_file(entry["jwks_file"], base)
    elif "jwks" in entry and not isinstance(jwks, dict):
        raise AuthConfigError("'jwks' must be a JWK Set object")
    for name in ("jku", "algorithms", "fhir_servers"):
        value = entry.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AuthConfigError(f"'{name}' must be a list of strings")
    allow_http = entry.get("allow_http_fhir", False)
    if not isinstance(allow_http, bool):
        raise AuthConfigError("'allow_http_fhir' must be true or false")
    tenant = entry.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise AuthConfigError("'tenant' must be a string")
    return TrustedClient(
        issuer=entry["issuer"],
        jku=tuple(entry.get("jku", ())),
        jwks=jwks,
        tenant=tenant,
        algorithms=tuple(entry.get("algorithms", DEFAULT_ALGORITHMS)),
        fhir_servers=tuple(entry.get("fhir_servers", ())),
        allow_http_fhir=allow_http,
    )


def _read_jwks_file(name: Any, base: Path) -> Any:
    if not isinstance(name, str) or not name:
        raise AuthConfigError("'jwks_file' must be a path")
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AuthConfigError(f"cannot read jwks_file '{name}': {getattr(error, 'strerror', None) or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AuthConfigError(
            f"jwks_file '{name}' is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None


# --- keys ----------------------------------------------------------------------------------------


def _b64_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"member '{name}' is missing")
    try:
        return base64url_decode(value)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"member '{name}' is not base64url") from None


def _public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
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
        curve_type = _CURVES.get(crv) if isinstance(crv, str) else None
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


def _jwk_fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a JWK may verify `alg`: the key family and curve the algorithm needs (RSA for RS*,
    P-384 for ES384, P-256 for ES256), and no `alg`/`use`/`key_ops` saying otherwise."""
    kty, crv = _KEY_FOR_ALGORITHM[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return False
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    if "use" in jwk and jwk["use"] != "sig":
        return False
    ops = jwk.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def _key_matches_algorithm(key: Any, alg: str) -> bool:
    """Last check before PyJWT sees the key: a public key object of the family `alg` needs."""
    kty, crv = _KEY_FOR_ALGORITHM[alg]
    if kty == "RSA":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    return isinstance(key, ec.EllipticCurvePublicKey) and crv is not None and isinstance(key.curve, _CURVES[crv])


def _select_key(jwks: Sequence[Mapping[str, Any]], kid: str, alg: str) -> PublicKey:
    """The key with this kid that fits alg; AuthError unknown-kid / key-mismatch."""
    candidates = [jwk for jwk in jwks if jwk.get("kid") == kid]
    if not candidates:
        raise AuthError("unknown-kid")
    for jwk in candidates:
        if _jwk_fits(jwk, alg):
            try:
                return _public_key_from_jwk(jwk)
            except ValueError:
                continue
    raise AuthError("key-mismatch")


# --- replay cache --------------------------------------------------------------------------------


class ReplayCache(Protocol):
    """Remembers `iss|jti` keys until their token expires (hooks.stores.RedisReplayCache is the
    shared implementation for several replicas)."""

    async def first_use(self, key: str, expires_at: float) -> bool:
        """True the first time `key` is seen; it is then remembered until `expires_at` (epoch s)."""
        ...


class InMemoryReplayCache:
    """A per-process replay cache: enough for one instance. Bounded: expired entries are dropped
    as new ones come, and beyond `max_entries` the entries closest to expiry are dropped first
    (and a warning logged), so a flood of valid tokens cannot exhaust memory. A threading lock
    (never held across an await) makes it safe from both tasks and threads."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    async def first_use(self, key: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            self._evict_expired(now)
            known = self._expiry.get(key)
            if known is not None and known > now:
                return False
            while len(self._expiry) >= self.max_entries and self._heap:
                self._drop_soonest()
                log.warning("replay cache full (%d entries): forgot the entry closest to expiry", self.max_entries)
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def _evict_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            self._drop_soonest()

    def _drop_soonest(self) -> None:
        expires_at, key = heapq.heappop(self._heap)
        # The heap may hold an older expiry for a key re-added since; only the current one counts.
        if self._expiry.get(key) == expires_at:
            del self._expiry[key]


# --- JWKS fetching -------------------------------------------------------------------------------


@dataclass(slots=True)
class _JwkSet:
    keys: list[dict[str, Any]]
    fetched_at: float


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
        if alg not in _KEY_FOR_ALGORITHM:
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
                return _select_key(current.keys, kid, alg)
            if not refreshed and self._may_fetch(jku, now):
                current = await self._refresh(jku, now) or current
            return _select_key(current.keys, kid, alg)

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


# --- verification --------------------------------------------------------------------------------


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
            fetch_url = None if jku is None else jku_to_fetch(client.jku, jku)
            if jku is not None and fetch_url is None:
                raise AuthError("jku-not-allowed")
            key = await self._key(entry, fetch_url, kid, alg)
            if not _key_matches_algorithm(key, alg):
                raise AuthError("key-mismatch")
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
            return await self._check_claims(client, verified["payload"], audience)
        except AuthError as error:
            error.issuer = client.issuer
            raise

    async def _key(self, entry: _ClientKeys, jku: str | None, kid: str, alg: str) -> PublicKey:
        """The static key when the client pinned one with this kid, else the jku's (if any)."""
        if entry.static and any(k.get("kid") == kid for k in entry.static):
            return _select_key(entry.static, kid, alg)
        if jku is None:
            raise AuthError("unknown-kid")
        return await self.jwks.key_for(jku, kid, alg)

    async def _check_claims(self, client: TrustedClient, claims: dict[str, Any], audience: str) -> VerifiedToken:
        for name in ("iss", "aud", "exp", "iat", "jti"):
            if claims.get(name) is None:
                raise AuthError("missing-claim")
        if claims["iss"] != client.issuer:
            raise AuthError("unknown-issuer")  # cannot differ from the unverified read; belt and braces
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthError("malformed")
        if audience not in audiences:
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

        # Last, so that only otherwise valid tokens use up a jti. Kept until the token could no
        # longer pass the `exp` check (exp + leeway), not just until exp.
        if not await self.replay.first_use(f"{client.issuer}|{jti}", exp + self.leeway):
            raise AuthError("replayed-jti")
        return VerifiedToken(
            client=client, issuer=client.issuer, jti=jti, tenant=tenant, subject=subject, expires_at=exp
        )


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


# --- SSRF guard ----------------------------------------------------------------------------------


def fhir_server_allowed(client: TrustedClient | None, url: str) -> bool:
    """Whether the service may call `url` (a request's `fhirServer`) with the request's bearer
    token: it must be one of the verified client's `fhir_servers`, exactly (a trailing slash does
    not matter) or under an entry that ends with '/', compared by `hooks.outbound`. Without a
    client, nothing is allowed. Pure: no I/O."""
    return client is not None and client.outbound_policy().allows(url)
