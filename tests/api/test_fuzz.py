"""Fuzzing both apps under their real servers (gunicorn and uvicorn, see ``conftest.py``).

1. Schemathesis against each app's own ``/openapi.json``, with the prediction history on SQLite
   and on the real PostgreSQL (where a NUL in a text parameter used to reach the driver):
   every documented operation, with schema-valid (positive) and schema-invalid (negative) data.
   No 5xx; content type, status and body as documented; documented-valid requests accepted and
   documented-invalid ones refused (so the documents describe the requests as precisely as the
   responses); every 4xx in the one error shape ``{"error", "message", "detail"}``; no answer
   giving away driver or SQL text, a traceback, a path or a setting; and every prediction the
   fuzzer was served stored exactly once. A stateful run then chains calls along the documented
   links (a prediction, its feedback, its model version's history) under the same checks.
2. A Hypothesis property over records built from the dataset configuration: valid records are
   scored, every mutation is refused with 422 naming exactly the mutated fields, unreadable
   bodies get 400/413/415, and Flask and FastAPI answer alike, status and body.

``XGBOPS_FUZZ_EXAMPLES`` (default 25) is the number of examples per operation and generation
mode; the record property runs four times as many. It is read at import: the autouse
``clean_environ`` fixture removes every ``XGBOPS_*`` variable before a test runs.
"""

from __future__ import annotations

# Fixtures arrive as parameters of the same name; test names state the behaviour they check.
# pylint: disable=redefined-outer-name,missing-function-docstring

import functools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Verbosity, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.errors import FailureGroup
from schemathesis.core.result import Ok

from xgbops.config import CategoricalFeature, DatasetConfig, NumericFeature, load_settings

from tests.api.conftest import PostgresServers, Server
from tests.api.internals import leaks
from tests.api.test_contract import _normalise

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

#: Examples per operation and generation mode; read at import (see the module docstring).
EXAMPLES = max(1, int(os.environ.get("XGBOPS_FUZZ_EXAMPLES", "25")))
#: ``XGBOPS_SERVE__MAX_BODY_BYTES`` of the ``servers`` fixture.
MAX_BODY = 65536


def _timeout(seconds_per_example: float) -> pytest.MarkDecorator:
    """pytest-timeout's limit (300 s in pyproject) grows with ``XGBOPS_FUZZ_EXAMPLES``."""
    return pytest.mark.timeout(max(300, int(EXAMPLES * seconds_per_example)))


# -- 1. schemathesis against each app's own OpenAPI document -----------------------------------

#: What every response must satisfy: no 5xx; the documented status, content type, headers and
#: body schema; documented-valid requests accepted, documented-invalid ones refused. Left out:
#: the stateful checks (use_after_free, ensure_resource_availability), the auth checks and
#: response time.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
)
#: What counts as refusing invalid data: schemathesis' default statuses plus 413, since a
#: generated invalid body may also be larger than ``MAX_BODY``, and that refusal is just as right.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
)


def error_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is ``{"error", "message", "detail": [{"field", "reason"}]}`` (a custom check)."""
    del ctx, case
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), f"4xx content type is {content_type!r}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"4xx body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict), f"4xx body is not an object: {body!r}"
    assert set(body) == {"error", "message", "detail"}, f"4xx body keys are {sorted(body)}"
    assert isinstance(body["error"], str) and body["error"], "4xx error code is empty"
    assert isinstance(body["message"], str) and body["message"], "4xx message is empty"
    assert isinstance(body["detail"], list), "4xx detail is not a list"
    if response.status_code == 422:
        assert body["detail"], "a 422 names at least one field"
    for item in body["detail"]:
        assert isinstance(item, dict) and set(item) == {"field", "reason"}, f"detail {item!r}"
        assert isinstance(item["field"], str) and item["field"], f"empty field in {item!r}"
        assert isinstance(item["reason"], str) and item["reason"], f"empty reason in {item!r}"
    return None


def no_internals(ctx: Any, response: Any, case: Any) -> bool | None:
    """No answer gives away the server's internals (a custom check; see tests/api/internals)."""
    del ctx
    request = response.request
    body = request.body.decode("utf-8", "replace") if isinstance(request.body, bytes) else ""
    from urllib.parse import unquote  # pylint: disable=import-outside-toplevel

    sent = f"{unquote(request.url)} {dict(request.headers)} {body} {case.body!r}"
    found = leaks(response.content.decode("utf-8", "replace"), sent)
    assert not found, f"the answer gives away internals: {found}"
    return None


