"""Degrading gracefully, losing nothing: each dependency broken in turn (PostgreSQL and Redis of the
test's own, stopped or frozen with SIGSTOP), overload, slow and vanishing clients, several
replicas starting together, and the start-up refusals. The service answers 503 with Retry-After
where it cannot do the work now, never 500, and nothing it answered 200 is lost."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hooks.cli import main
from hooks.settings import Settings
from hooks.stores import PostgresFeedbackStore
from tests.charts import ICD10, Chart
from tests.hookclient import hook_request, make_app
from tests.ownservers import OwnPostgres, OwnRedis, own_postgres, own_redis
from tests.realservers import FhirServer, fhir_server, service_process

BASE = "http://testserver"
ISSUER = "https://ehr.example.org"
KID = "ehr-key-1"
FEEDBACK = "/cds-services/calcinosis/feedback"
SERVICE = "/cds-services/calcinosis"


@pytest.fixture(scope="module")
def postgres() -> Any:
    with own_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def fresh_database(server: OwnPostgres) -> str:
    name = f"feedback_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + "/" + name


ISSUING_APP: list[Any] = []


def issued_card(app: Any) -> str:
    """A differentials card id as the app issues them (feedback is stored only for those)."""
    card_ids = app.state.service.card_ids
    return str(card_ids.sign(str(uuid.UUID(uuid.uuid4().hex[:-2] + "03"))))


def feedback(card: str | None = None) -> dict[str, Any]:
    """A clinician's dismissal of a card issued by the app under test (`ISSUING_APP`)."""
    return {
        "feedback": [
            {
                "card": card or issued_card(ISSUING_APP[-1]),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-01T12:00:00Z",
            }
        ]
    }


def chart() -> Chart:
    c = Chart()
    c.calcinosis()
    c.condition("M34.1", ICD10, "CR(E)ST syndrome")
    c.mineral_panel(9.4, 4.1, 3.6)
    return c


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, called over ASGI; app exceptions become 500s as a server's would."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60) as client:
            yield client


def assert_503_retry(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["resourceType"] == "OperationOutcome"


# --- PostgreSQL (feedback) ----------------------------------------------------------------------


def test_feedback_during_a_postgres_outage_is_503_and_nothing_answered_200_is_lost(postgres: OwnPostgres) -> None:
    app = make_app(feedback_database_url=fresh_database(postgres), feedback_timeout_seconds=3.0)
    ISSUING_APP.append(app)

    async def scenario() -> tuple[list[str], list[str], list[int]]:
        stored, refused, other = [], [], []
        async with running(app) as client:
            for _ in range(5):
                card = issued_card(app)
                response = await client.post(FEEDBACK, json=feedback(card))
                assert response.status_code == 200, response.text
                stored.append(card)
            postgres.stop()
            try:
                for _ in range(10):
                    card = issued_card(app)
                    response = await client.post(FEEDBACK, json=feedback(card))
                    assert_503_retry(response)
                    refused.append(card)
                # Cards keep flowing, and the service stays ready.
                other.append((await client.post(SERVICE, json=hook_request(chart()))).status_code)
                ready = await client.get("/readyz")
                other.append(ready.status_code)
                assert ready.json()["feedbackStore"] == "unavailable"
            finally:
                postgres.start()
            # The client sends the refused feedback again: now stored.
            for card in refused:
                for _ in range(20):
                    response = await client.post(FEEDBACK, json=feedback(card))
                    if response.status_code == 200:
                        break
                    assert_503_retry(response)
                    await asyncio.sleep(0.5)
                assert response.status_code == 200
            kept.update(record.card for record in app.state.feedback.records())
        return stored, refused, other

    kept: set[str] = set()
    stored, refused, other = asyncio.run(scenario())
    assert other == [200, 200]
    assert set(stored) | set(refused) <= kept


def test_a_frozen_postgres_costs_a_bounded_wait_and_a_503(postgres: OwnPostgres) -> None:
    app = make_app(feedback_database_url=fresh_database(postgres), feedback_timeout_seconds=1.0)
    ISSUING_APP.append(app)

    async def scenario() -> list[int]:
        statuses = []
        async with running(app) as client:
            assert (await client.post(FEEDBACK, json=feedback())).status_code == 200
            postgres.freeze()
            try:
                for _ in range(6):  # more than the pool: stuck calls must not queue up
                    response = await client.post(FEEDBACK, json=feedback())
                    assert_503_retry(response)
                ready = await client.get("/readyz")
                statuses.append(ready.status_code)
                statuses.append((await client.post(SERVICE, json=hook_request(chart()))).status_code)
            finally:
                postgres.thaw()
        return statuses

    assert asyncio.run(scenario()) == [200, 200]


def test_postgres_down_at_start_does_not_stop_the_service_and_the_cause_is_logged(
    postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    url = fresh_database(postgres)
    postgres.stop()
    try:
        app = make_app(feedback_database_url=url, feedback_timeout_seconds=2.0)
        ISSUING_APP.append(app)
    except BaseException:
        postgres.start()
        raise

    async def scenario() -> list[int]:
        statuses = []
        async with running(app) as client:
            statuses.append((await client.get("/readyz")).status_code)
            assert_503_retry(await client.post(FEEDBACK, json=feedback()))
            postgres.start()
            guarded = app.state.guarded_feedback
            for _ in range(120):
                if guarded.healthy:
                    break
                await asyncio.sleep(0.5)
            statuses.append((await client.post(FEEDBACK, json=feedback())).status_code)
        return statuses

    with caplog.at_level("WARNING", logger="calcinosis_cds.stores"):
        assert asyncio.run(scenario()) == [200, 200]
    assert "feedback database not ready" in caplog.text and "Connection refused" in caplog.text


def test_replicas_starting_together_on_an_empty_database_all_start(postgres: OwnPostgres) -> None:
    url = fresh_database(postgres)
    replicas = 15
    barrier = threading.Barrier(replicas)
    errors: list[BaseException] = []
    stores: list[PostgresFeedbackStore] = []

    def start() -> None:
        store = PostgresFeedbackStore(url, pool_size=1)
        stores.append(store)
        barrier.wait()
        try:
            store.ensure_schema()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    assert errors == []


# --- Redis (replay cache) -----------------------------------------------------------------------


def secured_app(key: ec.EllipticCurvePrivateKey, replay_url: str, **settings: Any) -> Any:
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    clients = json.dumps({"clients": [{"issuer": ISSUER, "jwks": {"keys": [public]}}]})
    return make_app(
        auth_disabled=False, trusted_clients=clients, public_base_url=BASE, replay_cache_url=replay_url, **settings
    )


def bearer(key: ec.EllipticCurvePrivateKey, path: str = SERVICE) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID})}


