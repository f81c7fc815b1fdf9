"""Who may call what, and how often (api.core.access): keys, scopes, the retrain token, JWTs
from a JWKS, rate limits in memory and on the real Redis, and both apps under real servers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from api.core.access import Access, CredentialsUnavailable, RateLimits, document_security
from api.core.errors import Forbidden, TooManyRequests, Unauthorized
from tests.api.conftest import start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.conftest import project_settings
from tests.processes import free_port
from xgbops.config import ConfigError
from xgbops.database import create_engine_for, migrate
from xgbops.keys import KeyStore

TOKEN = "access-tests-retrain-token"  # pragma: allowlist secret
CLIENT = "10.1.2.3"


@pytest.fixture
def keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    migrate(url)
    engine = create_engine_for(url)
    yield KeyStore(engine)
    engine.dispose()


def _access(champion_project, keys, engine=None, **overrides):
    settings = project_settings(champion_project, retrain_token=TOKEN, **overrides)
    return Access(settings, engine or (lambda: keys.engine))


def _bearer(text):
    return f"Bearer {text}"


# -- credentials and scopes ---------------------------------------------------------------------


def test_auth_off_leaves_scoring_open_but_never_retraining(champion_project, keys):
    access = _access(champion_project, keys)
    assert access.check("POST", "/predict", None, None, CLIENT) == {}
    assert access.check("GET", "/predictions", None, None, CLIENT) == {}
    with pytest.raises(Unauthorized, match="a credential is required") as missing:
        access.check("POST", "/retrain", None, None, CLIENT)
    assert missing.value.headers["WWW-Authenticate"] == "Bearer"
    assert access.check("POST", "/retrain", _bearer(TOKEN), None, CLIENT) == {}
    _, admin = keys.create("ops", ["admin"])
    assert access.check("GET", "/retrain/{job_id}", None, admin, CLIENT) == {}
    assert access.check("GET", "/health", None, None, CLIENT) == {}  # open: not in the table


def test_with_auth_on_each_operation_needs_its_scope(champion_project, keys):
    access = _access(champion_project, keys, auth={"enabled": True})
    _, scorer = keys.create("scorer", ["predict"])
    _, reader = keys.create("reader", ["read"])
    assert access.check("POST", "/predict", _bearer(scorer), None, CLIENT) == {}
    assert access.check("POST", "/predict/batch", None, scorer, CLIENT) == {}  # X-API-Key
    assert access.check("GET", "/model", None, reader, CLIENT) == {}
    with pytest.raises(Forbidden, match="lacks the predict scope"):
        access.check("POST", "/predict", _bearer(reader), None, CLIENT)
    with pytest.raises(Forbidden, match="lacks the admin scope"):
        access.check("POST", "/retrain", _bearer(scorer), None, CLIENT)
    with pytest.raises(Unauthorized, match="a credential is required"):
        access.check("GET", "/predictions", "Basic dXNlcjpwYXNz", None, CLIENT)


def test_every_wrong_credential_gets_the_same_answer(champion_project, keys):
    access = _access(champion_project, keys, auth={"enabled": True})
    key, text = keys.create("someone", ["predict"])
    revoked, revoked_text = keys.create("gone", ["predict"])
    keys.revoke(revoked.id)
    secret = text[len("xgb_") + 13 :]
    wrong = [
        f"xgb_{key.id}_{'A' * 43 if secret != 'A' * 43 else 'B' * 43}",  # right id, wrong secret
        f"xgb_{'0' * 12}_{secret}",  # unknown id
        revoked_text,
        "not-a-key",
        TOKEN + "x",
        "a.b.c",  # looks like a JWT, but no JWKS is configured
    ]
    answers = set()
    for credential in wrong:
        with pytest.raises(Unauthorized) as refused:
            access.check("POST", "/predict", _bearer(credential), None, CLIENT)
        answers.add((refused.value.message, tuple(refused.value.headers.items())))
    assert answers == {
        ("invalid credentials", (("WWW-Authenticate", 'Bearer error="invalid_token"'),))
    }


def test_a_revoked_key_is_refused_once_the_cache_expires(champion_project, keys):
    access = _access(champion_project, keys, auth={"enabled": True, "key_cache_seconds": 0.3})
    key, text = keys.create("soon revoked", ["predict"])
    access.check("POST", "/predict", _bearer(text), None, CLIENT)
    keys.revoke(key.id)
    access.check("POST", "/predict", _bearer(text), None, CLIENT)  # still trusted from cache
    time.sleep(0.4)
    with pytest.raises(Unauthorized, match="invalid credentials"):
        access.check("POST", "/predict", _bearer(text), None, CLIENT)


def test_a_key_store_outage_keeps_known_keys_and_refuses_unknown_ones_with_503(
    champion_project, keys
):
    dead = create_engine_for("postgresql://postgres@127.0.0.1:9/nowhere")  # nothing listens
    engines = [keys.engine]
    access = _access(
        champion_project,
        keys,
        engine=lambda: engines[-1],
        auth={"enabled": True, "key_cache_seconds": 0},
    )
    _, known = keys.create("known", ["predict"])
    _, unseen = keys.create("unseen", ["predict"])
    access.check("POST", "/predict", _bearer(known), None, CLIENT)
    engines.append(dead)
    access.check("POST", "/predict", _bearer(known), None, CLIENT)  # what the store said last
    with pytest.raises(CredentialsUnavailable) as unavailable:
        access.check("POST", "/predict", _bearer(unseen), None, CLIENT)
    assert unavailable.value.status == 503
    dead.dispose()


# -- JWTs from an identity provider ---------------------------------------------------------------


class _Jwks(BaseHTTPRequestHandler):
    document = b"{}"

    def do_GET(self):  # noqa: N802  # http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def identity_provider():
    """A real HTTP server publishing one RSA public key as a JWKS; yields (url, sign)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    handler = type(
        "Jwks",
        (_Jwks,),
        {"document": json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}).encode()},
    )
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def sign(claims, key=private, kid="k1", algorithm="RS256"):
        now = datetime.now(UTC)
        body = {
            "sub": "alice",
            "iss": "https://idp.test",
            "aud": "xgbops",
            "exp": now + timedelta(minutes=5),
            **claims,
        }
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})

    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", sign
    server.shutdown()
    server.server_close()