#: Where ``POST /predict``, ``/predict/batch`` and ``/api/v1/predict`` put prediction ids.
SCORING_PATHS = ("/predict", "/predict/batch", "/api/v1/predict")


@dataclass
class Finding:
    """One distinct failure and the shortest request that showed it."""

    message: str
    curl: str
    status: int
    body: str
    seen: int = 0


@dataclass
class FuzzRun:
    """What one app's run sent and found."""

    app: str
    sent: int = 0
    cases: dict[tuple[str, str], int] = field(default_factory=dict)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    #: Every prediction id a 2xx answer handed out (each must be stored exactly once).
    served: list[str] = field(default_factory=list)

    def count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A ``requests`` response hook: every request that reached the server."""
        del args, kwargs
        self.sent += 1
        path = requests.utils.urlparse(response.request.url).path
        if response.status_code == 200 and path in SCORING_PATHS:
            body = response.json()
            answers = body.get("predictions", [body]) if isinstance(body, dict) else []
            self.served.extend(a["prediction_id"] for a in answers if "prediction_id" in a)

    def found(self, key: tuple[str, str, str], message: str, case: Any, response: Any) -> None:
        curl = case.as_curl_command()
        known = self.findings.get(key)
        if known is None or len(curl) < len(known.curl):
            text = response.content.decode("utf-8", "replace")
            text = text if len(text) <= 500 else text[:500] + "..."
            self.findings[key] = Finding(message, curl, response.status_code, text)
        self.findings[key].seen += 1

    def report(self) -> str:
        lines = [f"{self.app}: {len(self.findings)} distinct failure(s) in {self.sent} requests"]
        for (operation, mode, title), finding in sorted(self.findings.items()):
            curl = finding.curl if len(finding.curl) <= 1500 else finding.curl[:1500] + "..."
            lines += [
                "",
                f"[{operation}] {title} ({mode} data, {finding.seen}x)",
                "  " + (finding.message.strip().splitlines() or [""])[0],
                f"  request:  {curl}",
                f"  response: {finding.status} {finding.body}",
            ]
        return "\n".join(lines)


def fuzz_operation(
    run: FuzzRun, operation: Any, mode: GenerationMode, base_url: str, session: requests.Session
) -> None:
    """Send up to ``EXAMPLES`` generated cases of one operation; record each distinct failure.

    Failures are collected, not raised, so one run reports every operation (no shrinking: the
    shortest failing request of each kind is kept instead).
    """
    label = f"{operation.method.upper()} {operation.path}"
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    # GET /metrics is Prometheus text: exempt from content-type conformance, and only that.
    if operation.path == "/metrics":
        checks.remove(schemathesis.checks.content_type_conformance)
    run.cases.setdefault((label, mode.value), 0)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        run.cases[(label, mode.value)] += 1
        response = case.call(base_url=base_url, session=session, timeout=30)
        try:
            case.validate_response(
                response,
                checks=checks,
                additional_checks=[error_contract, no_internals],
                transport_kwargs={"base_url": base_url, "session": session, "timeout": 30},
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                run.found((label, mode.value, failure.title), failure.message, case, response)

    try:
        send()
    except Unsatisfiable:
        pass  # nothing to make invalid in this operation (e.g. a free-form string path param)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> tuple[str, dict[str, Server], str | None]:
    """The servers of one history store: (name, servers, database URL to count rows in)."""
    if request.param == "sqlite":
        return "sqlite", request.getfixturevalue("servers"), None
    found: PostgresServers = request.getfixturevalue("postgres_servers")
    return "postgres", found.servers, found.database_url


def stored_times(database_url: str, ids: list[str]) -> dict[str, int]:
    """How many history rows each prediction id has (PostgreSQL)."""
    import psycopg  # pylint: disable=import-outside-toplevel

    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT id, count(*) FROM predictions WHERE id = ANY(%s) GROUP BY id", (ids,)
        ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


@_timeout(seconds_per_example=2)
@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_schemathesis_fuzz_of_each_apps_openapi_document(
    store: tuple[str, dict[str, Server], str | None],
    app: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_name, servers, database_url = store
    server = servers[app]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG, timeout=30)
    run = FuzzRun(app)
    started = time.monotonic()
    operations, invalid, floor = [], [], 0
    with requests.Session() as session:
        session.hooks["response"].append(run.count)
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                invalid.append(str(result.err()))
                continue
            operation = result.ok()
            operations.append(operation)
            has_body = bool(operation.body)
            has_input = has_body or any(True for _ in operation.iter_parameters())
            # A body can always be generated and broken; anything else may run out of cases.
            floor += 2 * EXAMPLES if has_body else 1
            # Negative data needs something to break (no parameters, no body: nothing to send).
            modes = list(GenerationMode) if has_input else [GenerationMode.POSITIVE]
            for mode in modes:
                fuzz_operation(run, operation, mode, server.url, session)
    elapsed = time.monotonic() - started

    with capsys.disabled():
        summary = f"{run.sent} requests (floor {floor}), {len(operations)} operations"
        print(f"\n{app} on {store_name}: {summary}, {elapsed:.1f} s")
        for (label, generation), cases in sorted(run.cases.items()):
            print(f"  {label:28} {generation:8} {cases}")
    assert not invalid, f"{app}'s OpenAPI document has invalid operations: {invalid}"
    body_operations = [o.path for o in operations if o.body]
    assert len(body_operations) >= 3, f"the predict routes are not all documented: {operations}"
    unsent = [key for key, cases in run.cases.items() if key[1] == "positive" and not cases]
    assert not unsent, f"operations without a single request: {unsent}"
    assert run.sent >= floor, f"only {run.sent} requests sent; expected at least {floor}"
    if run.findings:
        pytest.fail(run.report(), pytrace=False)
    if database_url is not None:  # nothing lost, nothing twice
        assert run.served, "the fuzz run was never served a prediction"
        deadline, counts = time.monotonic() + 30, {}
        while time.monotonic() < deadline:  # the write-behind flush
            counts = stored_times(database_url, run.served)
            if len(counts) == len(set(run.served)):
                break
            time.sleep(0.2)
        assert len(run.served) == len(set(run.served)), "an id was handed out twice"
        assert sorted(counts) == sorted(run.served), "served predictions missing from the history"
        assert set(counts.values()) == {1}, "a prediction stored more than once"


#: The links each app documents (api/core/links.py), as schemathesis names a transition.
LINKS = {"SendFeedback", "ReadHistory"}


@_timeout(seconds_per_example=4)
@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_stateful_fuzz_follows_the_links_from_a_prediction(
    postgres_servers: PostgresServers,
    app: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Schemathesis' state machine chains calls along the documented links: a prediction, then
    feedback for the id it handed out and the history of its model version; the same checks
    as above on every step, and every link followed with a value from a real answer. On the
    real store only: the links lead into PostgreSQL, where the history and feedback live."""
    store_name, database_url = "postgres", postgres_servers.database_url
    server = postgres_servers.servers[app]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG, timeout=30)
    run = FuzzRun(app)
    followed: Counter[tuple[str, int]] = Counter()
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    session = requests.Session()
    session.hooks["response"].append(run.count)

    class Scenario(schema.as_state_machine()):  # type: ignore[misc]
        """The generated machine, calling the real server and collecting failures."""

        def step(self, input: Any) -> Any:  # pylint: disable=redefined-builtin
            output = super().step(input)
            if input.transition is not None and input.is_applied:
                # "POST /predict -> [200] SendFeedback -> POST /feedback": the link's name
                name = input.transition.id.split("] ", 1)[-1].split(" -> ", 1)[0]
                followed[(name, output.response.status_code)] += 1
            return output

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.url, "session": session, "timeout": 30}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            if case.path == "/metrics":
                return  # Prometheus text: checked by the stateless run above
            label = f"{case.method.upper()} {case.path}"
            run.cases[(label, "stateful")] = run.cases.get((label, "stateful"), 0) + 1
            try:
                case.validate_response(
                    response,
                    checks=checks,
                    additional_checks=[error_contract, no_internals],
                    transport_kwargs=kwargs,
                )
            except FailureGroup as group:
                for failure in group.exceptions:
                    run.found((label, "stateful", failure.title), failure.message, case, response)

    started = time.monotonic()
    try:
        Scenario.run(
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=6,
                derandomize=True,  # the same scenarios every run: the link assertion never flakes
                deadline=None,
                database=None,
                verbosity=Verbosity.quiet,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        session.close()
    elapsed = time.monotonic() - started

    with capsys.disabled():
        steps = ", ".join(
            f"{name} -> {status}: {n}" for (name, status), n in sorted(followed.items())
        )
        print(f"\n{app} on {store_name}, stateful: {run.sent} requests, {elapsed:.1f} s; {steps}")
    if run.findings:
        pytest.fail(run.report(), pytrace=False)
    followed_ok = {name for (name, status), _ in followed.items() if status == 200}
    assert LINKS <= followed_ok, f"links never followed to a 200: {LINKS - followed_ok} ({steps})"
    assert run.served, "the stateful run was never served a prediction"
    deadline, counts = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        counts = stored_times(database_url, run.served)
        if len(counts) == len(set(run.served)):
            break
        time.sleep(0.2)
    assert sorted(counts) == sorted(run.served), "served predictions missing from the history"
    assert set(counts.values()) == {1}, "a prediction stored more than once"


# -- 2. a property over records built from the dataset configuration --------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: numbers beyond what ``json.dumps`` writes, very deep nesting."""

    text: str


def encode(value: Any) -> bytes:
    """``json.dumps`` (NaN and Infinity as JS tokens), with every :class:`Raw` spliced in."""
    if isinstance(value, Raw):
        return value.text.encode()
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(node, dict):
            return {key: swap(item) for key, item in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    text = json.dumps(swap(value))
    for index, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{index}\x00"), raw, 1)
    return text.encode()


@dataclass(frozen=True)
class Probe:
    """One request for both apps and what the contract says each may answer.

    ``expect`` maps every acceptable status to the ``detail`` fields it must name (sorted).
    """

    kind: str
    path: str
    content_type: str | None
    body: bytes
    expect: dict[int, tuple[str, ...]]

    def __repr__(self) -> str:
        body = self.body.decode("utf-8", "replace")
        body = body if len(body) <= 1500 else f"{body[:1500]}... ({len(body)} bytes)"
        return (
            f"Probe({self.kind}: POST {self.path} Content-Type: {self.content_type}; "
            f"expect {self.expect}; body {body})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis prints a falsifying example: the short form above."""
        del cycle
        printer.text(repr(self))

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.content_type is None else {"Content-Type": self.content_type}


DROP = object()
JSON_TYPES = ("application/json", "application/json; charset=utf-8", "Application/JSON")
OTHER_TYPES = (None, "text/plain", "application/x-www-form-urlencoded", "application/jsonl")
PATHS = ("/predict", "/api/v1/predict", "/predict/batch")
Feature: TypeAlias = NumericFeature | CategoricalFeature


def _bounds(feature: NumericFeature) -> tuple[float, float]:
    low = feature.min if feature.min is not None else -1e9
    high = feature.max if feature.max is not None else 1e9
    return low, high


def valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    """A value the feature accepts: a category, or a number in range (whole if it must be)."""
    if isinstance(feature, CategoricalFeature):
        strategy: st.SearchStrategy[Any] = st.sampled_from(feature.categories)
    else:
        low, high = _bounds(feature)
        whole = st.integers(math.ceil(low), math.floor(high))
        if feature.integer:
            strategy = whole | whole.map(float)
        else:
            strategy = st.floats(low, high, allow_nan=False, allow_infinity=False) | whole
    return strategy | st.none() if feature.nullable else strategy


def _huge(sign: str) -> st.SearchStrategy[Raw]:
    """Integers beyond a float's range, refused whatever the bounds; up to 5,000 digits, past
    Python's 4,300-digit limit for ``int(str)``."""
    return st.integers(309, 5000).map(lambda digits: Raw(f"{sign}1{'0' * digits}"))


def invalid_value(feature: Feature) -> st.SearchStrategy[Any]:
    """A value the feature refuses (or ``DROP``): each is a 422 naming exactly this field."""
    scalars = st.text(max_size=6) | st.integers() | st.floats(allow_nan=False)
    containers = st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=4), scalars)
    options: list[st.SearchStrategy[Any]] = [st.booleans(), containers]
    if not feature.nullable:
        options += [st.just(DROP), st.none()]
    if isinstance(feature, CategoricalFeature):
        options += [
            st.integers(),
            st.floats(),
            st.text(max_size=12).filter(lambda text: text not in feature.categories),
        ]
        return st.one_of(options)
    low, high = _bounds(feature)
    options += [
        st.text(max_size=8),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(max_value=math.nextafter(low, -math.inf), allow_infinity=False, allow_nan=False),
        st.floats(min_value=math.nextafter(high, math.inf), allow_infinity=False, allow_nan=False),
        st.integers(max_value=math.ceil(low) - 1),
        st.integers(min_value=math.floor(high) + 1),
        _huge("-"),
        _huge(""),
    ]
    if feature.integer:
        options.append(
            st.floats(low, high, allow_nan=False, allow_infinity=False).filter(
                lambda x: not x.is_integer()
            )
        )
    return st.one_of(options)


@dataclass(frozen=True)
class Records:
    """Strategies for one dataset's records."""

    features: tuple[Feature, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features)

    def valid(self) -> st.SearchStrategy[dict[str, Any]]:
        """A valid record; nullable fields may be left out."""

        @st.composite
        def build(draw: st.DrawFn) -> dict[str, Any]:
            record = {}
            for feature in self.features:
                if feature.nullable and draw(st.booleans()):
                    continue
                record[feature.name] = draw(valid_value(feature))
            return record

        return build()

    def mutated(self) -> st.SearchStrategy[tuple[dict[str, Any], tuple[str, ...]]]:
        """A record with 1 to 5 bad fields (dropped, mistyped, out of range, unknown, ...)."""
        by_name = {f.name: f for f in self.features}
        # Unknown names: near misses and awkward ones too (case, spaces, dots, Unicode digits).
        # Not the empty name: no detail can name it (/predict says "body"); the schemathesis
        # run's error_contract check is where an empty field is caught.
        awkward = [name.upper() for name in by_name] + [f"{name} " for name in by_name]
        awkward += ["records", "body", "a.b", "0", "12", "\u00b2", "\u2460", "\u0663", "_schema"]
        unknown = (st.sampled_from(awkward) | st.text(min_size=1, max_size=12)).filter(
            lambda key: key not in self.names
        )

        @st.composite
        def build(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[str, ...]]:
            record = draw(self.valid())
            names = sorted(by_name)
            bad = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
            extra = draw(st.lists(unknown, max_size=2, unique=True))
            if not bad and not extra:
                bad = [draw(st.sampled_from(names))]
            for name in bad:
                value = draw(invalid_value(by_name[name]), label=name)
                if value is DROP:
                    record.pop(name, None)
                else:
                    record[name] = value
            for key in extra:
                record[key] = draw(scalar_or_record(self), label=f"unknown {key!r}")
            return record, tuple(sorted([*bad, *extra]))

        return build()


def scalar_or_record(records: Records) -> st.SearchStrategy[Any]:
    return st.none() | st.booleans() | st.integers() | st.text(max_size=5) | records.valid()


def non_object(records: Records) -> st.SearchStrategy[Any]:
    """A JSON value that is not an object: scalars, lists (of records too), deep nesting."""
    deep = st.sampled_from([10, 100, 1000, 5000, 20000, 32000]) | st.integers(1, 32000)
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.lists(scalar_or_record(records), max_size=3),
        deep.map(lambda depth: Raw("[" * depth + "]" * depth)),
    )


