"""The FastAPI application: discovery, the service call, feedback, and error answers.

Request bodies are decoded with orjson (the service call's prefetch with msgspec, restricted to the
elements the service reads: `hooks.wire`) and validated against the spec models by hand rather than by
FastAPI's body parameters, for two reasons: FastAPI's default 422 answer echoes the input back (here
that would be patient data), and the spec wants 400 with an OperationOutcome. Every error answer
is an OperationOutcome naming fields only; nothing from the request body is echoed or logged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hooks import __version__
from hooks.audit import audit_feedback_call, audit_hook_call
from hooks.auth import AuthError, ReplayCacheUnavailableError, VerifiedToken
from hooks.auth.authenticator import INSECURE_WARNING, Authenticator
from hooks.auth.web import Caller, authenticated
from hooks.card_ids import CardIds
from hooks.logs import fields, protect_logs
from hooks.metrics import (
    CARDS,
    CARDS_SUPPRESSED,
    RequestMetrics,
    counting_store_errors,
    record_build,
    serve_metrics,
    store_failed,
)
from hooks.models import Discovery, Feedback, FeedbackBatch, FeedbackItem, HookRequest, operation_outcome
from hooks.overload import Admission, LoadShedder
from hooks.prefetch import DataUnobtainableError
from hooks.registry import DeclaredService, build_registry
from hooks.request_context import RequestContext, parse_networks
from hooks.service import CalcinosisService, InvalidContextError
from hooks.settings import Settings
from hooks.stores import (
    FeedbackRecord,
    GuardedFeedbackStore,
    StoreUnavailableError,
    feedback_records,
    open_feedback_store,
)
from hooks.suppression import CardSuppression, SuppressionUnavailableError, open_suppression_store
from hooks.tracing import configure_from_environment, describe_call, instrument_app, instrument_client
from hooks.wire import decode_hook_request

log = logging.getLogger("calcinosis_cds")
M = TypeVar("M", bound=BaseModel)
UTF8_BOM = b"\xef\xbb\xbf"


class ORJSONResponse(JSONResponse):
    """JSON response encoded with orjson (fast, and no NaN)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An answer other than 200, carried to the handler that renders the OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = headers or {}


FEEDBACK_UNAVAILABLE = "feedback store unavailable; send it again later"

CLIENT_CLOSED = 499
"""Status logged and audited when the client went away before its request was read (nginx's
convention); nothing is sent, there is no one to send it to."""


def problem(status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None) -> ORJSONResponse:
    """An OperationOutcome response."""
    return ORJSONResponse(operation_outcome(code, diagnostics), status_code=status, headers=headers)


def _field_errors(error: ValidationError) -> str:
    """Field paths and messages only: pydantic's own rendering includes the input values."""
    parts = []
    for item in error.errors()[:10]:
        location = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


async def read_json(
    request: Request, max_bytes: int, decode: Callable[[bytes], Any] = orjson.loads, timeout: float | None = None
) -> Any:
    """The request body as JSON, or an ApiError (415 wrong type, 413 too large, 400 not JSON, 408
    not received within `timeout` seconds, 499 the client went away). `decode` is `orjson.loads`
    or a decoder that raises as it does (`hooks.wire`)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/fhir+json") and not content_type.endswith("+json"):
        raise ApiError(415, "not-supported", "Content-Type must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "too-costly", "request body is too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                if not chunk:
                    continue  # the closing empty chunk: no copy of a body that came in one piece
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, "too-costly", "request body is too large")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "timeout", "request body not received in time", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(CLIENT_CLOSED, "incomplete", "client closed the connection") from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]  # some Windows-built clients send one; JSON parsers refuse it
    try:
        return decode(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid", "request body is not valid JSON") from error


def validate(model: type[M], data: Any) -> M:
    """Validate against a spec model; 400 naming the fields on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(400, "invalid", _field_errors(error)) from error


def verified_feedback(
    service_id: str, items: list[Any], card_ids: CardIds
) -> tuple[list[FeedbackRecord], list[tuple[int, str]]]:
    """The rows to store for a batch, and the entries refused (index and reason, fields only).

    Each entry stands alone: a malformed one, or one naming a card or suggestion this service did
    not issue (the MAC in the id does not verify), is refused without costing the others.
    """
    records: list[FeedbackRecord] = []
    rejected: list[tuple[int, str]] = []
    for index, raw in enumerate(items):
        try:
            item = FeedbackItem.model_validate(raw)
        except ValidationError as error:
            rejected.append((index, _field_errors(error)))
            continue
        topic = card_ids.topic(item.card)
        if topic is None:
            rejected.append((index, "card: not a card this service issued"))
            continue
        if any(card_ids.topic(s.id) != topic for s in item.accepted_suggestions or ()):
            rejected.append((index, "acceptedSuggestions: not a suggestion of this card"))
            continue
        records += feedback_records(service_id, item, topic)
    return records, rejected