def test_redis_down_or_frozen_fails_closed_with_503(key: ec.EllipticCurvePrivateKey) -> None:
    with own_redis() as redis:
        app = secured_app(key, redis.url, replay_cache_timeout_seconds=0.5)

        async def scenario(redis: OwnRedis) -> None:
            async with running(app) as client:
                assert (await client.post(SERVICE, json=hook_request(chart()), headers=bearer(key))).status_code == 200
                redis.freeze()
                try:
                    assert_503_retry(await client.post(SERVICE, json=hook_request(chart()), headers=bearer(key)))
                    assert_503_retry(await client.get("/cds-services", headers=bearer(key, "/cds-services")))
                    assert (await client.get("/readyz")).status_code == 503
                finally:
                    redis.thaw()
                redis.stop()
                assert_503_retry(await client.post(SERVICE, json=hook_request(chart()), headers=bearer(key)))
                redis.start()
                # Fail closed, then recover: a fresh token is accepted, a replayed one still refused.
                headers = bearer(key)
                for _ in range(20):
                    response = await client.post(SERVICE, json=hook_request(chart()), headers=headers)
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.25)
                assert response.status_code == 200
                again = await client.post(SERVICE, json=hook_request(chart()), headers=headers)
                assert again.status_code == 401

        asyncio.run(scenario(redis))