def _is_deep(value: Any) -> bool:
    return isinstance(value, Raw) and value.text.startswith("[")


def _has_long_number(value: Any) -> bool:
    return isinstance(value, dict) and any(
        isinstance(v, Raw) and len(v.text) > 4300 for v in value.values()
    )


def probes(dataset: DatasetConfig) -> st.SearchStrategy[Probe]:
    """Valid, mutated, non-object and unreadable requests to the three record endpoints."""
    records = Records(tuple(dataset.features))

    def place(draw: st.DrawFn, path: str, record: Any) -> tuple[Any, str]:
        """The body carrying ``record`` and the prefix its fields get in the detail."""
        if path != "/predict/batch":
            return record, ""
        before = draw(st.lists(records.valid(), max_size=2))
        after = draw(st.lists(records.valid(), max_size=2))
        return {"records": [*before, record, *after]}, f"records.{len(before)}."

    @st.composite
    def valid(draw: st.DrawFn) -> Probe:
        path = draw(st.sampled_from(PATHS))
        body, _ = place(draw, path, draw(records.valid()))
        return Probe("valid", path, draw(st.sampled_from(JSON_TYPES)), encode(body), {200: ()})

    @st.composite
    def mutated(draw: st.DrawFn) -> Probe:
        path = draw(st.sampled_from(PATHS))
        record, bad = draw(records.mutated())
        body, prefix = place(draw, path, record)
        expect = {422: tuple(sorted(prefix + name for name in bad))}
        if _has_long_number(record):  # valid JSON, but more digits than Python parses
            expect[400] = ("body",)
        return Probe("mutated", path, "application/json", encode(body), expect)

    @st.composite
    def not_an_object(draw: st.DrawFn) -> Probe:
        path = draw(st.sampled_from(PATHS))
        value = draw(non_object(records))
        expect: dict[int, tuple[str, ...]]
        if path == "/predict/batch" and not _is_deep(value) and draw(st.booleans()):
            body, prefix = place(draw, path, value)  # one record of the batch is not an object
            expect = {422: (prefix.rstrip("."),)}
        else:
            body, expect = value, {422: ("body",)}
        if _is_deep(value):  # deeper than a recursive parser goes: unreadable is fine too
            expect[400] = ("body",)
        return Probe("non-object", path, "application/json", encode(body), expect)

    @st.composite
    def unreadable(draw: st.DrawFn) -> Probe:
        path = draw(st.sampled_from(PATHS))
        body, _ = place(draw, path, draw(records.valid()))
        text = encode(body)
        how = draw(st.sampled_from(["truncated", "content type", "too large"]))
        if how == "truncated":  # every proper prefix of a JSON object is invalid JSON
            cut = draw(st.integers(0, len(text) - 1))
            return Probe(how, path, "application/json", text[:cut], {400: ("body",)})
        if how == "content type":
            content_type = draw(st.sampled_from(OTHER_TYPES))
            return Probe(how, path, content_type, text, {415: ("content-type",)})
        padding = b" " * (MAX_BODY + 1 - len(text) + draw(st.integers(0, 4096)))
        return Probe(how, path, "application/json", text + padding, {413: ("body",)})

    kinds = {"valid": valid(), "mutated": mutated(), "non-object": not_an_object()}
    kinds["unreadable"] = unreadable()
    # Weighted (st.one_of favours its first branches): mostly valid and mutated records.
    weights = ["valid"] * 3 + ["mutated"] * 4 + ["non-object"] * 2 + ["unreadable"]
    return st.sampled_from(weights).flatmap(kinds.__getitem__)


