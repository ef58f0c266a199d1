"""The application under benchmark: the real service plus a floor route that exists only here.

`POST /bench/floor` reads the body, decodes it with orjson and answers `{"cards": []}`. It sits on
the same FastAPI instance, behind the same middleware (CORS, request metrics, exception
handlers) and the same server, so service time minus floor time is what the service itself
costs: validation, prefetch resolution, mapping, reasoning and card rendering.

uvicorn loads it with `--factory bench.app:build_app` (cwd and PYTHONPATH at the repository root).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from hooks.app import ORJSONResponse, create_app
from hooks.settings import Settings

FLOOR_PATH = "/bench/floor"
SERVICE_PATH = "/cds-services/calcinosis"
ORDER_SIGN_PATH = "/cds-services/calcinosis-order-sign"


def build_app(**settings: Any) -> FastAPI:
    """The service app plus the floor. Feedback is kept in memory and EHR authentication is off
    (no JWT per request: the benchmark measures the clinical work); other settings come from the
    environment (CALCINOSIS_*) or the keyword arguments."""
    settings.setdefault("feedback_database_url", "memory://")
    settings.setdefault("auth_disabled", True)
    app = create_app(Settings(**settings))

    @app.post(FLOOR_PATH)
    async def floor(request: Request) -> Response:
        orjson.loads(await request.body())
        return ORJSONResponse({"cards": []})

    return app
