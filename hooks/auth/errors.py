"""Why a token or a trusted-client configuration was refused."""

from __future__ import annotations

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


class ReplayCacheUnavailableError(Exception):
    """The replay cache cannot say whether a `jti` was seen (Redis down, stalled or saturated). The
    token is not accepted: the call is answered 503 with Retry-After, not 401 (the token may be
    fine) and not 500."""
