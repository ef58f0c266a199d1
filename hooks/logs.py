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

The formats (`CALCINOSIS_LOG_FORMAT`): `JsonFormatter` writes one JSON object per line (what a log
collector parses without a grok pattern), `TextFormatter` the same content on one line of text;
both stamp UTC ISO 8601 times (the old formats had local times without a zone), add the request id
of `hooks.request_context` (and, in JSON with tracing on, the current trace and span ids), write uvicorn's access record as fields, and reduce any traceback
themselves, so no handler configuration can let an exception message through. A line's own values
travel as one `LogFields` argument, readable by any formatter. `server_log_config()` is what
`serve` hands uvicorn: the same formatter for uvicorn's lines, the access log, the service's lines
and the audit trail, which gets a handler and destination of its own (`CALCINOSIS_AUDIT_LOG`).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from hooks import tracing
from hooks.request_context import current_request

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
    """Install the three protections (idempotent), and send Python's warnings through logging
    (in the log's format, rather than as raw text on stderr)."""
    logging.captureWarnings(True)
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


# --- formats -------------------------------------------------------------------------------------

# `CALCINOSIS_LOG_FORMAT` (checked by `hooks.settings`): one JSON object per line (log collectors,
# the container's default), or one line of text (a terminal).

AUDIT_LOGGER = "calcinosis_cds.audit"
"""The audit trail's logger: its own handler and stream (`CALCINOSIS_AUDIT_LOG`), not propagated."""

ACCESS_LOGGER = "uvicorn.access"
_QUERY = re.compile(r"\?[^ \"]*")
_BASE_KEYS = frozenset({"time", "level", "logger", "message", "requestId", "traceId", "spanId"})


class LogFields(dict[str, Any]):
    """Named values of a log line, passed as its one argument (`log.info("hook call %s",
    fields(status=200, cards=2))`). Any formatter prints them as `status=200 cards=2` (so a host
    that installs its own logging still sees them); the JSON format writes them as keys."""

    def __str__(self) -> str:
        return " ".join(f"{key}={_text_value(value)}" for key, value in self.items())


def fields(**values: object) -> LogFields:
    """The named values of a log line (`LogFields`)."""
    return LogFields(values)


def _split_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The record's message without its `LogFields`, and those fields."""
    args = record.args
    # logging unwraps a lone mapping argument: record.args is then the LogFields itself.
    if isinstance(args, LogFields):
        return str(record.msg).replace("%s", "").strip(), dict(args)
    if isinstance(args, tuple) and any(isinstance(a, LogFields) for a in args):
        values: dict[str, Any] = {}
        rest: list[object] = []
        for arg in args:
            if isinstance(arg, LogFields):
                values.update(arg)
                rest.append("")
            else:
                rest.append(arg)
        return (str(record.msg) % tuple(rest)).strip(), values
    return record.getMessage(), {}


def utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds and `Z` (`2026-12-05T21:09:34.512Z`)."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _access_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """uvicorn's access record (`'%s - "%s %s HTTP/%s" %d'`: client, method, path, version,
    status) as fields; the path without its query string even if the filter was not installed."""
    args = record.args
    if record.name != ACCESS_LOGGER or not isinstance(args, tuple) or len(args) != 5:
        return None
    client, method, path, version, status = args
    host, _, port = str(client).rpartition(":")  # uvicorn writes "host:port", an IPv6 host unbracketed
    address = host if port.isdigit() else str(client)
    return {
        "client": address,
        "method": method,
        "path": str(path).split("?", 1)[0],
        "httpVersion": version,
        "status": status,
    }


def trace_fields() -> dict[str, str]:
    """`traceId` and `spanId` of the current span (hex, as OTLP backends show them), so a log line
    can be joined with its trace; nothing when tracing is off (hooks/tracing.py), even if the
    caller sent a `traceparent` or a host process traces with a provider of its own."""
    if tracing.active() is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"traceId": format(context.trace_id, "032x"), "spanId": format(context.span_id, "016x")}


def _exception_text(record: logging.LogRecord) -> str | None:
    # Always the reduced traceback, whatever filters the record passed: the formatter is the
    # last place an exception message could slip out.
    if record.exc_info and record.exc_info[1] is not None:
        return safe_traceback(record.exc_info[1])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`,
    `requestId` while a request is served, `traceId` and `spanId` while a span is current and
    tracing is on, the record's fields; the access line as fields
    (`client`, `method`, `path`, `status`, `durationMs`), the audit line as `auditEvent`, an
    exception as `exception` (types and frames only)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        current = current_request()
        if current is not None:
            entry["requestId"] = current.request_id
        entry.update(trace_fields())
        access = _access_fields(record)
        audit_event = getattr(record, "audit_event", None)
        if access is not None:
            entry["message"] = f"{access['method']} {access['path']} {access['status']}"
            entry.update(access)
            if current is not None:
                entry["durationMs"] = current.elapsed_ms()
        elif audit_event is not None:
            entry["message"] = "AuditEvent"
            entry["auditEvent"] = audit_event
        else:
            message, values = _split_fields(record)
            entry["message"] = message
            for key, value in values.items():
                if key not in _BASE_KEYS:
                    entry[key] = value
        exception = _exception_text(record)
        if exception is not None:
            entry["exception"] = exception
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_value(value: object) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value) or "-"
    if value is None:
        return "-"
    return str(value)


class TextFormatter(logging.Formatter):
    """`<UTC time> <level> <logger> <message> key=value...`: the same content as the JSON format
    for a person reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        current = current_request()
        if record.name == ACCESS_LOGGER:
            message = _QUERY.sub("", message)
            if current is not None:
                message += f" durationMs={current.elapsed_ms()}"
        line = f"{utc_timestamp(record.created)} {record.levelname} {record.name} {message}"
        if current is not None:
            line += f" requestId={current.request_id}"
        exception = _exception_text(record)
        if exception is not None:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `CALCINOSIS_LOG_FORMAT`."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def refusal_line(message: str, log_format: str) -> str:
    """A start-up refusal (`invalid configuration: ...`) as the one line it is printed as, before
    any logging is configured (the settings that configure it are what was refused): in JSON, an
    object with the fields of every other line (`time`, `level` ERROR, `logger`, `message`), so a
    log collector reading the container's output sees why it stopped; in text, the plain message."""
    if log_format != "json":
        return f"calcinosis-cds: {message}"
    record = logging.LogRecord("calcinosis_cds", logging.ERROR, __file__, 0, message, None, None)
    return JsonFormatter().format(record)


def audit_handler_config(destination: str) -> dict[str, Any]:
    """The audit trail's handler: `stderr`, `stdout`, or a file appended to (reopened when a log
    rotator moves it: WatchedFileHandler)."""
    if destination in ("stderr", "stdout"):
        return {"class": "logging.StreamHandler", "formatter": "default", "stream": f"ext://sys.{destination}"}
    return {
        "class": "logging.handlers.WatchedFileHandler",
        "formatter": "default",
        "filename": destination,
        "encoding": "utf-8",
    }


def server_log_config(level: str, log_format: str = "text", audit_destination: str = "stderr") -> dict[str, Any]:
    """The logging configuration uvicorn applies in every worker process: uvicorn's own lines and
    the service's on stderr, the access log on stdout, the audit trail on its own handler, all in
    one format. With `--workers` above 1 the workers are new processes, and without it the
    service's INFO lines, the audit trail included, went nowhere.

    The audit trail is written at INFO whatever `level` is: raising the log level must not switch
    off the record of who called."""
    formatter_class = "hooks.logs.JsonFormatter" if log_format == "json" else "hooks.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # uvicorn writes `use_colors` into these two names when asked to; both are ours.
        "formatters": {"default": {"()": formatter_class}, "access": {"()": formatter_class}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
            "audit": audit_handler_config(audit_destination),
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            ACCESS_LOGGER: {"handlers": ["access"], "level": level, "propagate": False},
            "calcinosis_cds": {"handlers": ["default"], "level": level, "propagate": False},
            AUDIT_LOGGER: {"handlers": ["audit"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }


def configure_command_logging(level: str, log_format: str) -> None:
    """Logging for the commands other than `serve` (`check`, `evaluate`, ...): stderr, the format
    of the setting, the protections installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    protect_logs()
