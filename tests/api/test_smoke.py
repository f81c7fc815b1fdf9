"""``python -m api.smoke``: passes on the real API, fails with a reason on anything else."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api import smoke
from tests.processes import free_port
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "example.json"
GOOD_PREDICTION = {
    "prediction_id": "0" * 32,
    "probability": 0.25,
    "label": "no",
    "threshold": 0.5,
    "model_name": "churn-xgboost",
    "model_version": "1",
    "run_id": "0" * 32,
    "arm": "champion",
}

#: (status, body) a fake API answers for a path.
Answer = tuple[int, object]


@contextmanager
def fake_api(answers: dict[str, Answer]) -> Iterator[str]:
    """A tiny HTTP server answering each path with a fixed status and JSON body."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = answers.get(self.path, (404, {"error": "not_found"}))
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _healthy(predict: Answer) -> dict[str, Answer]:
    return {
        "/health": (200, {"status": "ok"}),
        "/ready": (200, {"status": "ready"}),
        "/predict": predict,
    }


def test_passes_against_the_real_api_under_gunicorn(servers):
    completed = subprocess.run(
        [sys.executable, "-m", "api.smoke", servers["flask"].url, "--example", str(EXAMPLE)]
        + ["--timeout", "30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "smoke test passed" in completed.stdout
    assert "churn-xgboost version 1" in completed.stdout


def test_passes_against_the_fastapi_twin(servers, capsys):
    assert smoke.main([servers["fastapi"].url, "--example", str(EXAMPLE), "--timeout", "30"]) == 0
    assert "answered probability" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("predict", "reason"),
    [
        pytest.param((500, {"error": "internal"}), "answered 500", id="server error"),
        pytest.param((200, "<html>oops</html>"), "no JSON", id="not JSON"),
        pytest.param((200, [GOOD_PREDICTION]), "not a JSON object", id="a list"),
        pytest.param(
            (200, {k: v for k, v in GOOD_PREDICTION.items() if k != "label"}),
            "missing ['label']",
            id="field missing",
        ),
        pytest.param((200, {**GOOD_PREDICTION, "score": 1}), "undocumented ['score']", id="extra"),
        pytest.param((200, {**GOOD_PREDICTION, "probability": 1.5}), "probability", id="p > 1"),
        pytest.param((200, {**GOOD_PREDICTION, "probability": True}), "probability", id="bool p"),
        pytest.param((200, {**GOOD_PREDICTION, "threshold": 0}), "threshold", id="threshold 0"),
        pytest.param((200, {**GOOD_PREDICTION, "model_version": ""}), "model_version", id="empty"),
    ],
)
def test_fails_with_the_reason_when_predict_breaks_the_contract(predict, reason, capsys):
    with fake_api(_healthy(predict)) as url:
        status = smoke.main([url, "--example", str(EXAMPLE), "--timeout", "5"])
    assert status == smoke.EXIT_FAILED
    assert reason in capsys.readouterr().err


def test_the_fake_api_answering_the_contract_passes(capsys):
    """The fake above is faithful: answering the contract makes the check pass."""
    with fake_api(_healthy((200, GOOD_PREDICTION))) as url:
        assert smoke.main([url, "--example", str(EXAMPLE), "--timeout", "5"]) == 0
    assert "churn-xgboost version 1" in capsys.readouterr().out


def test_fails_when_the_api_never_becomes_ready(capsys):
    answers = {"/health": (200, {"status": "ok"}), "/ready": (503, {"status": "not_ready"})}
    with fake_api(answers) as url:
        assert smoke.main([url, "--example", str(EXAMPLE), "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "GET /ready did not answer 200 within 1 s" in err and "503" in err


def test_fails_on_timeout_when_nothing_listens(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert smoke.main([url, "--example", str(EXAMPLE), "--timeout", "1"]) == smoke.EXIT_FAILED
    err = capsys.readouterr().err
    assert "GET /health did not answer 200 within 1 s" in err and "ConnectionError" in err


@pytest.mark.parametrize(
    "write",
    [lambda p: p.write_text("{not json"), lambda p: p.write_text("[1, 2]"), lambda p: None],
    ids=["not JSON", "not an object", "missing"],
)
def test_a_bad_example_file_is_a_usage_error(
    tmp_path: Path, write: Callable[[Path], object], capsys
):
    example = tmp_path / "example.json"
    write(example)
    assert smoke.main(["http://127.0.0.1:9", "--example", str(example)]) == smoke.EXIT_USAGE
    assert str(example) in capsys.readouterr().err
