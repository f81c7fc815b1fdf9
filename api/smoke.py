"""``python -m api.smoke URL``: does a deployed API answer its documented contract?

``make docker-smoke`` runs it against the freshly built image, before the publish pipelines
push it: it waits for ``GET /health``, then for ``GET /ready`` (champion loaded, history
database answering), posts the example record to ``POST /predict`` and checks the documented
response (the fields of ``tests/api/test_contract.py`` and the README). Anything else ends
with one line saying what was wrong and exit status 1, so a broken image is never pushed.

Only ``requests`` is needed (a runtime dependency): the check runs from the host's venv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

#: The body of a 200 from POST /predict: exactly these fields.
PREDICTION_FIELDS = frozenset(
    {
        "prediction_id",
        "probability",
        "label",
        "threshold",
        "model_name",
        "model_version",
        "run_id",
        "arm",
    }
)
EXIT_FAILED = 1
EXIT_USAGE = 2
_POLL_SECONDS = 0.5
_REQUEST_SECONDS = 5.0


class SmokeError(Exception):
    """The API did not answer as documented; the message says what it answered instead."""


@dataclass(frozen=True)
class SmokeResult:
    """What the API answered for the example record."""

    model_name: str
    model_version: str
    probability: float
    label: str


def run_smoke(base_url: str, record: dict[str, Any], timeout: float) -> SmokeResult:
    """Wait until the API at ``base_url`` is ready, then check one prediction.

    Args:
        base_url: where the API listens, e.g. ``http://127.0.0.1:18000``.
        record: one valid input record (the README's example).
        timeout: seconds to wait for /health and /ready together.

    Returns:
        The model and the prediction the API answered.

    Raises:
        SmokeError: not healthy or not ready in time, or /predict answered outside its contract.
    """
    base_url = base_url.rstrip("/")
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        _wait_for(session, f"{base_url}/health", deadline, timeout)
        _wait_for(session, f"{base_url}/ready", deadline, timeout)
        try:
            response = session.post(f"{base_url}/predict", json=record, timeout=_REQUEST_SECONDS)
        except requests.RequestException as exc:
            raise SmokeError(f"POST /predict failed: {exc}") from exc
    return check_prediction(response)


def check_prediction(response: requests.Response) -> SmokeResult:
    """Check a POST /predict response against the documented contract.

    Args:
        response: the API's answer to one valid record.

    Returns:
        The model and the prediction it carries.

    Raises:
        SmokeError: wrong status, not a JSON object, a field missing, extra or of the wrong type.
    """
    if response.status_code != 200:
        raise SmokeError(
            f"POST /predict answered {response.status_code}: {_excerpt(response.text)}"
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise SmokeError(f"POST /predict answered no JSON: {_excerpt(response.text)}") from exc
    if not isinstance(body, dict):
        raise SmokeError(f"POST /predict answered {type(body).__name__}, not a JSON object")
    missing, extra = PREDICTION_FIELDS - body.keys(), body.keys() - PREDICTION_FIELDS
    if missing or extra:
        raise SmokeError(
            f"POST /predict fields differ from the contract: missing {sorted(missing)}, "
            f"undocumented {sorted(extra)}"
        )
    for name in ("prediction_id", "label", "model_name", "model_version"):
        if not isinstance(body[name], str) or not body[name]:
            raise SmokeError(
                f"POST /predict: {name} must be a non-empty string, got {body[name]!r}"
            )
    probability, threshold = body["probability"], body["threshold"]
    if not _is_number(probability) or not 0.0 <= probability <= 1.0:
        raise SmokeError(f"POST /predict: probability must be in [0, 1], got {probability!r}")
    if not _is_number(threshold) or not 0.0 < threshold < 1.0:
        raise SmokeError(f"POST /predict: threshold must be in (0, 1), got {threshold!r}")
    return SmokeResult(body["model_name"], body["model_version"], float(probability), body["label"])


def _wait_for(session: requests.Session, url: str, deadline: float, timeout: float) -> None:
    """Poll ``url`` until it answers 200; raise with the last answer once ``deadline`` passes."""
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            path = url.rsplit("/", 1)[-1]
            raise SmokeError(f"GET /{path} did not answer 200 within {timeout:g} s ({last})")
        try:
            response = session.get(url, timeout=min(_REQUEST_SECONDS, remaining))
        except requests.RequestException as exc:
            last = f"last error: {exc.__class__.__name__}"
        else:
            if response.status_code == 200:
                return
            last = f"last answer {response.status_code}: {_excerpt(response.text)}"
        time.sleep(min(_POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SmokeError(f"{path}: cannot read a JSON record ({exc})") from exc
    if not isinstance(record, dict):
        raise SmokeError(f"{path}: expected one JSON object (a record)")
    return record


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the smoke test, print one line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m api.smoke", description="Smoke-test a running xgbops API."
    )
    parser.add_argument("url", help="base URL of the API, e.g. http://127.0.0.1:18000")
    parser.add_argument(
        "--example", type=Path, default=Path("data/example.json"), help="record to post"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for /health and /ready"
    )
    args = parser.parse_args(argv)
    try:
        record = _read_record(args.example)
    except SmokeError as exc:
        print(f"smoke test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_smoke(args.url, record, args.timeout)
    except SmokeError as exc:
        print(f"smoke test FAILED against {args.url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"smoke test passed against {args.url}: {result.model_name} version "
        f"{result.model_version} answered probability {result.probability:.4f} "
        f"(label {result.label})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
