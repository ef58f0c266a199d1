"""Configuration: every setting from an environment variable (prefix `CALCINOSIS_`), validated at
start-up so that a bad value stops the service with a clear message instead of failing a request.
The README's configuration table lists the same names, defaults and meanings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hooks.request_context import parse_networks

MAX_BODY_BYTES_DEFAULT = 32 * 1024 * 1024
"""32 MiB: a 20-year dialysis history sent as prefetch (~30,000 Observations, ~28 MB) fits; the
deployment's ingress annotation (`proxy-body-size: 32m`) matches it, and a test checks that."""


class Settings(BaseSettings):
    """Service settings. Defaults suit a single local instance."""

    model_config = SettingsConfigDict(env_prefix="CALCINOSIS_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address `serve` binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `serve` listens on.")
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes for `serve`.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=["*"],
        description="Origins allowed by CORS; '*' lets the CDS Hooks sandbox (a browser app) call the service.",
    )
    fetch_deadline_seconds: float = Field(
        default=4.0, gt=0, le=60, description="One deadline for all FHIR fallback fetches of a request."
    )
    fhir_request_timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="Timeout of a single FHIR request (never beyond the deadline)."
    )
    fhir_page_cap: int = Field(default=20, ge=1, le=1000, description="Most search pages followed per query.")
    fhir_page_size: int = Field(default=200, ge=1, le=1000, description="`_count` asked of the FHIR server.")
    fhir_max_response_bytes: int = Field(
        default=20_000_000, ge=10_000, description="Largest FHIR response read (one page, decoded bytes)."
    )
    fhir_max_request_bytes: int = Field(
        default=MAX_BODY_BYTES_DEFAULT,
        ge=10_000,
        description="Most decoded bytes of all FHIR answers of one hook call together (every page of every search).",
    )
    local_valuesets: str | None = Field(
        default=None, description="File or folder of FHIR ValueSets adding site-local codes."
    )
    include_unconfirmed_codes: bool = Field(
        default=False, description="Also use codes marked unconfirmed in the value sets (not recommended)."
    )
    feedback_database_url: str = Field(
        default="sqlite:///.calcinosis/feedback.db",
        description="Where feedback is kept: sqlite:///relative.db, sqlite:////absolute.db, postgresql://..., or memory://.",
    )
    max_body_bytes: int = Field(
        default=MAX_BODY_BYTES_DEFAULT,
        ge=100_000,
        le=200_000_000,
        description="Largest request body accepted (413 above); the default admits ~34,000 Observations.",
    )
    card_id_key: str | None = Field(
        default=None,
        min_length=32,
        description="Secret key of the MAC in card ids (feedback is stored only for cards this service issued); "
        "the same on every replica. Unset: a random key per process.",
        repr=False,
    )
    auth_disabled: bool = Field(
        default=False,
        description="Accept calls without a JWT (local use only: logged as a warning and shown in discovery).",
    )
    trusted_clients: str | None = Field(
        default=None,
        description="EHRs allowed to call: a JSON file path or inline JSON (issuer, jku, jwks, tenant, fhir_servers).",
    )
    public_base_url: str | None = Field(
        default=None,
        description="The base URL the EHR calls (e.g. https://cds.example.org); JWT audiences are built from it.",
    )
    replay_cache_url: str = Field(
        default="memory://", description="Where seen JWT ids are kept: memory:// (one instance) or redis://host:6379/0."
    )
    local_fhir_servers: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="With auth disabled: FHIR base URLs the service may call (loopback addresses are always allowed).",
    )
    workup_cap: int = Field(
        default=5, ge=1, le=20, description="Workup suggestions with a button; the rest are listed without one."
    )
    suppression_days: float = Field(
        default=30,
        ge=0,
        le=3650,
        description="Days a card topic stays quiet for a patient after an 'already addressed' or 'not relevant' "
        "override, unless its evidence changes (0 turns this off).",
    )
    suppression_key: str | None = Field(
        default=None,
        description="Secret for the keyed hash of issuer and patient id kept with overrides (same on every replica).",
    )
    suppression_override_codes: Annotated[list[str], NoDecode] = Field(
        default=[], description="The EHR's own override reason codes that mean 'already addressed' or 'not relevant'."
    )
    preview_enabled: bool = Field(
        default=False, description="Serve the card preview page at /preview (development instances only)."
    )
    preview_scenarios: Path | None = Field(
        default=None,
        description="Folder of FHIR Bundles the preview page lists (e.g. deploy/fhir-sandbox/patients of a checkout).",
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: str = Field(
        default="text",
        description="json: one JSON object per line (the container's default); text: one line of text.",
    )
    audit_log: str = Field(
        default="stderr",
        min_length=1,
        description="Where the audit trail (logger calcinosis_cds.audit) goes: stderr, stdout or a file path.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Addresses or CIDR blocks of the proxies in front (ingress); only their X-Forwarded-For "
        "and X-Request-ID are believed.",
    )
    max_concurrent_requests: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Requests one worker handles at once; beyond, 503 with Retry-After (health checks exempt).",
    )
    retry_after_seconds: int = Field(
        default=2, ge=1, le=3600, description="Retry-After of a 503 (overload, store or replay cache unavailable)."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A connection that has not sent a whole request header by then is closed.",
    )
    body_timeout_seconds: float = Field(
        default=15.0, gt=0, le=600, description="A request body not received in full by then is answered 408."
    )
    feedback_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Longest wait for the feedback store per call (then 503)."
    )
    feedback_pool_size: int = Field(
        default=4, ge=1, le=100, description="Connections (and threads) for the feedback store per worker."
    )
    replay_cache_timeout_seconds: float = Field(
        default=1.0, gt=0, le=30, description="Longest wait for the Redis replay cache per token (then 503)."
    )
    api_docs: bool = Field(default=False, description="Serve /docs, /redoc and /openapi.json (off: they answer 404).")
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics (GET /metrics), apart from the service port; 0 turns it off.",
    )
    metrics_host: str | None = Field(
        default=None, description="Address the metrics port binds to (default: the same as CALCINOSIS_HOST)."
    )

    @field_validator(
        "cors_origins", "local_fhir_servers", "suppression_override_codes", "trusted_proxies", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth_configured(self) -> Settings:
        if not self.auth_disabled and (not self.trusted_clients or not self.public_base_url):
            raise ValueError(
                "authentication is on: set CALCINOSIS_TRUSTED_CLIENTS and CALCINOSIS_PUBLIC_BASE_URL, "
                "or CALCINOSIS_AUTH_DISABLED=true for local use only"
            )
        return self

    @model_validator(mode="after")
    def _replay_shared_between_workers(self) -> Settings:
        # Each worker process keeps its own in-memory cache: a token replayed to another worker
        # would be accepted. With more than one worker the cache must be shared.
        if not self.auth_disabled and self.workers > 1 and self.replay_cache_url == "memory://":
            raise ValueError(
                "authentication is on with more than one worker: set CALCINOSIS_REPLAY_CACHE_URL to a "
                "redis:// URL (shared by the workers), or run one worker per process"
            )
        return self

    @field_validator("log_format")
    @classmethod
    def _format(cls, value: str) -> str:
        log_format = value.strip().lower()
        if log_format not in ("json", "text"):
            raise ValueError("must be json or text")
        return log_format

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo must stop the start, not silently trust nothing
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level
