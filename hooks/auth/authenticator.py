"""Authentication of the calling EHR, as the app applies it, and the outbound policy that follows
from who called.

Every endpoint (discovery, service, feedback) requires `Authorization: Bearer <JWT>` signed by a
configured client, with `aud` equal to the public URL of the endpoint called. Authentication can
be switched off only explicitly (`CALCINOSIS_AUTH_DISABLED=true`), for local use: the service then
warns at start-up and says so in its discovery document, and it calls only loopback FHIR servers
and those listed in `CALCINOSIS_LOCAL_FHIR_SERVERS`.
"""

from __future__ import annotations

import logging

import httpx

from hooks.auth.clients import load_trusted_clients
from hooks.auth.keys import JwksFetcher
from hooks.auth.replay import open_replay_cache
from hooks.auth.verify import JwtVerifier, VerifiedToken, bearer_token
from hooks.outbound import OutboundPolicy
from hooks.settings import Settings

log = logging.getLogger("calcinosis_cds.security")
INSECURE_WARNING = "JWT authentication is disabled: for local use only, never with real patient data"
REDIS_RESTART_WARNING = (
    "replay cache in Redis: if Redis restarts without persistence, the JWT ids seen so far are forgotten, "
    "so a token still within its lifetime (at most 1 h) could be replayed once; enable Redis persistence "
    "(appendonly) or accept that window"
)


class Authenticator:
    """Verifies callers and decides which FHIR servers a verified caller may make us call."""

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.auth_disabled
        self.base_url = settings.public_base_url or ""
        self.local_fhir_servers = tuple(settings.local_fhir_servers)
        self.clients = () if self.disabled else load_trusted_clients(settings.trusted_clients or "")
        self.replay = open_replay_cache(
            settings.replay_cache_url,
            max_connections=settings.max_concurrent_requests,
            timeout=settings.replay_cache_timeout_seconds,
        )
        self._verifier: JwtVerifier | None = None
        if self.disabled:
            log.warning(INSECURE_WARNING)
        elif settings.replay_cache_url != "memory://":
            log.warning(REDIS_RESTART_WARNING)
        elif settings.workers > 1:  # refused by Settings; kept for callers building settings by hand
            raise ValueError("authentication with more than one worker needs a shared replay cache (redis://)")

    def verifier(self, http: httpx.AsyncClient) -> JwtVerifier:
        """The verifier, built on first use around the app's shared HTTP client (JWKS fetches)."""
        if self._verifier is None:
            self._verifier = JwtVerifier(self.clients, self.replay, JwksFetcher(http))
        return self._verifier

    async def authenticate(self, authorization: str | None, path: str, http: httpx.AsyncClient) -> VerifiedToken | None:
        """The verified token for a request to `path`, or None when authentication is disabled.
        Raises `AuthError` (answered 401 without detail; the reason goes to the log)."""
        if self.disabled:
            return None
        return await self.verifier(http).verify(bearer_token(authorization), self.base_url + path)

    def outbound_policy(self, verified: VerifiedToken | None) -> OutboundPolicy:
        """SSRF guard: the FHIR servers this caller may make the service call. A verified client's
        `fhir_servers`; with authentication disabled (local use), loopback servers and the locally
        configured list; otherwise none."""
        if verified is not None:
            return verified.client.outbound_policy()
        if not self.disabled:
            return OutboundPolicy.deny_all()
        return OutboundPolicy(self.local_fhir_servers, allow_http=True, loopback=True)
