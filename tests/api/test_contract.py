"""One request table, both apps under their real servers: same status codes, same bodies."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.conftest import REPO

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def _case(name, method, path, body=None, *, raw=None, headers=None, expect):
    return pytest.param(method, path, body, raw, headers, expect, id=name)


def _with(example, **changes):
    record = dict(example)
    for key, value in changes.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return record


_DROP = object()
EXAMPLE = json.loads((REPO / "data" / "example.json").read_text(encoding="utf-8"))

CASES = [
    _case("predict ok", "POST", "/predict", EXAMPLE, expect=200),
    _case("v1 predict ok", "POST", "/api/v1/predict", EXAMPLE, expect=200),
    _case("ints for floats", "POST", "/predict", _with(EXAMPLE, total_intl_minutes=10), expect=200),
    _case("missing field", "POST", "/predict", _with(EXAMPLE, state=_DROP), expect=422),
    _case("unknown field", "POST", "/predict", _with(EXAMPLE, colour="red"), expect=422),
    _case("wrong type", "POST", "/predict", _with(EXAMPLE, account_length="12"), expect=422),
    _case("bool for number", "POST", "/predict", _with(EXAMPLE, account_length=True), expect=422),
    _case("out of range", "POST", "/predict", _with(EXAMPLE, account_length=-1), expect=422),
    _case("not whole", "POST", "/predict", _with(EXAMPLE, total_day_calls=1.5), expect=422),
    _case("unknown category", "POST", "/predict", _with(EXAMPLE, state="ZZ"), expect=422),
    _case("number for category", "POST", "/predict", _with(EXAMPLE, state=7), expect=422),
    _case("null", "POST", "/predict", _with(EXAMPLE, state=None), expect=422),
    _case(
        "NaN",
        "POST",
        "/predict",
        raw=json.dumps(_with(EXAMPLE, total_day_minutes=float("nan"))),
        headers=JSON,
        expect=422,
    ),
    _case(
        "Infinity",
        "POST",
        "/predict",
        raw=json.dumps(_with(EXAMPLE, total_day_minutes=float("inf"))),
        headers=JSON,
        expect=422,
    ),
    _case(
        "many errors",
        "POST",
        "/predict",
        _with(EXAMPLE, state="ZZ", account_length=-5, area_code=_DROP, x=1),
        expect=422,
    ),
    _case(
        "feedback ok", "POST", "/feedback", {"prediction_id": "a" * 32, "label": "yes"}, expect=200
    ),
    _case(
        "feedback relabel",
        "POST",
        "/feedback",
        {"prediction_id": "a" * 32, "label": "no"},
        expect=200,
    ),
    _case(
        "feedback bad id", "POST", "/feedback", {"prediction_id": "A1", "label": "no"}, expect=422
    ),
    _case(
        "feedback bad label",
        "POST",
        "/feedback",
        {"prediction_id": "b" * 32, "label": "maybe"},
        expect=422,
    ),
    _case(
        "feedback number label",
        "POST",
        "/feedback",
        {"prediction_id": "b" * 32, "label": 1},
        expect=422,
    ),
    _case("feedback empty", "POST", "/feedback", {}, expect=422),
    _case(
        "feedback extra",
        "POST",
        "/feedback",
        {"prediction_id": "b" * 32, "label": "no", "x": 1},
        expect=422,
    ),
    _case(
        "feedback list",
        "POST",
        "/feedback",
        [{"prediction_id": "b" * 32, "label": "no"}],
        expect=422,
    ),
    _case("feedback malformed", "POST", "/feedback", raw='{"label": ', headers=JSON, expect=400),
    _case(
        "feedback as text",
        "POST",
        "/feedback",
        raw="label=no",
        headers={"Content-Type": "text/plain"},
        expect=415,
    ),
    _case("list body", "POST", "/predict", [EXAMPLE], expect=422),
    _case("string body", "POST", "/predict", "hello", expect=422),
    _case("malformed JSON", "POST", "/predict", raw='{"state": ', headers=JSON, expect=400),
    _case("not UTF-8", "POST", "/predict", raw=b"\xff\xfe{}", headers=JSON, expect=400),
    _case("empty body", "POST", "/predict", raw="", headers=JSON, expect=400),
    _case(
        "wrong content type",
        "POST",
        "/predict",
        raw="state=KS",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        expect=415,
    ),
    _case("no content type", "POST", "/predict", raw=json.dumps(EXAMPLE), headers={}, expect=415),
    _case(
        "oversized body",
        "POST",
        "/predict",
        raw=json.dumps({"pad": "x" * 70_000}),
        headers=JSON,
        expect=413,
    ),
    _case("batch ok", "POST", "/predict/batch", {"records": [EXAMPLE, EXAMPLE]}, expect=200),
    _case(
        "batch errors by index",
        "POST",
        "/predict/batch",
        {"records": [EXAMPLE, _with(EXAMPLE, state="ZZ"), _with(EXAMPLE, x=1, state=_DROP)]},
        expect=422,
    ),
    _case("batch too big", "POST", "/predict/batch", {"records": [EXAMPLE] * 51}, expect=422),
    _case("batch empty", "POST", "/predict/batch", {"records": []}, expect=422),
    _case("batch not a list", "POST", "/predict/batch", {"records": EXAMPLE}, expect=422),
    _case("batch no records", "POST", "/predict/batch", {"rows": []}, expect=422),
    _case("batch list body", "POST", "/predict/batch", [EXAMPLE], expect=422),
    _case("health", "GET", "/health", expect=200),
    _case("v1 health", "GET", "/api/v1/health", expect=200),
    _case("ready", "GET", "/ready", expect=200),
    _case("model", "GET", "/model", expect=200),
    _case("history bad limit", "GET", "/predictions?limit=abc", expect=422),
    _case("history limit too big", "GET", "/predictions?limit=501", expect=422),
    _case("history bad since", "GET", "/predictions?since=yesterday", expect=422),
    _case("history unknown param", "GET", "/predictions?colour=red", expect=422),
    _case("unknown route", "GET", "/nope", expect=404),
    _case("wrong method", "DELETE", "/predict", expect=405),
    _case("GET on POST route", "GET", "/predict/batch", expect=405),
]

#: Fields that legitimately differ between two calls (fresh ids).
VOLATILE = {"prediction_id", "received_at"}


def _normalise(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _normalise(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [_normalise(item) for item in body]
    return body


def _send(server, method, path, body, raw, headers):
    with server.client() as client:
        if raw is not None:
            return client.request(method, path, content=raw, headers=headers or {})
        if body is not None:
            return client.request(method, path, json=body)
        return client.request(method, path)


@pytest.mark.parametrize(("method", "path", "body", "raw", "headers", "expect"), CASES)
def test_both_apps_answer_alike(servers, method, path, body, raw, headers, expect):
    answers = {name: _send(s, method, path, body, raw, headers) for name, s in servers.items()}
    flask, fastapi = answers["flask"], answers["fastapi"]
    assert (flask.status_code, fastapi.status_code) == (expect, expect), (flask.text, fastapi.text)
    assert flask.headers["content-type"].startswith("application/json")
    assert fastapi.headers["content-type"].startswith("application/json")
    assert _normalise(flask.json()) == _normalise(fastapi.json())
    if expect >= 400:
        error = flask.json()
        assert set(error) == {"error", "message", "detail"}
        if expect == 422:
            assert error["detail"], "a 422 names at least one field"
            assert all(d["field"] and d["reason"] for d in error["detail"])


def test_errors_name_every_field_and_reason(servers):
    bad = _with(EXAMPLE, state="ZZ", account_length=-5, area_code=_DROP, x=1, total_day_calls=2.5)
    with servers["flask"].client() as client:
        detail = client.post("/predict", json=bad).json()["detail"]
    assert {(d["field"], d["reason"].split(";")[0]) for d in detail} == {
        ("account_length", "must be between 0 and 600"),
        ("area_code", "field required"),
        ("state", "unknown category 'ZZ'"),
        ("total_day_calls", "must be a whole number"),
        ("x", "unknown field"),
    }


def test_batch_errors_are_named_by_index(servers):
    body = {"records": [EXAMPLE, _with(EXAMPLE, state="ZZ"), EXAMPLE, _with(EXAMPLE, x=1)]}
    with servers["fastapi"].client() as client:
        detail = client.post("/predict/batch", json=body).json()["detail"]
    assert [d["field"] for d in detail] == ["records.1.state", "records.3.x"]


def test_prediction_response_carries_the_contract_fields(servers):
    for server in servers.values():
        with server.client() as client:
            response = client.post("/predict", json=EXAMPLE, headers={"X-Request-ID": "abc-123"})
        body = response.json()
        assert set(body) == {
            "prediction_id",
            "probability",
            "label",
            "threshold",
            "model_name",
            "model_version",
            "run_id",
            "arm",
        }
        assert response.headers["x-request-id"] == "abc-123"
        assert body["model_name"] == "churn-xgboost" and body["model_version"] == "1"
        assert body["arm"] == "champion" and len(body["run_id"]) == 32  # no rollout runs
        assert response.headers["x-model-version"] == "1"
        assert response.headers["x-model-arm"] == "champion"
        assert body["label"] == ("yes" if body["probability"] >= body["threshold"] else "no")
        assert len(body["prediction_id"]) == 32


def test_model_describes_version_metrics_and_features(servers):
    with servers["flask"].client() as client:
        model = client.get("/model").json()
    assert model["model_version"] == "1" and model["alias"] == "champion"
    # exported with its trees compiled (xgbops.compiled) wherever a C compiler is at hand
    has_compiler = any(shutil.which(name) for name in ("gcc", "cc", "clang"))
    assert model["scorer"] == ("compiled" if has_compiler else "xgboost")
    assert model["metrics"]["roc_auc"] > 0.85
    assert model["trained_at"]
    assert [f["name"] for f in model["features"]][:2] == ["state", "account_length"]
    state = model["features"][0]
    assert state["type"] == "categorical" and "KS" in state["categories"]


def test_405_says_which_methods_are_allowed(servers):
    for server in servers.values():
        with server.client() as client:
            assert "POST" in client.delete("/predict").headers["allow"]


DEEP = "[" * 5000 + "]" * 5000
EDGE_CASES = [
    _case(
        "huge integer",
        "POST",
        "/predict",
        raw=json.dumps(EXAMPLE)[:-1] + ', "x": ' + "9" * 5000 + "}",
        headers=JSON,
        expect=400,
    ),
    _case("deep nesting", "POST", "/predict", raw=DEEP, headers=JSON, expect=400),
    _case(
        "int beyond float",
        "POST",
        "/predict",
        raw=json.dumps(EXAMPLE).replace(
            '"account_length": 128', '"account_length": -1' + "0" * 400
        ),
        headers=JSON,
        expect=422,
    ),
    _case("unicode digit key", "POST", "/predict", _with(EXAMPLE, **{"²": 1}), expect=422),
    _case("empty key", "POST", "/predict/batch", {"records": [EXAMPLE], "": 1}, expect=422),
    _case("_schema key", "POST", "/predict", _with(EXAMPLE, _schema=1), expect=422),
    _case("repeated query", "GET", "/predictions?limit=5&limit=abc", expect=422),
    _case("empty query name", "GET", "/predictions?=x", expect=422),
    _case(
        "time before year 1",  # in UTC: filtered as the earliest time, not refused
        "GET",
        "/predictions?until=0001-01-01T01%3A00%3A01%2B02%3A00",
        expect=200,
    ),
    _case("huge offset", "GET", "/predictions?offset=865387374320416366727790592", expect=422),
]


@pytest.mark.parametrize(("method", "path", "body", "raw", "headers", "expect"), EDGE_CASES)
def test_edge_cases_the_fuzzers_found(servers, method, path, body, raw, headers, expect):
    test_both_apps_answer_alike(servers, method, path, body, raw, headers, expect)
