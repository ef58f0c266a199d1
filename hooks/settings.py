"""Configuration: every setting from an environment variable (prefix `CALCINOSIS_`), validated at
start-up so that a bad value stops the service with a clear message instead of failing a request.
The README's configuration table lists the same names, defaults and meanings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
        default=20_000_000, ge=10_000, description="Largest FHIR response read (one page)."
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
        default=10_000_000, ge=100_000, le=200_000_000, description="Largest request body accepted (413 above)."
    )
    log_level: str = Field(default="INFO", description="Python log level.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level
