"""Behaviour only real servers show: metrics across workers, WebSockets, history, docs."""

from __future__ import annotations

import json
import re
import time

import pytest
from websockets.sync.client import connect

from tests.api.test_contract import EXAMPLE


def _counter(text: str, endpoint: str, status: str) -> float:
    pattern = (
        r'^xgbops_http_requests_total\{endpoint="'
        + re.escape(endpoint)
        + r'",method="POST",status="'
        + status
        + r'"\} ([0-9.e+]+)$'
    )
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def test_prometheus_counts_add_up_across_gunicorn_workers(servers):
    server = servers["flask"]
    with server.client() as client:
        before = _counter(client.get("/metrics").text, "/predict", "200")
        pids = set()
        for _ in range(40):
            client.post("/predict", json=EXAMPLE)
        # new connections spread over both workers; every scrape must see every request
        for _ in range(6):
            with server.client() as fresh:
                text = fresh.get("/metrics").text
                assert _counter(text, "/predict", "200") - before == 40
                pids.update(re.findall(r'pid="(\d+)"', text))
    assert "xgbops_http_request_duration_seconds_bucket" in text
    assert re.search(
        r'^xgbops_predictions_total\{arm="champion",label="no",model_version="1"\} ', text, re.M
    )
    assert re.search(
        r'^xgbops_model_info\{model_name="churn-xgboost",model_version="1"', text, re.M
    )


def test_json_metrics_summary(servers):
    for server in servers.values():
        with server.client() as client:
            client.post("/predict", json={**EXAMPLE, "state": "ZZ"})
            client.post("/predict", json=EXAMPLE)
            summary = client.get("/api/v1/metrics").json()
        assert summary["requests"] > 0
        assert 0 < summary["error_rate"] < 1
        assert summary["latency_ms"]["p50"] > 0
        assert 0 <= summary["positive_rate"] <= 1


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_websocket_streams_predictions(servers, kind):
    url = servers[kind].url.replace("http://", "ws://") + "/ws/predict"
    with connect(url, open_timeout=10) as socket:
        socket.send(json.dumps(EXAMPLE))
        first = json.loads(socket.recv(timeout=10))
        socket.send(json.dumps({"records": [EXAMPLE, EXAMPLE]}))
        batch = json.loads(socket.recv(timeout=10))
        socket.send("not json")
        error = json.loads(socket.recv(timeout=10))
        socket.send(json.dumps({**EXAMPLE, "state": "ZZ"}))
        refused = json.loads(socket.recv(timeout=10))
    assert first["model_version"] == "1" and 0 < first["probability"] < 1
    assert batch["count"] == 2
    assert error["error"] == "bad_request"
    assert refused["detail"][0]["field"] == "state"


def test_every_served_prediction_is_in_the_history(servers):
    for server in servers.values():
        with server.client() as client:
            ids = {client.post("/predict", json=EXAMPLE).json()["prediction_id"] for _ in range(5)}
            batch = client.post("/predict/batch", json={"records": [EXAMPLE] * 3}).json()
            ids |= {p["prediction_id"] for p in batch["predictions"]}
            found: set[str] = set()
            for _ in range(50):  # writes are batched every 0.2 s
                items = client.get("/predictions", params={"limit": 500}).json()["items"]
                found = {item["id"] for item in items}
                if ids <= found:
                    break
                time.sleep(0.1)
        assert ids <= found
        item = next(i for i in items if i["id"] in ids)
        assert item["model_version"] == "1" and item["input"]["state"] == "KS"


def test_openapi_and_swagger_ui(servers):
    for server in servers.values():
        with server.client() as client:
            document = client.get("/openapi.json").json()
            docs = client.get("/docs")
        assert document["openapi"].startswith("3.")
        for path in (
            "/predict",
            "/predict/batch",
            "/health",
            "/ready",
            "/model",
            "/predictions",
            "/metrics",
            "/api/v1/predict",
            "/api/v1/health",
            "/api/v1/metrics",
        ):
            assert path in document["paths"], (server.name, path)
        record = document["components"]["schemas"]["Record"]
        assert set(record["properties"]) == set(EXAMPLE)
        assert record["properties"]["state"]["enum"][:2] == ["AK", "AL"]
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