@functools.cache
def probes_for(project: Path) -> st.SearchStrategy[Probe]:
    return probes(load_settings(project_dir=project).dataset)


@pytest.fixture(scope="module")
def clients(servers: dict[str, Server]) -> Iterator[dict[str, httpx.Client]]:
    opened = {name: server.client() for name, server in servers.items()}
    yield opened
    for client in opened.values():
        client.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _check_answer(probe: Probe, status: int, body: Any) -> None:
    """What the contract says about one app's answer to ``probe``."""
    assert status in probe.expect, f"expected {sorted(probe.expect)}, got {status}"
    if status == 200:
        predictions = body["predictions"] if probe.path == "/predict/batch" else [body]
        assert predictions and all(0 <= p["probability"] <= 1 for p in predictions)
        if probe.path == "/predict/batch":
            assert body["count"] == len(json.loads(probe.body)["records"])
        return
    assert set(body) == {"error", "message", "detail"}
    assert all(d["field"] and d["reason"] for d in body["detail"])
    fields = tuple(sorted(d["field"] for d in body["detail"]))
    assert fields == probe.expect[status], f"detail names {fields}, not {probe.expect[status]}"


@_timeout(seconds_per_example=1)
@settings(
    max_examples=EXAMPLES * 4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_record_property_both_apps_agree_and_name_the_bad_fields(
    clients: dict[str, httpx.Client], champion_project: Path, data: st.DataObject
) -> None:
    probe = data.draw(probes_for(champion_project), label="probe")
    event(probe.kind)  # see --hypothesis-show-statistics
    answers = {
        name: client.post(probe.path, content=probe.body, headers=probe.headers)
        for name, client in clients.items()
    }
    flask, fastapi = answers["flask"], answers["fastapi"]
    seen = (
        f"\n{probe!r}\nflask:   {flask.status_code} {flask.text[:1000]}"
        f"\nfastapi: {fastapi.status_code} {fastapi.text[:1000]}"
    )
    assert flask.status_code < 500 and fastapi.status_code < 500, f"server error{seen}"
    assert flask.status_code == fastapi.status_code, f"the apps disagree on the status{seen}"
    assert flask.status_code in {200, 400, 413, 415, 422}, f"unexpected status{seen}"
    for answer in (flask, fastapi):
        assert answer.headers["content-type"].startswith("application/json"), seen
    bodies = [_normalise(_json(answer)) for answer in (flask, fastapi)]
    assert bodies[0] == bodies[1], f"the apps disagree on the body{seen}"
    try:
        _check_answer(probe, flask.status_code, bodies[0])
    except (AssertionError, KeyError, TypeError) as exc:
        raise AssertionError(f"{exc}{seen}") from None