def test_jwts_signed_by_the_providers_keys_carry_their_scopes(
    champion_project, keys, identity_provider
):
    url, sign = identity_provider
    access = _access(
        champion_project,
        keys,
        auth={
            "enabled": True,
            "jwks_url": url,
            "jwt_audience": "xgbops",
            "jwt_issuer": "https://idp.test",
        },
    )
    assert (
        access.check("POST", "/predict", _bearer(sign({"scope": "predict read"})), None, CLIENT)
        == {}
    )
    assert access.check("GET", "/model", _bearer(sign({"scp": ["read"]})), None, CLIENT) == {}
    with pytest.raises(Forbidden, match="lacks the admin scope"):
        access.check("POST", "/retrain", _bearer(sign({"scope": "predict"})), None, CLIENT)
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = [
        sign({"scope": "predict"}, key=intruder),  # not the provider's key
        sign({"scope": "predict", "aud": "someone-else"}),
        sign({"scope": "predict", "iss": "https://evil.test"}),
        sign({"scope": "predict", "exp": datetime.now(UTC) - timedelta(minutes=1)}),
        jwt.encode({"sub": "alice", "scope": "predict"}, key=None, algorithm="none"),
        jwt.encode(
            {
                "sub": "alice",
                "scope": "predict",
                "aud": "xgbops",
                "iss": "https://idp.test",
                "exp": 2**40,
            },
            "an-hmac-secret-of-at-least-32-bytes!!",
            algorithm="HS256",
            headers={"kid": "k1"},
        ),  # pragma: allowlist secret
    ]
    for token in refused:
        with pytest.raises(Unauthorized, match="invalid credentials"):
            access.check("POST", "/predict", _bearer(token), None, CLIENT)


