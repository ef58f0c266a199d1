"""Logging that carries no patient data, no tokens and no URLs, libraries' loggers included.

Three leaks are closed here, at the root rather than call by call:
- httpx logs every request URL at INFO (`HTTP Request: GET .../Condition?patient=...`), and
  httpcore traces connections at DEBUG: both are held at WARNING whatever the service's level;
- uvicorn's access log prints the path with its query string (a token sent as `?access_token=`
  would be written in full): a filter drops the query string from each access record;
- a traceback's last line is the exception's message, which may quote the data that caused it
  (uvicorn logs "Exception in ASGI application" with it, Starlette re-raising after our 500): a
  filter replaces the formatted exception with its type and the stack frames, without messages.

`protect_logs()` installs all three; the app calls it when it is built (in every worker process,
whatever started it: `calcinosis-cds serve`, uvicorn directly, or a test) and the command line
calls it for its other commands.
"""

from __future__ import annotations

import copy
import logging
import traceback
from typing import Any

QUIET_LIBRARIES = ("httpx", "httpcore", "hpack")
"""Loggers that print URLs (with patient ids in search queries) below WARNING."""

PROTECTED_LOGGERS = ("", "calcinosis_cds", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio")
"""Loggers whose records may carry a traceback: their exception text is reduced to types and frames."""


class NoQueryString(logging.Filter):
    """Drops the query string from uvicorn access records (`client - "GET /path?query HTTP/1.1" 200`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def safe_traceback(error: BaseException) -> str:
    """A traceback with exception types and stack frames but no exception messages."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        lines.append(f"{type(current).__module__}.{type(current).__qualname__} (message withheld)")
        lines.extend(f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames)
        current = current.__cause__ or current.__context__
        if current is not None:
            lines.append("caused by / while handling:")
    return "Traceback (most recent call last, messages withheld):\n" + "\n".join(lines)


class NoExceptionMessages(logging.Filter):
    """Replaces a record's formatted exception by `safe_traceback` (types and frames only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = safe_traceback(record.exc_info[1])
        return True


_NO_QUERY = NoQueryString()
_NO_MESSAGES = NoExceptionMessages()


def protect_logs() -> None:
    """Install the three protections (idempotent)."""
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if _NO_QUERY not in access.filters:
        access.addFilter(_NO_QUERY)
    for name in PROTECTED_LOGGERS:
        logger = logging.getLogger(name)
        # Records propagated from child loggers pass their ancestors' handlers, not their filters.
        for target in (logger, *logger.handlers):
            if _NO_MESSAGES not in target.filters:
                target.addFilter(_NO_MESSAGES)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def server_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the service's own loggers (`calcinosis_cds`, with the
    audit trail, and the libraries' warnings through the root logger). uvicorn applies it in every
    worker process: with `--workers` above 1 the workers are new processes, and without it the
    service's INFO lines, the audit trail included, went nowhere."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["service"] = {"format": LOG_FORMAT}
    config["handlers"]["service"] = {
        "class": "logging.StreamHandler",
        "formatter": "service",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["calcinosis_cds"] = {"handlers": ["service"], "level": level, "propagate": False}
    config["root"] = {"handlers": ["service"], "level": "WARNING"}
    return config
