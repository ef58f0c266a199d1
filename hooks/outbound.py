"""The outbound policy: the one place that decides whether the service may call a URL.

Every URL the service calls carries something worth stealing: a FHIR read, search or next link
carries the EHR's bearer token, and a `jku` fetch decides which keys sign the tokens we accept. So
every such URL goes through here, and only in its normalised form (the form that is then
requested, so what was checked is what is sent):

- RFC 3986 §6.2.2 syntax normalisation: lower-case scheme and host, the default port dropped,
  percent-encoded unreserved characters decoded (so `%2e%2e` is `..`), the remaining escapes in
  upper case, then dot-segment removal (§5.2.4), so `/r4/x/../../admin` is `/admin`;
- what a FHIR URL has no business carrying is refused outright rather than interpreted: user
  info, a fragment, backslashes, spaces and control characters (raw or encoded), and encoded
  slashes (which a server may or may not decode, so the segments it sees are not the ones checked);
- a URL is under a base when scheme, host and port are equal and the base's path segments are a
  prefix of the URL's, whole segment by whole segment: `/exact-evil/` is not under `/exact`.

Comparisons are pure: no DNS, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%(.{0,2})", re.DOTALL)
_HEX = frozenset("0123456789abcdefABCDEF")
_DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_URL_CHARS = 8192


class _RefusedError(ValueError):
    """The URL has something a FHIR or JWK Set URL must not have."""


def _normalise_escapes(text: str, *, in_path: bool) -> str:
    """Decode escapes of unreserved characters, upper-case the others; refuse malformed escapes,
    encoded control characters, and (in a path) encoded slashes and backslashes."""

    def fix(match: re.Match[str]) -> str:
        digits = match.group(1)
        if len(digits) != 2 or not set(digits) <= _HEX:
            raise _RefusedError("malformed percent-escape")
        value = int(digits, 16)
        if value < 0x20 or value == 0x7F:
            raise _RefusedError("encoded control character")
        if in_path and value in (0x2F, 0x5C):
            raise _RefusedError("encoded slash in the path")
        char = chr(value)
        return char if char in _UNRESERVED else "%" + digits.upper()

    return _ESCAPE.sub(fix, text)


def _remove_dot_segments(segments: list[str]) -> tuple[str, ...]:
    """RFC 3986 §5.2.4 over a path split at '/' (without the leading empty segment)."""
    output: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == ".":
            if index == last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if index == last:
                output.append("")
        else:
            output.append(segment)
    return tuple(output) if output else ("",)


@dataclass(frozen=True, slots=True)
class NormalisedUrl:
    """An http(s) URL in normal form. `segments` is the path split at '/', without the leading
    empty segment (so `/r4/` is `("r4", "")` and `/` is `("",)`)."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]
    query: str | None

    @property
    def text(self) -> str:
        """The URL to request: exactly what was checked."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = "" if self.query is None else "?" + self.query
        return f"{self.scheme}://{host}{port}/{'/'.join(self.segments)}{query}"

    @property
    def folder(self) -> tuple[str, ...]:
        """The path's segments with a trailing empty one dropped: `/r4` and `/r4/` are one base."""
        return self.segments[:-1] if self.segments and self.segments[-1] == "" else self.segments

    def same_origin(self, other: NormalisedUrl) -> bool:
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)

    def is_under(self, base: NormalisedUrl) -> bool:
        """Same origin, and `base`'s path segments are a prefix of this URL's, segment by segment."""
        prefix = base.folder
        return self.same_origin(base) and self.segments[: len(prefix)] == prefix

    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


