"""Security through the HTTP API: JWT on every endpoint (real EC keys, real signatures), the FHIR
server allowlist (SSRF), input limits, and logs free of patient data and tokens."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.charts import ICD10, Chart
from tests.fhir_chart import searchset
from tests.hookclient import FHIR_BASE, get, hook_request, make_app, post

BASE = "http://testserver"
ISSUER = "https://ehr.example.org"
KID = "ehr-key-1"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def trusted_clients(key: ec.EllipticCurvePrivateKey) -> str:
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    return json.dumps({"clients": [{"issuer": ISSUER, "jwks": {"keys": [public]}, "fhir_servers": [FHIR_BASE]}]})


def token(key: ec.EllipticCurvePrivateKey, path: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


def secured_app(key: ec.EllipticCurvePrivateKey) -> Any:
    return make_app(auth_disabled=False, trusted_clients=trusted_clients(key), public_base_url=BASE)


def calcinosis_chart() -> Chart:
    chart = Chart()
    chart.calcinosis()
    chart.condition("M34.1", ICD10, "CR(E)ST syndrome")
    chart.mineral_panel(9.4, 4.1, 3.6)
    return chart


def test_every_endpoint_requires_a_valid_token(key: ec.EllipticCurvePrivateKey) -> None:
    app = secured_app(key)
    for path in ("/cds-services",):
        assert get(app, path).status_code == 401
        assert get(app, path, {"Authorization": f"Bearer {token(key, path)}"}).status_code == 200
    service = "/cds-services/calcinosis"
    request = hook_request(calcinosis_chart())
    assert post(app, service, request).status_code == 401
    ok = post(app, service, request, {"Authorization": f"Bearer {token(key, service)}"})
    assert ok.status_code == 200 and len(ok.json()["cards"]) == 2
    feedback = "/cds-services/calcinosis/feedback"
    body = {
        "feedback": [
            {
                "card": ok.json()["cards"][0]["uuid"],
                "outcome": "overridden",
                "overrideReason": {"userComment": "known"},
                "outcomeTimestamp": "2026-11-01T12:00:00Z",
            }
        ]
    }
    assert (
        post(app, feedback, body, {"Authorization": f"Bearer {token(key, service)}"}).status_code == 401
    )  # aud is the service URL
    assert post(app, feedback, body, {"Authorization": f"Bearer {token(key, feedback)}"}).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": BASE + "/cds-services"},
        {"exp": int(time.time()) - 120},
        {"iss": "https://other.example.org"},
        {"iat": int(time.time()) + 3600},
    ],
)
def test_rejections_are_401_without_detail(
    key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app = secured_app(key)
    path = "/cds-services/calcinosis"
    bad = token(key, path, **claims)
    with caplog.at_level(logging.INFO):
        response = post(app, path, hook_request(calcinosis_chart()), {"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["issue"][0]["diagnostics"] == "authentication required"
    assert "reason=" in caplog.text and bad not in caplog.text


def test_a_replayed_token_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    app = secured_app(key)
    path = "/cds-services"
    once = token(key, path)
    assert get(app, path, {"Authorization": f"Bearer {once}"}).status_code == 200
    assert get(app, path, {"Authorization": f"Bearer {once}"}).status_code == 401


def test_only_the_clients_fhir_servers_are_called(
    key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    chart = calcinosis_chart()
    path = "/cds-services/calcinosis"
    with respx.mock(assert_all_called=False) as mock:
        evil = mock.route(host="evil.example").mock(return_value=httpx.Response(200, json=searchset([])))
        request = hook_request(chart, prefetch={}, with_server=True)
        request["fhirServer"] = "https://evil.example/fhir"
        with caplog.at_level(logging.INFO):
            response = post(secured_app(key), path, request, {"Authorization": f"Bearer {token(key, path)}"})
        assert response.status_code == 412 and not evil.called
        assert "not a FHIR server trusted" in response.json()["issue"][0]["diagnostics"]
        assert "untrusted fhirServer" in caplog.text and "secret-token-value" not in caplog.text
        trusted = mock.get(url__startswith=FHIR_BASE).mock(return_value=httpx.Response(200, json=searchset([])))
        allowed = post(
            secured_app(key),
            path,
            hook_request(chart, prefetch={}, with_server=True),
            {"Authorization": f"Bearer {token(key, path)}"},
        )
        assert allowed.status_code == 200 and trusted.called


def test_http_fhir_servers_are_refused_unless_local(key: ec.EllipticCurvePrivateKey) -> None:
    from hooks.auth import TrustedClient, fhir_server_allowed

    client = TrustedClient(
        issuer=ISSUER, jku=("https://ehr.example.org/jwks",), fhir_servers=("https://fhir.example.org/r4",)
    )
    assert fhir_server_allowed(client, "https://fhir.example.org/r4")
    assert not fhir_server_allowed(client, "http://fhir.example.org/r4")
    assert not fhir_server_allowed(client, "https://fhir.example.org/r4/../admin")
    assert not fhir_server_allowed(client, "https://user@fhir.example.org/r4")


def test_disabled_authentication_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        app = make_app(auth_disabled=True)
    assert "authentication is disabled" in caplog.text
    service = get(app, "/cds-services").json()["services"][0]
    assert service["extension"]["org.calcinosis-cds.security"]["authentication"] == "disabled"


def test_input_limits() -> None:
    app = make_app(max_body_bytes=100_000)
    large = json.dumps(hook_request(Chart())) + " " * 200_000
    assert post(app, "/cds-services/calcinosis", large).status_code == 413
    deep = '{"hook": ' + "[" * 5000 + "]" * 5000 + "}"
    response = post(app, "/cds-services/calcinosis", deep)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


def test_logs_carry_no_patient_data_or_tokens(
    key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    chart = Chart(patient_id="mrn-98765-zq")
    chart.resources[0].update({"name": [{"family": "Quixotic", "given": ["Zebulon"]}], "birthDate": "1951-07-04"})
    chart.calcinosis(text="Calcinosis cutis, left elbow, Zebulon Quixotic")
    chart.lab("17861-6", 13.37, "mg/dL", 3)
    chart.lab("1751-7", 3.21, "g/dL", 3)
    chart.lab("2777-1", 6.93, "mg/dL", 3)
    path = "/cds-services/calcinosis"
    bearer = token(key, path)
    with caplog.at_level(logging.DEBUG):
        response = post(secured_app(key), path, hook_request(chart), {"Authorization": f"Bearer {bearer}"})
        post(
            secured_app(key),
            path,
            {"hook": "patient-view", "context": {"patientId": "Patient/mrn-98765-zq"}},
            {"Authorization": f"Bearer {token(key, path)}"},
        )
    assert response.status_code == 200
    logged = caplog.text
    assert "hookInstance=" in logged and "cards=2" in logged
    for secret in ("Zebulon", "Quixotic", "mrn-98765-zq", "1951-07-04", "13.37", "6.93", bearer, "secret-token-value"):
        assert secret not in logged, secret


def test_every_hook_call_is_audited_without_patient_data(
    key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    app = secured_app(key)
    path = "/cds-services/calcinosis"
    chart = calcinosis_chart()
    request = hook_request(chart)
    with caplog.at_level(logging.INFO, logger="calcinosis_cds.audit"):
        post(app, path, request, {"Authorization": f"Bearer {token(key, path)}"})
        post(app, path, request)  # no token
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "calcinosis_cds.audit"]
    assert [e["outcome"] for e in events] == ["0", "4"]
    ok, rejected = events
    assert ok["resourceType"] == "AuditEvent" and ok["agent"][0]["who"]["identifier"]["system"] == ISSUER
    assert ok["entity"][0]["what"]["identifier"]["value"] == request["hookInstance"]
    assert ok["outcomeDesc"] == "HTTP 200, 2 cards" and rejected["outcomeDesc"] == "HTTP 401"
    assert chart.patient_id not in json.dumps(events)


def test_a_token_replayed_to_another_replica_is_refused_with_redis(key: ec.EllipticCurvePrivateKey) -> None:
    def replica() -> Any:
        return make_app(
            auth_disabled=False,
            trusted_clients=trusted_clients(key),
            public_base_url=BASE,
            replay_cache_url="redis://127.0.0.1:6379/0",
        )

    path = "/cds-services"
    once = token(key, path)
    assert get(replica(), path, {"Authorization": f"Bearer {once}"}).status_code == 200
    assert get(replica(), path, {"Authorization": f"Bearer {once}"}).status_code == 401


def test_order_sign_service_and_its_feedback_require_their_own_token(key: ec.EllipticCurvePrivateKey) -> None:
    """The registry's routes authenticate every service alike; `aud` names the exact service."""
    from tests.test_order_scenarios import WARFARIN, calciphylaxis_chart
    from tests.test_order_sign_api import order_sign_request

    app = secured_app(key)
    service = "/cds-services/calcinosis-order-sign"
    request = order_sign_request(calciphylaxis_chart(), WARFARIN)
    assert post(app, service, request).status_code == 401
    other = "/cds-services/calcinosis"
    assert post(app, service, request, {"Authorization": f"Bearer {token(key, other)}"}).status_code == 401
    ok = post(app, service, request, {"Authorization": f"Bearer {token(key, service)}"})
    assert ok.status_code == 200 and ok.json()["cards"][0]["indicator"] == "warning"
    feedback = service + "/feedback"
    body = {
        "feedback": [
            {
                "card": ok.json()["cards"][0]["uuid"],
                "outcome": "overridden",
                "overrideReason": {"userComment": "discussed"},
                "outcomeTimestamp": "2026-11-01T12:00:00Z",
            }
        ]
    }
    assert post(app, feedback, body).status_code == 401
    assert post(app, feedback, body, {"Authorization": f"Bearer {token(key, feedback)}"}).status_code == 200
