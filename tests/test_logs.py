"""No patient data, tokens or query strings in any log, libraries' loggers included: the service
run by its own command line (a real uvicorn process, its access log on, at INFO) and `check`,
each against a real FHIR server in the test, through the FHIR fallback, the access log and the
error paths. (test_api_security.py scans the in-process logs of a call with prefetch.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from hooks.logs import (
    JsonFormatter,
    NoExceptionMessages,
    NoQueryString,
    TextFormatter,
    fields,
    protect_logs,
    safe_traceback,
)
from hooks.settings import Settings
from tests.charts import Chart
from tests.hookclient import hook_request, make_app
from tests.realservers import REPO, FhirServer, fhir_server, service_process

PATIENT = "mrn-98765-zq"
FHIR_TOKEN = "fhir-token-5c1e9b"
QUERY_SECRET = "query-secret-8d2f"
SECRETS = ("Zebulon", "Quixotic", PATIENT, "1951-07-04", "13.37", "6.93", FHIR_TOKEN, QUERY_SECRET)


def phi_chart() -> Chart:
    chart = Chart(patient_id=PATIENT)
    chart.resources[0].update({"name": [{"family": "Quixotic", "given": ["Zebulon"]}], "birthDate": "1951-07-04"})
    chart.calcinosis(text="Calcinosis cutis, left elbow, Zebulon Quixotic")
    chart.lab("17861-6", 13.37, "mg/dL", 3)
    chart.lab("1751-7", 3.21, "g/dL", 3)
    chart.lab("2777-1", 6.93, "mg/dL", 3)
    return chart


def fallback_request(fhir_base: str, patient: str = PATIENT) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_base,
        "fhirAuthorization": {
            "access_token": FHIR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        },
        "context": {"userId": "Practitioner/doc-1", "patientId": patient},
    }


def assert_clean(logged: str) -> None:
    for secret in SECRETS:
        assert secret not in logged, f"{secret!r} is in the log"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_served_process_logs_no_patient_data_tokens_or_query_strings(log_format: str) -> None:
    server = FhirServer(resources=phi_chart().resources)

    def failing(path: str) -> tuple[int, Any] | None:
        return (500, {"resourceType": "OperationOutcome"}) if "/broken/" in path else None

    server.answer = failing
    env = {"CALCINOSIS_AUTH_DISABLED": "true", "CALCINOSIS_LOG_LEVEL": "INFO", "CALCINOSIS_LOG_FORMAT": log_format}
    with fhir_server(server), service_process(env) as service, httpx.Client(base_url=service.url) as http:
        ok = http.post("/cds-services/calcinosis", json=fallback_request(server.url + "/r4"))
        assert ok.status_code == 200 and len(ok.json()["cards"]) == 2  # everything fetched from FHIR (subtype, workup)
        assert any(PATIENT in s.path for s in server.seen)  # so the URLs did carry the patient id
        # Error paths: the FHIR server failing (412), a bad body with patient data in it (400), an
        # unknown service (404), a token in the query string of discovery and of a 404.
        failed = http.post("/cds-services/calcinosis", json=fallback_request(server.url + "/broken"))
        assert failed.status_code == 412
        bad = fallback_request(server.url + "/r4")
        bad["context"]["patientId"] = "Patient/" + PATIENT + " Zebulon Quixotic"
        assert http.post("/cds-services/calcinosis", json=bad).status_code == 400
        assert http.post("/cds-services/nope?access_token=" + QUERY_SECRET, json=bad).status_code == 404
        assert http.get("/cds-services", params={"access_token": QUERY_SECRET}).status_code == 200
        assert http.post("/cds-services/calcinosis/feedback", content=b"{" + PATIENT.encode()).status_code in (
            400,
            415,
        )
        logged = service.log()
    assert_clean(logged)
    assert "HTTP Request:" not in logged  # httpx's per-request INFO line
    if log_format == "text":
        assert '"GET /cds-services HTTP/1.1" 200' in logged  # the access log is on, without the query
        assert '"POST /cds-services/nope HTTP/1.1" 404' in logged
        assert "status=412" in logged and "fhirRequests=" in logged  # the service's own lines are there
        assert f"requestId={ok.headers['x-request-id']}" in logged
        assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO uvicorn\.access ", logged, re.M)
        return
    lines = [json_line(line) for line in logged.splitlines() if line.strip()]  # every line is one object
    assert {"uvicorn.error", "uvicorn.access", "calcinosis_cds", "calcinosis_cds.audit"} <= {e["logger"] for e in lines}
    access = [e for e in lines if e["logger"] == "uvicorn.access"]
    assert {"method": "GET", "path": "/cds-services", "status": 200} in [
        {k: e[k] for k in ("method", "path", "status")} for e in access
    ]
    assert {"method": "POST", "path": "/cds-services/nope", "status": 404} in [
        {k: e[k] for k in ("method", "path", "status")} for e in access
    ]
    assert all(e["client"] == "127.0.0.1" and e["durationMs"] >= 0 and e["requestId"] for e in access)
    calls = [e for e in lines if e["logger"] == "calcinosis_cds" and e["message"] == "hook call"]
    by_status = {e["status"]: e for e in calls}
    assert set(by_status) == {200, 412, 400, 404}
    answered = by_status[200]
    assert answered["requestId"] == ok.headers["x-request-id"]
    assert answered["hook"] == "patient-view" and answered["outcome"] == "answered" and answered["cards"] == 2
    assert answered["fhirRequests"] > 0 and answered["durationMs"] > 0 and answered["hookInstance"]
    assert by_status[412]["outcome"] == "refused" and by_status[412]["requestId"] == failed.headers["x-request-id"]
    # The access line and the service's own line of one request carry the same request id.
    assert ok.headers["x-request-id"] in {e["requestId"] for e in access}


def json_line(line: str) -> dict[str, Any]:
    """One log line as the JSON object it must be, with a UTC ISO 8601 time, a level and a logger."""
    entry = json.loads(line)
    assert isinstance(entry, dict), line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), line
    assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
    assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") and entry["logger"], line
    return entry


def test_check_logs_no_patient_data_or_tokens() -> None:
    server = FhirServer(resources=phi_chart().resources)

    def failing(path: str) -> tuple[int, Any] | None:
        return (500, {"resourceType": "OperationOutcome"}) if "/broken/" in path else None

    server.answer = failing
    env = {"CALCINOSIS_LOG_LEVEL": "INFO", "PATH": "/usr/bin:/bin"}
    with fhir_server(server):
        runs = [
            subprocess.run(
                [sys.executable, "-m", "hooks.cli", "check", "--fhir-server", server.url + base, "--patient", PATIENT]
                + ["--token", FHIR_TOKEN],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            for base in ("/r4", "/broken")
        ]
    assert runs[0].returncode == 0 and "[" in runs[0].stdout  # cards printed
    assert runs[1].returncode == 1 and "answered 500" in runs[1].stderr
    assert any(FHIR_TOKEN in (s.authorization or "") for s in server.seen)
    for run in runs:
        assert_clean(run.stderr)
        assert "HTTP Request:" not in run.stderr


def test_an_unexpected_error_is_logged_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    """A 500: the traceback's frames are kept for the operator, the exception's message (which
    may quote patient data) is not, neither in our line nor in the server's own."""
    app = make_app()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"cannot read {PATIENT} Zebulon")

    app.state.service.respond = broken

    async def call() -> httpx.Response:
        # As a server does: the app's exception, re-raised after its 500 answer, is not ours to see.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/cds-services/calcinosis", json=hook_request(phi_chart()))

    with caplog.at_level(logging.INFO):
        response = asyncio.run(call())
        try:
            raise RuntimeError(f"token {FHIR_TOKEN}")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    assert response.status_code == 500 and PATIENT not in response.text
    assert "ValueError (message withheld)" in caplog.text and "in broken" in caplog.text
    assert "RuntimeError (message withheld)" in caplog.text
    assert_clean(caplog.text)


