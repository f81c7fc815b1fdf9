"""What the client controls never reaches PostgreSQL unchecked: both apps under their real
servers, the prediction history on the real PostgreSQL (NUL is where SQLite and PostgreSQL
part: PostgreSQL refuses it in text, and before this check the apps answered 503 or 500 with
the driver's message)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api.conftest import POSTGRES_RETRAIN_TOKEN, Server
from tests.api.test_contract import EXAMPLE

pytestmark = pytest.mark.postgres

AUTH = {"Authorization": f"Bearer {POSTGRES_RETRAIN_TOKEN}"}


NUL = "%00"
#: (request, the parameter the 422 must name): a NUL in every text parameter the API reads.
NUL_CASES = [
    (f"/predictions?model_version=1{NUL}", "model_version"),
    (f"/predictions?since=2026-01-01T00:00:00Z{NUL}", "since"),
    (f"/predictions?until=2026-01-01T00:00:00{NUL}", "until"),
    (f"/predictions?limit=5{NUL}", "limit"),
    (f"/predictions?offset={NUL}", "offset"),
    (f"/predictions?model{NUL}version=1", "model\x00version"),
    (f"/retrain/{'a' * 31}{NUL}", "job_id"),
]


def _get(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    # Raw path: httpx must not re-encode the percent escapes the case is made of.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        request = client.build_request("GET", path, **kwargs)
        request.url = httpx.URL(server.url + path)
        return client.send(request)


@pytest.mark.parametrize(("path", "parameter"), NUL_CASES)
def test_a_nul_in_any_text_parameter_is_a_422_naming_it_in_both_apps(
    postgres_servers, path, parameter
):
    answers = {
        kind: _get(server, path, headers=AUTH) for kind, server in postgres_servers.servers.items()
    }
    bodies = {kind: answer.json() for kind, answer in answers.items()}
    for kind, answer in answers.items():
        assert answer.status_code == 422, (kind, answer.text)
        assert [d["field"] for d in bodies[kind]["detail"]] == [parameter], bodies[kind]
    assert bodies["flask"] == bodies["fastapi"]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/predictions?model_version=" + "9" * 65, 422, "must be at most 64 characters"),
        ("/retrain/not-a-job-id", 422, "32 lower-case hexadecimal digits"),
        ("/retrain/" + "0" * 32, 404, None),
    ],
)
def test_malformed_and_unknown_ids_and_long_filters(postgres_servers, path, status, reason):
    for kind, server in postgres_servers.servers.items():
        answer = _get(server, path, headers=AUTH)
        assert answer.status_code == status, (kind, answer.text)
        if reason:
            assert reason in answer.json()["detail"][0]["reason"]


def test_valid_queries_still_reach_postgresql(postgres_servers):
    flask = postgres_servers.servers["flask"]
    with httpx.Client(base_url=flask.url, timeout=10) as client:
        served = client.post("/predict", json=EXAMPLE).json()
        version = served["model_version"]
    for kind, server in postgres_servers.servers.items():
        answer = None
        for _ in range(50):  # the write-behind flush
            answer = _get(server, f"/predictions?model_version={version}&limit=500")
            ids = [item["id"] for item in answer.json()["items"]]
            if served["prediction_id"] in ids:
                break
            time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, kind
        assert served["prediction_id"] in ids, kind