def normalise(url: object) -> NormalisedUrl | None:
    """The normal form of an http(s) URL, or None when it is not one the service would call."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return None
    if any(c.isspace() or ord(c) < 0x20 or c in "\\\x7f#" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or "@" in parts.netloc or "%" in parts.netloc:
            return None
        host = parts.hostname
        if not host:
            return None
        path = _normalise_escapes(parts.path, in_path=True) or "/"
        if not path.startswith("/"):
            return None
        query = _normalise_escapes(parts.query, in_path=False) if "?" in url else None
    except (ValueError, _RefusedError):
        return None
    return NormalisedUrl(
        scheme=scheme,
        host=host.lower(),
        port=_DEFAULT_PORTS[scheme] if port is None else port,
        segments=_remove_dot_segments(path.split("/")[1:]),
        query=query,
    )


@dataclass(frozen=True, slots=True)
class AllowedBase:
    """One allowlist entry: the base itself (`subtree` False: exact, a trailing slash aside) or
    anything under it (an entry written with a trailing '/')."""

    url: NormalisedUrl
    subtree: bool

    def admits(self, base: NormalisedUrl) -> bool:
        if self.subtree:
            return base.is_under(self.url)
        return base.same_origin(self.url) and base.folder == self.url.folder


def parse_base(entry: str) -> AllowedBase | None:
    """An allowlist entry (a FHIR base URL: no query), or None when it is not usable."""
    url = normalise(entry)
    if url is None or url.query is not None or entry != entry.strip():
        return None
    if any(segment in (".", "..") for segment in entry.split("?")[0].split("/")[3:]):
        return None  # a configured base is written plainly; dot segments there are a mistake
    return AllowedBase(url, subtree=entry.endswith("/"))


class FhirScope:
    """The FHIR server one request may call: every read, search and next link must be under its
    base (whole path segments, after normalisation)."""

    def __init__(self, base: NormalisedUrl) -> None:
        self.base = base

    @property
    def base_url(self) -> str:
        """The base without a trailing slash, to which `Type/id` and `Type?query` are appended."""
        return self.base.text.rstrip("/")

    def resolve(self, url: str) -> str | None:
        """The normalised URL to request when `url` is under the base, else None (not called)."""
        target = normalise(url)
        if target is None or not target.is_under(self.base):
            return None
        return target.text


class OutboundPolicy:
    """Which FHIR servers a request may make the service call (with the request's token).

    Built per caller: from the verified client's `fhir_servers`; for local use with
    authentication off, loopback servers and the configured local list; for the command line,
    the one server its user named. There is no allow-everything policy.
    """

    def __init__(self, bases: Iterable[str], *, allow_http: bool = False, loopback: bool = False) -> None:
        self.bases = tuple(b for b in (parse_base(entry) for entry in bases) if b is not None)
        self.allow_http = allow_http
        self.loopback = loopback

    @classmethod
    def deny_all(cls) -> OutboundPolicy:
        return cls(())

    @classmethod
    def only(cls, fhir_server: str) -> OutboundPolicy:
        """Exactly this server (the command line: its user named it), http allowed."""
        return cls((fhir_server.rstrip("/"),), allow_http=True)

    def scope(self, fhir_server: object) -> FhirScope | None:
        """The scope of calls for a request naming `fhir_server`, or None when it may not be called."""
        base = normalise(fhir_server)
        if base is None or base.query is not None:
            return None
        if base.scheme != "https" and not self.allow_http and not (self.loopback and base.is_loopback()):
            return None
        if self.loopback and base.is_loopback():
            return FhirScope(base)
        if any(entry.admits(base) for entry in self.bases):
            return FhirScope(base)
        return None

    def allows(self, fhir_server: object) -> bool:
        return self.scope(fhir_server) is not None


def jku_to_fetch(configured: Iterable[str], jku: object) -> str | None:
    """The configured JWK Set URL a token's `jku` names (equal after normalisation, https only),
    as the URL to fetch; None when it names none of them. The fetched URL is always the configured
    one in normal form, never the token's spelling of it."""
    candidate = normalise(jku)
    if candidate is None or candidate.scheme != "https":
        return None
    for entry in configured:
        allowed = normalise(entry)
        if allowed is not None and allowed == candidate:
            return allowed.text
    return None


def fetchable_jku(url: str) -> str | None:
    """A configured `jku` in normal form when it is one the service would fetch (https), else None."""
    normal = normalise(url)
    return normal.text if normal is not None and normal.scheme == "https" else None
