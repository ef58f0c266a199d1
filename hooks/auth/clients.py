"""The EHRs trusted to call the service (issuer, keys or `jku` list, tenant, algorithms, FHIR
servers), loaded from JSON and checked when loaded, so a bad entry stops the service at start-up
rather than failing every request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hooks.auth.errors import AuthConfigError
from hooks.auth.keys import (
    DEFAULT_ALGORITHMS,
    FORBIDDEN_ALGORITHMS,
    PRIVATE_JWK_MEMBERS,
    SUPPORTED_ALGORITHMS,
    jwk_fits,
    public_key_from_jwk,
)
from hooks.outbound import OutboundPolicy, parse_base


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
    audience: str | None = None
    """An `aud` this client sends on every call, accepted on every endpoint besides the exact
    endpoint URL: Epic's audience is typed in by the health system, once, so its feedback calls
    carry the service URL too."""

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
        if self.audience is not None and (
            not isinstance(self.audience, str) or not self.audience.startswith(("https://", "http://"))
        ):
            raise AuthConfigError("'audience' must be an absolute http(s) URL, the aud the client sends")
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
        if alg in FORBIDDEN_ALGORITHMS or (isinstance(alg, str) and alg.lower() == "none"):
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
        if PRIVATE_JWK_MEMBERS & jwk.keys():
            raise AuthConfigError(f"{where} contains private key material; configure public keys only")
        try:
            public_key_from_jwk(jwk)
        except ValueError as error:
            raise AuthConfigError(f"{where}: {error}") from None
        usable = usable or any(jwk_fits(jwk, alg) for alg in algorithms)
    if not usable:
        raise AuthConfigError(f"no key in 'jwks' can verify any of the algorithms {', '.join(algorithms)}")


_CLIENT_FIELDS = frozenset(
    {"issuer", "jku", "jwks", "jwks_file", "tenant", "algorithms", "fhir_servers", "allow_http_fhir", "audience"}
)


def load_trusted_clients(source: str) -> tuple[TrustedClient, ...]:
    """Trusted clients from a JSON file path or an inline JSON string (anything starting with '{'):

        {"clients": [{"issuer": "...", "jku": ["https://..."], "jwks": {...} or "jwks_file": "path",
                      "tenant": "...", "algorithms": ["ES384"], "fhir_servers": ["https://.../"],
                      "allow_http_fhir": false, "audience": "https://..."}]}

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
        audience=entry.get("audience"),
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


def fhir_server_allowed(client: TrustedClient | None, url: str) -> bool:
    """Whether the service may call `url` (a request's `fhirServer`) with the request's bearer
    token: it must be one of the verified client's `fhir_servers`, exactly (a trailing slash does
    not matter) or under an entry that ends with '/', compared by `hooks.outbound`. Without a
    client, nothing is allowed. Pure: no I/O."""
    return client is not None and client.outbound_policy().allows(url)
