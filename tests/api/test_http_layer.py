"""The HTTP layer under the real servers: a body over the limit is refused however it is framed."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.api.conftest import Server
from tests.api.test_contract import EXAMPLE
from tests.api.test_fuzz import MAX_BODY


def _chunked(body: bytes, size: int = 8192) -> bytes:
    framed = b""
    for start in range(0, len(body), size):
        part = body[start : start + size]
        framed += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return framed + b"0\r\n\r\n"


def _raw_request(server: Server, request: bytes) -> tuple[int, bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(body) < length:
            body += connection.recv(65536)
    return int(head.split()[1]), body


@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_a_chunked_body_over_the_limit_is_refused_not_cut(servers, app):
    """Valid JSON followed by padding past the limit: a truncating server would answer 200."""
    body = json.dumps(EXAMPLE).encode() + b" " * (MAX_BODY + 1000)
    head = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, answer = _raw_request(servers[app], head + _chunked(body))
    assert status == 413, answer
    assert json.loads(answer)["error"] == "payload_too_large"


@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_a_chunked_body_within_the_limit_is_scored(servers, app):
    body = json.dumps(EXAMPLE).encode()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, answer = _raw_request(servers[app], head + _chunked(body, size=50))
    assert status == 200, answer
    assert "probability" in json.loads(answer)


def _answer(connection: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(lengths[0].split(b":", 1)[1]) if lengths else 0
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split()[1]), head


def _closed(connection: socket.socket) -> bool:
    """Whether the server closed ``connection`` (EOF or reset within the timeout)."""
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_a_connection_kept_alive_after_an_unread_body_answers_the_next_request(servers, app):
    """Requests whose body the app never reads (405s, OPTIONS), of every size up to 6 times the
    body limit, each followed by a normal request on the same connection: every one answered,
    or the server said ``Connection: close`` and closed it. Never a kept promise broken
    (gunicorn answered keep-alive, then reset connections still holding over 64 kB)."""
    host, port = servers[app].url.removeprefix("http://").split(":")
    record = json.dumps(EXAMPLE).encode()
    failures, closed = [], []
    for size in (10, 5_000, 100_000, 6 * MAX_BODY):
        for method in (b"PUT", b"OPTIONS", b"DELETE"):
            with socket.create_connection((host, int(port)), timeout=5) as connection:
                try:
                    connection.sendall(
                        method + b" /predict HTTP/1.1\r\nHost: test\r\nContent-Type: "
                        b"application/json\r\nContent-Length: "
                        + str(size).encode()
                        + b"\r\n\r\n"
                        + b"x" * size
                    )
                    status, head = _answer(connection)
                    if b"connection: close" in head.lower():
                        assert _closed(connection), "said close, kept the connection open"
                        closed.append(size)
                        continue
                    connection.sendall(
                        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json"
                        b"\r\nContent-Length: " + str(len(record)).encode() + b"\r\n\r\n" + record
                    )
                    status, _ = _answer(connection)
                    assert status == 200, status
                except (OSError, AssertionError) as exc:
                    failures.append(f"{method.decode()} {size} B: {exc!r}")
    assert not failures, failures
    assert all(size > 4 * MAX_BODY for size in closed), closed  # what can be read is read


@pytest.mark.parametrize("size", [9_000, 60_000])
def test_an_over_long_header_is_the_same_json_431_in_both_apps(servers, size):
    answers = {}
    for app, server in servers.items():
        with server.client() as client:
            answers[app] = client.get("/health", headers={"X-Padding": "a" * size})
    bodies = {app: answer.json() for app, answer in answers.items()}
    for app, answer in answers.items():
        assert answer.status_code == 431, (app, answer.text[:200])
        assert answer.headers["content-type"].startswith("application/json")
    assert bodies["flask"] == bodies["fastapi"]
    assert bodies["flask"]["detail"][0]["field"] == "x-padding"


def test_a_header_within_the_limit_is_served(servers):
    for app, server in servers.items():
        with server.client() as client:
            assert client.get("/health", headers={"X-Padding": "a" * 8_000}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/predict", '{"age": 39, "age": 40}', "age"),
        ("/predict/batch", '{"records": [{"age": 39, "age": 40}]}', "age"),
        (
            "/feedback",
            '{"prediction_id": "a", "prediction_id": "b", "label": "x"}',
            "prediction_id",
        ),
    ],
)
def test_a_repeated_key_is_the_same_400_naming_it_in_both_apps(servers, path, body, key):
    """The last value no longer wins silently: the client learns which key it sent twice."""
    answers = {}
    for app, server in servers.items():
        with server.client() as client:
            answers[app] = client.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
    for app, answer in answers.items():
        assert answer.status_code == 400, (app, answer.text[:300])
    bodies = {app: answer.json() for app, answer in answers.items()}
    assert bodies["flask"] == bodies["fastapi"]
    assert bodies["flask"]["detail"][0]["field"] == key


def test_an_idle_connection_is_kept_as_long_by_both_apps(servers):
    """Both servers keep an idle connection past uvicorn's own default (5 s): one plan
    (api/server.py) gives them the same keep-alive, above load balancers' 60 s idle timeout."""
    record = json.dumps(EXAMPLE).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(record)).encode() + b"\r\n\r\n" + record
    )
    for app, server in servers.items():
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(request)
            assert _answer(connection)[0] == 200
            time.sleep(6)
            connection.sendall(request)
            assert _answer(connection)[0] == 200, f"{app} closed an idle connection within 6 s"