def _body_schema(model: type[BaseModel], app: FastAPI) -> dict[str, Any]:
    """An OpenAPI requestBody for a spec model, so the published API (and fuzzers reading it)
    know the body the route parses by hand."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    app.state.openapi_schemas.update(definitions)
    app.state.openapi_schemas[model.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


async def hook_caller(request: Request, service_id: str) -> VerifiedToken | None:
    """The service call's authentication: as every route's, and a refused call is audited."""
    try:
        return await authenticated(request)
    except (AuthError, ReplayCacheUnavailableError) as error:
        declared = request.app.state.registry.get(service_id)
        audit_hook_call(
            service_id=declared.id if declared is not None else "(unknown service)",
            hook=declared.hook if declared is not None else "-",
            hook_instance=None,
            status=401 if isinstance(error, AuthError) else 503,
            verified=None,
            client_address=request.client.host if request.client else None,
            refused=True,
        )
        raise


HookCaller = Annotated[VerifiedToken | None, Depends(hook_caller)]
"""The service call's caller: authenticated as on every route, and audited when refused."""


async def feedback_caller(request: Request, service_id: str) -> VerifiedToken | None:
    """The feedback call's authentication: as every route's, and a refused call is audited."""
    try:
        return await authenticated(request)
    except (AuthError, ReplayCacheUnavailableError) as error:
        known = request.app.state.registry.get(service_id) is not None
        audit_feedback_call(
            service_id=service_id if known else "(unknown service)",
            status=401 if isinstance(error, AuthError) else 503,
            verified=None,
            client_address=request.client.host if request.client else None,
            refused=True,
        )
        raise


FeedbackCaller = Annotated[VerifiedToken | None, Depends(feedback_caller)]
"""The feedback call's caller: authenticated as on every route, and audited when refused."""