# -- rate limits ----------------------------------------------------------------------------------


def _limits(champion_project, storage_uri, predict="5/minute"):
    settings = project_settings(
        champion_project, limits={"predict": predict, "storage_uri": storage_uri}
    )
    return RateLimits.from_settings(settings)


def _spend(limits, subject, times):
    allowed, refused, headers = 0, [], {}
    for _ in range(times):
        try:
            headers = limits.hit("predict", subject)
            allowed += 1
        except TooManyRequests as error:
            refused.append(error)
    return allowed, refused, headers


def test_a_limit_in_memory_counts_per_subject_and_says_when_to_retry(champion_project):
    limits = _limits(champion_project, "memory://")
    allowed, refused, headers = _spend(limits, "key:a", 8)
    assert allowed == 5 and len(refused) == 3
    assert headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": headers["RateLimit-Reset"],
        "RateLimit-Policy": "5;w=60",
    }
    assert 0 < int(headers["RateLimit-Reset"]) <= 60
    error = refused[0]
    assert error.status == 429 and 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["RateLimit-Remaining"] == "0"
    assert _spend(limits, "key:b", 1)[0] == 1  # another subject has its own count
    assert limits.hit("read", "key:a") == {}  # no read limit set


def test_two_workers_on_redis_share_one_limit(champion_project, redis_url):
    workers = [_limits(champion_project, redis_url, "7/minute") for _ in range(2)]
    subject = f"key:{uuid.uuid4().hex}"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _spend(workers[i % 2], subject, 3), range(4)))
    assert sum(allowed for allowed, _, _ in results) == 7


def test_a_redis_outage_lets_requests_through(champion_project):
    limits = _limits(champion_project, f"redis://127.0.0.1:{free_port()}/0", "1/minute")
    allowed, refused, headers = _spend(limits, "key:a", 3)
    assert (allowed, refused, headers) == (3, [], {})


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"predict": "lots"}, "limits.predict: 'lots' is not a rate"),
        ({"read": "5/fortnight"}, "limits.read"),
        ({"predict": "5/second", "storage_uri": "carrier-pigeon://x"}, "limits.storage_uri"),
    ],
)
def test_a_wrong_limit_setting_is_named(champion_project, limits, message):
    with pytest.raises(ConfigError, match=message):
        RateLimits.from_settings(project_settings(champion_project, limits=limits))


