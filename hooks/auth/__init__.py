"""Authentication of the EHR (CDS Hooks 2.0.1 bearer JWT), in four parts:

- `clients`: the trusted EHRs and their configuration;
- `keys`: public keys from JWKs, and JWK Sets fetched from allowlisted `jku` URLs;
- `verify`: the token checks (signature, claims, replay);
- `replay`: the `jti` replay cache (memory, or Redis shared by replicas);

with `authenticator` (what the app applies, and the outbound policy of a verified caller) and
`web` (the FastAPI dependency the routes declare). The outbound policy itself is
`hooks.outbound`.
"""

from hooks.auth.clients import TrustedClient, fhir_server_allowed, load_trusted_clients
from hooks.auth.errors import REASONS, AuthConfigError, AuthError, ReplayCacheUnavailableError
from hooks.auth.keys import DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS, JwksFetcher
from hooks.auth.replay import InMemoryReplayCache, RedisReplayCache, ReplayCache, open_replay_cache
from hooks.auth.verify import JwtVerifier, VerifiedToken, bearer_token

__all__ = [
    "DEFAULT_ALGORITHMS",
    "REASONS",
    "SUPPORTED_ALGORITHMS",
    "AuthConfigError",
    "AuthError",
    "InMemoryReplayCache",
    "JwksFetcher",
    "JwtVerifier",
    "RedisReplayCache",
    "ReplayCache",
    "ReplayCacheUnavailableError",
    "TrustedClient",
    "VerifiedToken",
    "bearer_token",
    "fhir_server_allowed",
    "load_trusted_clients",
    "open_replay_cache",
]