def outcome_of(status: int) -> str:
    """A word for the log line's status: answered, refused (the caller's side), client-closed, failed."""
    if status == CLIENT_CLOSED:
        return "client-closed"
    return {2: "answered", 4: "refused"}.get(status // 100, "failed")


def resources_skipped(cards: list[dict[str, Any]]) -> int:
    """How many resources of the request were not used (for the log line; the count travels in the
    subtype card's extension, never their ids)."""
    for card in cards:
        quality = ((card.get("extension") or {}).get("org.calcinosis-cds.assessment") or {}).get("dataQuality")
        if quality:
            return int(quality.get("resourcesSkipped", 0))
    return 0


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; the knowledge base and value sets load (and are checked) here."""
    settings = settings or Settings()
    protect_logs()
    configure_from_environment()  # off unless OTEL_* variables ask for traces (hooks/tracing.py)
    service = CalcinosisService(settings)
    registry = build_registry(settings, service)
    feedback = open_feedback_store(settings.feedback_database_url, pool_size=settings.feedback_pool_size)
    guarded_feedback = GuardedFeedbackStore(
        feedback, slots=settings.feedback_pool_size, timeout=settings.feedback_timeout_seconds
    )
    suppression = CardSuppression(
        open_suppression_store(settings.feedback_database_url, wait_timeout=settings.feedback_timeout_seconds),
        settings.suppression_days,
        settings.suppression_key,
        frozenset(settings.suppression_override_codes),
    )
    authenticator = Authenticator(settings)
    retry_after = {"Retry-After": str(settings.retry_after_seconds)}
    record_build(service.knowledge.version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False) as http:
            instrument_client(http)
            app.state.http = http
            # The knowledge base, value sets and FHIR validators are loaded and live for the whole
            # process: move them out of the collector's sight, and collect less often. A request's
            # objects die with it (no cycles), and a young generation that holds more than one
            # request's worth (a decade of dialysis labs: ~36,000 net allocations with the
            # restricted decode) means a lone request is never interrupted to scan them; with the
            # default thresholds, collections took ~80 ms of a heavy request (bench/).
            gc.collect()
            gc.freeze()
            gc.set_threshold(100_000, 20, 100)
            # The feedback store is prepared in the background (retried with back-off, the cause
            # logged): the hook call does not need it, so its outage must not stop the start.
            preparing = asyncio.create_task(guarded_feedback.prepare())
            stop_metrics = None
            if settings.metrics_port:
                stop_metrics = await serve_metrics(settings.metrics_host or settings.host, settings.metrics_port)
            try:
                yield
            finally:
                preparing.cancel()
                guarded_feedback.close()
                if stop_metrics is not None:
                    await stop_metrics()

    # redirect_slashes=False: Starlette would answer `POST /cds-services/calcinosis/` with a 307 to
    # a Location built from the Host header (an unauthenticated redirect to any host); 404 instead.
    docs = settings.api_docs  # off unless enabled: they describe the API to anyone who asks
    app = FastAPI(
        title="calcinosis-cds",
        version=__version__,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.service = service
    app.state.registry = registry
    app.state.feedback = feedback
    app.state.guarded_feedback = guarded_feedback
    app.state.http = None
    app.state.authenticator = authenticator
    app.state.openapi_schemas = {}
    instrument_app(app)

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    # Added last, so outermost of the app's own middleware: it sees every answer, a 500 included.
    app.add_middleware(RequestMetrics)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, error: AuthError) -> Response:
        response = problem(401, "login", "authentication required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(ReplayCacheUnavailableError)
    async def _replay_unavailable(request: Request, error: ReplayCacheUnavailableError) -> Response:
        # Fail closed: a token whose jti cannot be checked is not accepted, but it may be fine,
        # so the answer is "try again", not 401.
        log.warning("replay cache unavailable path=%s reason=%s", request.url.path, error)
        return problem(503, "transient", "service temporarily unavailable", retry_after)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        response = problem(error.status, error.code, error.diagnostics, error.headers)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        return problem(400, "invalid", "request does not match the API")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(error.status_code, "processing")
        return problem(error.status_code, code, str(error.detail) if error.status_code < 500 else "server error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "exception", "internal error; see the service log")

    @app.get("/cds-services")
    async def discovery(caller: Caller) -> Response:
        descriptions = [declared.describe() for declared in registry]
        if authenticator.disabled:
            for description in descriptions:
                description.extension = {
                    "org.calcinosis-cds.security": {"authentication": "disabled", "warning": INSECURE_WARNING}
                }
        body = Discovery(services=descriptions)
        return ORJSONResponse(body.wire())

    @app.post("/cds-services/{service_id}", openapi_extra=_body_schema(HookRequest, app))
    async def call(service_id: str, request: Request, verified: HookCaller) -> Response:
        started = time.perf_counter()
        declared: DeclaredService | None = None
        hook_instance: str | None = None
        status, cards = 500, None
        held: list[str] = []
        details: dict[str, Any] = {}
        try:
            declared = registry.get(service_id)
            if declared is None:
                raise ApiError(404, "not-found", "no such CDS service")
            hook_request = validate(
                HookRequest,
                await read_json(request, settings.max_body_bytes, decode_hook_request, settings.body_timeout_seconds),
            )
            hook_instance = str(hook_request.hook_instance)
            describe_call(hook=declared.hook, service=declared.id, hook_instance=hook_instance)
            policy = authenticator.outbound_policy(verified)
            if hook_request.fhir_server is not None and not policy.allows(hook_request.fhir_server):
                log.warning(
                    "untrusted fhirServer hookInstance=%s host=%s issuer=%s",
                    hook_instance,
                    urlsplit(hook_request.fhir_server).hostname,
                    verified.issuer if verified else "-",
                )
            if hook_request.hook != declared.hook:
                raise ApiError(400, "not-supported", f"service '{declared.id}' answers the '{declared.hook}' hook only")
            try:
                outcome = await declared.handler(hook_request, request.app.state.http, policy, None)
            except InvalidContextError as error:
                raise ApiError(400, "invalid", str(error)) from error
            except DataUnobtainableError as error:
                details["reason"] = str(error)
                raise ApiError(412, "processing", str(error)) from error
            body = outcome.response.wire()
            issued: list[dict[str, Any]] = body.get("cards", [])
            skipped = resources_skipped(issued)
            # An override silences the same card for the patient, on either service (hooks/suppression.py).
            if suppression.enabled and issued:
                try:
                    issued, held = await suppression.bounded(
                        suppression.filter_for,
                        verified.issuer if verified else "local",
                        outcome.patient_id,
                        issued,
                        timeout=settings.feedback_timeout_seconds,
                    )
                except SuppressionUnavailableError as error:
                    # Cards are never withheld for want of the store: show them all, and say so.
                    log.warning("suppression store unavailable hookInstance=%s reason=%s", hook_instance, error)
                body["cards"] = issued
            for topic in held:
                CARDS_SUPPRESSED.labels(topic).inc()
            for card in issued:
                CARDS.labels(
                    ((card.get("source") or {}).get("topic") or {}).get("code", "none"), card["indicator"]
                ).inc()
            status, cards = 200, len(issued)
            describe_call(cards=cards)
            details.update(
                suppressed=held,
                skipped=skipped,
                fhirRequests=outcome.data.fhir_requests,
                prefetch=dict(sorted(outcome.data.how.items())),
            )
            return ORJSONResponse(body)
        except ApiError as error:
            status = error.status
            raise
        finally:
            log.info(
                "hook call %s",
                fields(
                    hook=declared.hook if declared is not None else None,
                    hookInstance=hook_instance,
                    service=declared.id if declared is not None else None,
                    status=status,
                    outcome=outcome_of(status),
                    cards=cards,
                    **details,
                    durationMs=round((time.perf_counter() - started) * 1000, 1),
                ),
            )
            audit_hook_call(
                service_id=declared.id if declared is not None else "(unknown service)",
                hook=declared.hook if declared is not None else "-",
                hook_instance=hook_instance,
                status=status,
                verified=verified,
                client_address=request.client.host if request.client else None,
                cards=cards,
                suppressed=len(held),
            )

    @app.post("/cds-services/{service_id}/feedback", openapi_extra=_body_schema(Feedback, app))
    async def receive_feedback(service_id: str, request: Request, caller: FeedbackCaller) -> Response:
        status = 500
        received: int | None = None
        new: int | None = None
        rejected: list[tuple[int, str]] = []
        try:
            if registry.get(service_id) is None:
                raise ApiError(404, "not-found", "no such CDS service")
            batch = validate(
                FeedbackBatch, await read_json(request, settings.max_body_bytes, timeout=settings.body_timeout_seconds)
            )
            received = len(batch.feedback)
            records, rejected = verified_feedback(service_id, batch.feedback, service.card_ids)
            if not records:
                raise ApiError(400, "invalid", "; ".join(f"feedback.{i}: {why}" for i, why in rejected[:10]))
            try:
                with counting_store_errors("feedback", "add"):
                    new = await guarded_feedback.add(records)
            except StoreUnavailableError as error:
                # Nothing is answered 200 unless it is committed: during an outage the client is told
                # to send it again (CDS clients retry feedback), and idempotency makes that safe.
                log.warning("feedback not stored service=%s items=%d reason=%s", service_id, received, error)
                raise ApiError(503, "transient", FEEDBACK_UNAVAILABLE, retry_after) from error
            silenced = 0
            try:
                for record in records:
                    if record.outcome == "overridden" and await suppression.bounded(
                        suppression.overridden,
                        record.card,
                        record.override_code,
                        timeout=settings.feedback_timeout_seconds,
                    ):
                        silenced += 1
            except SuppressionUnavailableError as error:
                # The outcome is stored; the override is not yet in force: ask for the feedback again.
                log.warning("override not recorded service=%s reason=%s", service_id, error)
                raise ApiError(503, "transient", FEEDBACK_UNAVAILABLE, retry_after) from error
            log.info(
                "feedback %s",
                fields(service=service_id, items=received, rejected=len(rejected), new=new, silenced=silenced),
            )
            status = 200
        except ApiError as error:
            status = error.status
            raise
        finally:
            audit_feedback_call(
                service_id=service_id if registry.get(service_id) is not None else "(unknown service)",
                status=status,
                verified=caller,
                client_address=request.client.host if request.client else None,
                received=received,
                new=new,
                rejected=len(rejected),
            )
        answer: dict[str, Any] = {"received": received, "new": new}
        if rejected:
            answer["rejected"] = [{"index": i, "reason": why} for i, why in rejected]
        return ORJSONResponse(answer)

    @app.get("/healthz")
    async def healthz() -> Response:
        """Process up (liveness)."""
        return ORJSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready for hook calls: only what a hook call needs. The knowledge base and value sets
        (loaded in create_app, so a process that got here has them) and, with authentication on,
        a reachable replay cache (a ping bounded by its time-out). The feedback store is reported,
        from its last call (no I/O, so a hung database cannot stall the probe), but does not make
        the service unready: cards keep flowing while feedback answers 503."""
        checks: dict[str, Any] = {"knowledgeBase": service.knowledge.version}
        ping = getattr(authenticator.replay, "ping", None)
        if ping is not None and not authenticator.disabled:
            checks["replayCache"] = await ping()
        if checks.get("replayCache") is False:
            store_failed("replay_cache", "ping")
        ready = all(bool(v) for v in checks.values())
        healthy = guarded_feedback.healthy
        feedback_state = "unknown" if healthy is None else "ok" if healthy else "unavailable"
        return ORJSONResponse(
            {"status": "ready" if ready else "not-ready", "checks": checks, "feedbackStore": feedback_state},
            status_code=200 if ready else 503,
        )

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the spec models the hand-parsed routes read."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(app.state.openapi_schemas)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.preview_enabled:
        from hooks.preview import register_preview

        log.warning("card preview page enabled at /preview: development instances only (no authentication)")
        register_preview(app, service, settings.preview_scenarios)
    # Outermost but one, so a request beyond the limit costs nothing but its 503.
    admission = Admission(limit=settings.max_concurrent_requests)
    app.state.admission = admission
    app.add_middleware(LoadShedder, admission=admission, retry_after_seconds=settings.retry_after_seconds)
    # Outermost: every answer, a shed 503 included, carries a request id and the resolved client.
    app.add_middleware(RequestContext, trusted_proxies=parse_networks(settings.trusted_proxies))
    return app