def test_the_openapi_documents_say_what_the_server_enforces(champion_project):
    def paths():
        return {
            "/predict": {"post": {"responses": {}}},
            "/retrain": {"post": {"description": "Train.", "responses": {}}},
            "/health": {"get": {"responses": {}}},
        }

    open_server = paths()
    document_security(open_server, project_settings(champion_project))
    assert "security" not in open_server["/predict"]["post"]
    assert open_server["/retrain"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert set(open_server["/retrain"]["post"]["responses"]) == {"401", "403"}
    assert "admin" in open_server["/retrain"]["post"]["description"]

    locked = paths()
    document_security(
        locked,
        project_settings(champion_project, auth={"enabled": True}, limits={"predict": "9/second"}),
    )
    assert set(locked["/predict"]["post"]["responses"]) == {"401", "403", "429"}
    assert locked["/health"]["get"] == {"responses": {}}


# -- both apps, real servers, real PostgreSQL and Redis -------------------------------------------


@pytest.fixture(scope="module")
def locked_servers(champion_project, postgres_admin_url, redis_url, tmp_path_factory):
    """Flask (gunicorn, 2 workers) and FastAPI (uvicorn) with auth on, keys on one PostgreSQL
    database, and a predict limit of 12 a minute counted on Redis for both apps together."""
    import psycopg  # pylint: disable=import-outside-toplevel

    name = f"xgbops_access_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = f"{postgres_admin_url.rsplit('/', 1)[0]}/{name}"
    migrate(database)
    engine = create_engine_for(database)
    logs = tmp_path_factory.mktemp("access-logs")
    started = {}
    try:
        for kind, workers in (("flask", "2"), ("fastapi", "1")):
            started[kind] = start_server(
                kind,
                champion_project,
                logs,
                DATABASE_URL=database,
                XGBOPS_RETRAIN_TOKEN=TOKEN,
                XGBOPS_SERVE__WORKERS=workers,
                XGBOPS_AUTH__ENABLED="true",
                XGBOPS_LIMITS__PREDICT="12/minute",
                XGBOPS_LIMITS__STORAGE_URI=redis_url,
            )
        yield started, KeyStore(engine)
    finally:
        for server in started.values():
            stop_server(server)
        engine.dispose()
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_both_apps_refuse_and_admit_alike(locked_servers):
    servers, keys = locked_servers
    _, scorer = keys.create("scorer", ["predict"])
    _, reader = keys.create("reader", ["read"])
    seen = {}
    for kind, server in servers.items():
        with server.client() as client:
            missing = client.post("/predict", json=EXAMPLE)
            wrong = client.post("/predict", json=EXAMPLE, headers={"X-API-Key": scorer[:-1] + "#"})
            scoped = client.post(
                "/predict", json=EXAMPLE, headers={"Authorization": _bearer(reader)}
            )
            admitted = client.post("/predict", json=EXAMPLE, headers={"X-API-Key": scorer})
            read = client.get("/model", headers={"Authorization": _bearer(reader)})
            token = client.get(f"/retrain/{'0' * 32}", headers={"Authorization": _bearer(TOKEN)})
            open_ = [client.get(path).status_code for path in ("/health", "/ready", "/metrics")]
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert wrong.status_code == 401 and scoped.status_code == 403
        assert admitted.status_code == 200, admitted.text
        assert admitted.headers["ratelimit-limit"] == "12"
        assert admitted.headers["ratelimit-policy"] == "12;w=60"
        assert read.status_code == 200 and "ratelimit-limit" not in read.headers  # no read limit
        assert token.status_code == 404  # the retrain token is an admin credential
        assert open_ == [200, 200, 200]
        seen[kind] = [r.json() for r in (missing, wrong, scoped)]
    assert seen["flask"] == seen["fastapi"]
    assert seen["flask"][1] == {
        "error": "unauthorized",
        "message": "invalid credentials",
        "detail": [],
    }
    assert seen["flask"][2]["message"] == "this credential lacks the predict scope"


def test_one_limit_holds_across_every_worker_of_both_apps(locked_servers):
    servers, keys = locked_servers
    _, key = keys.create("busy client", ["predict"])

    def call(i):
        server = servers["flask" if i % 3 else "fastapi"]
        with server.client() as client:  # a new connection each: the workers share the load
            return client.post("/predict", json=EXAMPLE, headers={"X-API-Key": key})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 12 + [429] * 8
    refused = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
    assert all(a.headers["ratelimit-remaining"] == "0" for a in refused)
    assert {a.json()["error"] for a in refused} == {"too_many_requests"}
    assert {a.request.url.port for a in refused} | {a.request.url.port for a in answers} == {
        int(s.url.rsplit(":", 1)[1]) for s in servers.values()
    }


def test_the_websocket_handshake_needs_a_key_in_both_apps(locked_servers):
    servers, keys = locked_servers
    _, key = keys.create("socket", ["predict"])
    for server in servers.values():
        url = server.url.replace("http://", "ws://") + "/ws/predict"
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, open_timeout=10).close()
        assert refused.value.response.status_code == 401
        with ws_connect(url, additional_headers={"X-API-Key": key}, open_timeout=10) as socket:
            socket.send(json.dumps(EXAMPLE))
            assert "probability" in json.loads(socket.recv(timeout=10))
