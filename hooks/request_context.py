"""Who is calling, and which request a log line belongs to.

`RequestContext` is the outermost ASGI middleware. For every HTTP request it
- resolves the client address: the TCP peer, or, only when that peer is one of the configured
  trusted proxies (`CALCINOSIS_TRUSTED_PROXIES`), the address the proxies recorded in
  `X-Forwarded-For`. Anyone can send that header, so it is believed only from a proxy the site
  named; behind an ingress the peer is the ingress pod, whose address says nothing about the EHR.
  The resolved address replaces `scope["client"]`, so the route (`request.client`), the audit
  line and uvicorn's access log (which reads the same scope) all show it;
- gives the request an id: the `X-Request-ID` a trusted proxy sent (ingress-nginx sends one, so
  the ingress's log and ours can be joined), or a new random one, and answers it in the
  `X-Request-ID` response header;
- binds both to a context variable that the log formatters (`hooks.logs`) read, so every line
  written while the request runs carries the request id, the access line its duration too.

The walk through `X-Forwarded-For` goes from the right (the entry the nearest proxy appended)
and stops at the first address that is not a trusted proxy: that is the client. Entries further
left were written by whoever the client was, and are not believed.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")
"""An incoming request id is kept only if it looks like one (no spaces, quotes or newlines that
could forge log lines, and too short to carry much else)."""


@dataclass(frozen=True)
class CurrentRequest:
    """The request a task is serving: its id and when it arrived (`time.perf_counter()`)."""

    request_id: str
    started: float

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return round((time.perf_counter() - self.started) * 1000, 1)


_current: ContextVar[CurrentRequest | None] = ContextVar("calcinosis_request", default=None)


def current_request() -> CurrentRequest | None:
    """The request being served in this task, if any."""
    return _current.get()


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses and CIDR blocks (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`); ValueError on a bad one."""
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR block: {entry.strip()!r}") from None
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:443"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[IPNetwork, ...]) -> str | None:
    """The client's address: `peer` unless it is a trusted proxy, then the first untrusted hop of
    `X-Forwarded-For` read from the right (the last trusted hop if an entry is not an address)."""
    if peer is None or not trusted:
        return peer
    current = _address(peer)
    if current is None or not any(current in net for net in trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not any(current in net for net in trusted):
            break
        parsed = _address(hop)
        if parsed is None:
            break  # garbage: the client is unknown; the last proxy is what we can vouch for
        current = parsed
    return str(current)


class RequestContext:
    """ASGI middleware: the client address behind trusted proxies, and a request id (module doc)."""

    def __init__(self, app: Any, trusted_proxies: tuple[IPNetwork, ...]) -> None:
        self.app = app
        self.trusted = trusted_proxies

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client = scope.get("client")
        peer = client[0] if client else None
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        from_proxy = False
        if self.trusted and peer is not None:
            address = _address(peer)
            from_proxy = address is not None and any(address in net for net in self.trusted)
        if from_proxy:
            forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            resolved = client_address(peer, forwarded, self.trusted)
            if resolved is not None and resolved != peer:
                scope["client"] = (resolved, 0)  # the client's port is not known through a proxy
        request_id = ""
        if from_proxy:
            for key, value in headers:
                if key == REQUEST_ID_HEADER:
                    text = value.decode("latin-1")
                    if _REQUEST_ID.fullmatch(text):
                        request_id = text
                    break
        if not request_id:
            request_id = uuid.uuid4().hex
        # Not reset afterwards: each request runs in a task of its own (a copy of the context), and
        # uvicorn writes the access line of a 500 after the app has raised, still in this task.
        _current.set(CurrentRequest(request_id, started))
        encoded = request_id.encode("latin-1")

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
