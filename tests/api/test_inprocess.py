"""The contract table once more, in-process (Flask test client, FastAPI over ASGI).

The real-server run (test_contract.py) is the proof; this run is fast, deterministic and lets
coverage see the FastAPI app, whose uvicorn process it cannot follow.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from api.core.service import PredictionService
from api.fastapi_app.app import create_app as create_fastapi
from api.flask_app import create_app as create_flask
from tests.api.test_contract import CASES, EDGE_CASES, EXAMPLE, _normalise
from tests.conftest import project_settings


@pytest.fixture(scope="module")
def apps(champion_project, tmp_path_factory):
    database = tmp_path_factory.mktemp("inprocess") / "history.db"
    settings = project_settings(
        champion_project,
        database_url=f"sqlite:///{database}",
        serve={"batch_limit": 50, "max_body_bytes": 65536},
    )
    service = PredictionService.create(settings)
    service.start()
    yield create_flask(settings, service=service), create_fastapi(settings, service=service)
    service.close()


def _fastapi(app, method, path, body, raw, headers):
    async def send():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if raw is not None:
                return await client.request(method, path, content=raw, headers=headers or {})
            if body is not None:
                return await client.request(method, path, json=body, headers=headers or {})
            return await client.request(method, path, headers=headers or {})

    return asyncio.run(send())


def _flask(app, method, path, body, raw, headers):
    client = app.test_client()
    if raw is not None:
        data = raw.encode() if isinstance(raw, str) else raw
        content_type = (headers or {}).get("Content-Type")
        return client.open(path, method=method, data=data, content_type=content_type)
    if body is not None:
        return client.open(path, method=method, json=body)
    return client.open(path, method=method)


@pytest.mark.parametrize(("method", "path", "body", "raw", "headers", "expect"), CASES + EDGE_CASES)
def test_in_process_apps_answer_alike(apps, method, path, body, raw, headers, expect):
    flask_app, fastapi_app = apps
    flask = _flask(flask_app, method, path, body, raw, headers)
    fastapi = _fastapi(fastapi_app, method, path, body, raw, headers)
    assert (flask.status_code, fastapi.status_code) == (expect, expect), (flask.data, fastapi.text)
    assert _normalise(json.loads(flask.data)) == _normalise(fastapi.json())


def test_fastapi_metrics_retrain_and_docs_in_process(apps):
    _, fastapi_app = apps
    assert _fastapi(fastapi_app, "POST", "/predict", EXAMPLE, None, None).status_code == 200
    metrics = _fastapi(fastapi_app, "GET", "/metrics", None, None, None)
    assert "xgbops_predictions_total" in metrics.text
    assert _fastapi(fastapi_app, "GET", "/api/v1/metrics", None, None, None).json()["requests"] > 0
    refused = _fastapi(fastapi_app, "POST", "/retrain", None, None, None)
    assert refused.status_code == 401  # retraining always needs an admin credential
    assert refused.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer xgb_000000000000_" + "A" * 43}
    assert _fastapi(fastapi_app, "GET", "/retrain/abc", None, None, wrong).status_code == 401
    document = _fastapi(fastapi_app, "GET", "/openapi.json", None, None, None).json()
    assert document["paths"]["/retrain"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "Record" in document["components"]["schemas"]
    history = _fastapi(fastapi_app, "GET", "/predictions?limit=1", None, None, None)
    assert history.status_code == 200