def test_filters_directly() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', ("1.2.3.4", "GET", "/x?t=s", "1.1", 200), None
    )
    assert NoQueryString().filter(record) and record.getMessage() == '1.2.3.4 - "GET /x HTTP/1.1" 200'
    try:
        raise KeyError(PATIENT)
    except KeyError as error:
        text = safe_traceback(error)
        record = logging.LogRecord("x", logging.ERROR, "", 0, "m", (), (KeyError, error, error.__traceback__))
    assert PATIENT not in text and "KeyError" in text
    assert NoExceptionMessages().filter(record) and record.exc_text == text
    protect_logs()
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_the_json_format_writes_fields_and_withholds_exception_messages() -> None:
    """The formatter itself: fields as keys, a traceback without its message, a UTC time."""
    log = logging.getLogger("calcinosis_cds.test")
    try:
        raise ValueError(f"cannot read {PATIENT}")
    except ValueError:
        exc_info = sys.exc_info()
    record = log.makeRecord(
        log.name, logging.ERROR, "", 0, "hook call %s", (fields(status=500, cards=None, held=["workup"]),), exc_info
    )
    record.created = datetime(2026, 12, 5, 21, 9, 34, 500_000, tzinfo=UTC).timestamp()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2026-12-05T21:09:34.500Z" and entry["level"] == "ERROR"
    assert entry["message"] == "hook call" and entry["status"] == 500 and entry["held"] == ["workup"]
    assert entry["cards"] is None and "ValueError (message withheld)" in entry["exception"]
    text = TextFormatter().format(record)
    assert text.startswith(
        "2026-12-05T21:09:34.500Z ERROR calcinosis_cds.test hook call status=500 cards=- held=workup"
    )
    assert PATIENT not in text and PATIENT not in json.dumps(entry)
    # Any other formatter (a host's own logging) still shows the fields as key=value.
    assert record.getMessage() == "hook call status=500 cards=- held=workup"


def test_an_access_record_without_the_filter_still_loses_its_query() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("::1:5123", "GET", "/x?t=" + QUERY_SECRET, "1.1", 200),
        None,
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/x" and entry["client"] == "::1" and entry["status"] == 200
    assert QUERY_SECRET not in TextFormatter().format(record) and QUERY_SECRET not in json.dumps(entry)


def test_the_container_logs_json() -> None:
    """JSON is the default where a log collector reads: the image and the Kubernetes config."""
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert re.search(r"^\s+CALCINOSIS_LOG_FORMAT=json\b", runtime, re.M)
    config = (REPO / "deploy" / "kubernetes" / "base" / "config.env").read_text(encoding="utf-8").splitlines()
    assert "CALCINOSIS_LOG_FORMAT=json" in config
    assert Settings(auth_disabled=True).log_format == "text"  # a terminal, outside the container
    with pytest.raises(ValidationError):
        Settings(auth_disabled=True, log_format="xml")
