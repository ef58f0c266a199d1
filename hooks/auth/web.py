"""Authentication as a FastAPI dependency: a route declares `caller: Caller` and runs only for a
verified caller (or with authentication disabled, then `caller` is None). A refused token raises
`AuthError`, which the app answers 401 with no detail; the reason goes to the log and to
the `calcinosis_auth_failures_total{reason}` metric, never the token."""

from __future__ import annotations

import logging
from typing import Annotated

import httpx
from fastapi import Depends, Request

from hooks.auth.authenticator import Authenticator
from hooks.auth.errors import AuthError
from hooks.auth.verify import VerifiedToken
from hooks.metrics import AUTH_FAILURES

log = logging.getLogger("calcinosis_cds")


async def authenticated(request: Request) -> VerifiedToken | None:
    """Verify the EHR's JWT for the exact URL called (`app.state.authenticator`)."""
    authenticator: Authenticator = request.app.state.authenticator
    if request.app.state.http is None:
        request.app.state.http = httpx.AsyncClient(follow_redirects=False)
    try:
        return await authenticator.authenticate(
            request.headers.get("authorization"), request.url.path, request.app.state.http
        )
    except AuthError as error:
        AUTH_FAILURES.labels(error.reason).inc()
        log.warning("auth rejected path=%s reason=%s issuer=%s", request.url.path, error.reason, error.issuer or "-")
        raise


Caller = Annotated[VerifiedToken | None, Depends(authenticated)]
"""A route parameter: the verified caller (None with authentication disabled)."""