def test_the_redis_pool_serves_more_concurrent_calls_than_connections(key: ec.EllipticCurvePrivateKey) -> None:
    """At concurrency above the pool size, calls wait for a connection (bounded), never a 500."""
    with own_redis() as redis:
        # A generous bound (the wait is bounded, not short): the machine running the suite may be busy.
        app = secured_app(key, redis.url, max_concurrent_requests=256, replay_cache_timeout_seconds=15)
        app.state.authenticator.replay._redis.connection_pool.max_connections = 4

        async def scenario() -> list[int]:
            async with running(app) as client:
                calls = [client.get("/cds-services", headers=bearer(key, "/cds-services")) for _ in range(128)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = asyncio.run(scenario())
    assert set(statuses) <= {200, 503} and statuses.count(200) > 0


def test_with_authentication_several_workers_need_a_shared_replay_cache(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: ec.EllipticCurvePrivateKey
) -> None:
    monkeypatch.setenv(
        "CALCINOSIS_TRUSTED_CLIENTS",
        json.dumps({"clients": [{"issuer": ISSUER, "jku": [BASE.replace("http", "https") + "/j"]}]}),
    )
    monkeypatch.setenv("CALCINOSIS_PUBLIC_BASE_URL", BASE)
    monkeypatch.delenv("CALCINOSIS_AUTH_DISABLED", raising=False)
    monkeypatch.setenv("CALCINOSIS_WORKERS", "2")
    assert main(["serve"]) == 2
    assert "CALCINOSIS_REPLAY_CACHE_URL" in capsys.readouterr().err
    assert Settings(auth_disabled=True, workers=2).workers == 2  # local use: no replay cache needed
    assert Settings(workers=2, replay_cache_url="redis://127.0.0.1:1/0").workers == 2


def test_the_workers_option_needs_a_shared_replay_cache_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --workers 2` used to skip the check that CALCINOSIS_WORKERS=2 gets."""
    monkeypatch.setenv(
        "CALCINOSIS_TRUSTED_CLIENTS",
        json.dumps({"clients": [{"issuer": ISSUER, "jku": [BASE.replace("http", "https") + "/j"]}]}),
    )
    monkeypatch.setenv("CALCINOSIS_PUBLIC_BASE_URL", BASE)
    monkeypatch.delenv("CALCINOSIS_AUTH_DISABLED", raising=False)
    monkeypatch.delenv("CALCINOSIS_WORKERS", raising=False)
    monkeypatch.delenv("CALCINOSIS_REPLAY_CACHE_URL", raising=False)

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started two workers with an in-memory replay cache")

    monkeypatch.setattr("uvicorn.run", started)
    assert main(["serve", "--workers", "2"]) == 2
    assert "CALCINOSIS_REPLAY_CACHE_URL" in capsys.readouterr().err


def test_a_redis_replay_cache_warns_that_a_restart_reopens_the_window(
    key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        secured_app(key, "redis://127.0.0.1:1/0")
    assert "Redis restarts" in caplog.text and "replayed" in caplog.text


# --- overload ------------------------------------------------------------------------------------


def test_overload_is_shed_with_503_and_the_queue_stays_bounded() -> None:
    """Calls that wait on a slow FHIR server hold their slots; the rest are shed at once."""
    slow = FhirServer(resources=chart().resources)

    def delayed(path: str) -> None:
        time.sleep(0.3)
        return None

    slow.answer = delayed  # type: ignore[assignment]
    with fhir_server(slow):
        app = make_app(max_concurrent_requests=3, local_fhir_servers=[slow.url + "/r4"])

        async def scenario() -> list[httpx.Response]:
            async with running(app) as client:
                body = hook_request(chart(), prefetch={}, fhirServer=slow.url + "/r4")
                calls = [client.post(SERVICE, json=body) for _ in range(12)]
                health = [client.get("/healthz") for _ in range(3)]
                return list(await asyncio.gather(*calls, *health))

        responses = asyncio.run(scenario())
    statuses = [r.status_code for r in responses[:12]]
    assert set(statuses) == {200, 503}, statuses
    for response in responses[:12]:
        if response.status_code == 503:
            assert_503_retry(response)
    assert [r.status_code for r in responses[12:]] == [200, 200, 200]  # health checks are never shed
    assert app.state.admission.peak <= 3 and app.state.admission.shed == statuses.count(503)


def test_forged_expired_and_unknown_kid_tokens_cost_no_cryptography(
    key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hooks.auth import verify as verify_module

    checks: list[str] = []
    real = verify_module.jwt.PyJWT.decode_complete

    def counting(self: Any, token: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("key") is not None:
            checks.append("signature")
        return real(self, token, *args, **kwargs)

    monkeypatch.setattr(verify_module.jwt.PyJWT, "decode_complete", counting)
    app = secured_app(key, "memory://")
    now = int(time.time())
    good = {"iss": ISSUER, "aud": BASE + "/cds-services", "iat": now, "exp": now + 300}
    other = ec.generate_private_key(ec.SECP384R1())
    forged = [
        "not.a.token",
        "x" * 20_000,
        jwt.encode(dict(good, jti="1"), other, algorithm="ES384", headers={"kid": "made-up"}),  # unknown kid
        jwt.encode(dict(good, jti="2", exp=now - 600), other, algorithm="ES384", headers={"kid": KID}),  # expired
        jwt.encode(dict(good, jti="3", aud="https://elsewhere"), other, algorithm="ES384", headers={"kid": KID}),
        jwt.encode(dict(good, jti="4"), other, algorithm="ES384", headers={"kid": KID})[:-8],  # truncated signature
    ]

    async def scenario() -> list[int]:
        async with running(app) as client:
            return [
                (await client.get("/cds-services", headers={"Authorization": f"Bearer {t}"})).status_code
                for t in forged
            ]

    assert asyncio.run(scenario()) == [401] * len(forged)
    assert checks == []


# --- slow and vanishing clients (a real server process) -----------------------------------------


def read_status(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_slow_headers_stalled_bodies_and_disconnects_are_bounded_and_never_500() -> None:
    env = {
        "CALCINOSIS_AUTH_DISABLED": "true",
        "CALCINOSIS_HEADER_TIMEOUT_SECONDS": "1",
        "CALCINOSIS_BODY_TIMEOUT_SECONDS": "1",
    }
    with service_process(env) as service:
        host, port = service.url.removeprefix("http://").split(":")
        # Half a header, on many connections: each is closed by the server.
        half = [socket.create_connection((host, int(port)), timeout=30) for _ in range(20)]
        for sock in half:
            sock.sendall(b"POST /cds-services/calcinosis HTTP/1.1\r\nHost: x\r\nContent-Ty")
        for sock in half:
            assert sock.recv(1024) == b""  # closed, with no answer
            sock.close()
        # A body that stops midway: 408, not a 500.
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /cds-services/calcinosis HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"hook": "patient-'
            )
            assert read_status(sock) == b"HTTP/1.1 408 Request Timeout"
        # A client that goes away mid-body: nothing to answer, and not an error of ours.
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /cds-services/calcinosis HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"hook": '
            )
        time.sleep(0.5)  # let the server notice (not a timing assertion)
        assert httpx.get(service.url + "/healthz").status_code == 200
        logged = service.log()
    assert " 500" not in logged and "Traceback" not in logged and "Exception" not in logged
    assert '"POST /cds-services/calcinosis HTTP/1.1" 408' in logged
    assert '"outcomeDesc":"HTTP 499"' in logged  # the vanished client, audited as such


# --- documentation endpoints --------------------------------------------------------------------


def test_api_docs_are_off_unless_enabled() -> None:
    async def statuses(app: Any) -> list[int]:
        async with running(app) as client:
            return [(await client.get(path)).status_code for path in ("/docs", "/redoc", "/openapi.json")]

    assert asyncio.run(statuses(make_app())) == [404, 404, 404]
    assert asyncio.run(statuses(make_app(api_docs=True))) == [200, 200, 200]


def test_two_workers_share_the_replay_cache_and_both_log() -> None:
    """`serve --workers 2` with authentication: each token is accepted once whichever worker gets
    it (the red team saw 19 of 20 replays accepted with a per-worker cache), and both workers'
    lines, the audit trail included, reach the log."""
    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    base = "https://cds.example.test"
    with own_redis() as redis:
        env = {
            "CALCINOSIS_AUTH_DISABLED": "false",
            "CALCINOSIS_TRUSTED_CLIENTS": json.dumps({"clients": [{"issuer": ISSUER, "jwks": {"keys": [public]}}]}),
            "CALCINOSIS_PUBLIC_BASE_URL": base,
            "CALCINOSIS_REPLAY_CACHE_URL": redis.url,
        }
        with service_process(env, ("--workers", "2")) as service, httpx.Client(base_url=service.url) as http:
            first, replayed = [], []
            for _ in range(20):
                now = int(time.time())
                claims = {"iss": ISSUER, "aud": base + "/cds-services", "iat": now, "exp": now + 300}
                token = jwt.encode(dict(claims, jti=str(uuid.uuid4())), key, algorithm="ES384", headers={"kid": KID})
                headers = {"Authorization": f"Bearer {token}", "Connection": "close"}  # new connection: any worker
                first.append(http.get("/cds-services", headers=headers).status_code)
                replayed.append(http.get("/cds-services", headers=headers).status_code)
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": base + SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
            token = jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID})
            call = http.post(SERVICE, json=hook_request(chart()), headers={"Authorization": f"Bearer {token}"})
            assert call.status_code == 200
            logged = service.log()
    assert first == [200] * 20 and replayed == [401] * 20
    assert logged.count("reason=replayed-jti") == 20
    assert "Redis restarts" in logged  # the start-up warning about the replay window
    assert "hookInstance=" in logged and '"resourceType":"AuditEvent"' in logged  # INFO lines of a worker
