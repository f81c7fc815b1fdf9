"""Every endpoint of the API, written once: what it does, answers and refuses.

Both apps route from :data:`ENDPOINTS` (a view per ``name``) and both OpenAPI documents are
built from it by :func:`paths` and :func:`answer_schemas`, so the Flask document and the FastAPI
document say the same thing of every operation. The frameworks add only the request schemas
they generate from the dataset's :class:`~api.core.schema.RecordSpec` (marshmallow's ``Record``,
``Batch`` and ``Feedback``; pydantic's): the shapes a user edits with the dataset config.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from xgbops.config import Settings
from xgbops.rollout.state import CHALLENGER, CHAMPION

from api.core import links, metrics
from api.core.access import document_security
from api.core.query import OPENAPI_PARAMETERS
from api.core.retrain import JOB_ID_PARAMETER
from api.core.rollout import ROLLOUT_CHANGE_SCHEMA
from api.core.schema import RecordSpec


def component(name: str) -> dict[str, str]:
    """A reference to a schema of the document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


#: Why a request body is refused before it is read as a record (both apps, same words).
BODY_REFUSALS: Final[Mapping[int, str]] = {
    400: "the body is not valid JSON",
    413: "the body is larger than the configured limit",
    415: "the body is not JSON (send Content-Type: application/json)",
}
NO_CHAMPION: Final = "no champion loaded"
INVALID_FIELDS: Final = "invalid fields: `detail` names each field and why"


@dataclass(frozen=True)
class Endpoint:  # pylint: disable=too-many-instance-attributes  # one OpenAPI operation
    """One operation: the route both apps serve and what their documents say of it."""

    name: str  #: the operationId, and the key of the view in each app
    method: str
    path: str  #: OpenAPI's spelling (``/retrain/{job_id}``)
    tag: str
    summary: str
    description: str
    answer: str  #: what the success response is
    status: int = 200
    answer_schema: Mapping[str, Any] | None = None  #: JSON by default: an object
    answer_content: Mapping[str, Any] | None = None  #: another media type than JSON
    refusals: Mapping[int, str] = field(default_factory=dict)
    refusal_schema: Mapping[str, Any] = field(default_factory=lambda: component("ErrorBody"))
    links: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None  #: the request body's schema
    parameters: tuple[Mapping[str, Any], ...] = ()

    def operation(self, examples: Mapping[str, Any]) -> dict[str, Any]:
        """The OpenAPI operation object; ``examples`` of request bodies by component name."""
        answer: dict[str, Any] = {"description": self.answer}
        if self.answer_content is not None:
            answer["content"] = copy.deepcopy(dict(self.answer_content))
        else:
            schema = self.answer_schema or {"type": "object"}
            answer["content"] = {"application/json": {"schema": dict(schema)}}
        if self.links:
            answer["links"] = copy.deepcopy(dict(self.links))
        responses = {str(self.status): answer}
        for status, text in sorted(self.refusals.items()):
            content = {"application/json": {"schema": dict(self.refusal_schema)}}
            responses[str(status)] = {"description": text, "content": content}
        operation: dict[str, Any] = {
            "operationId": self.name,
            "tags": [self.tag],
            "summary": self.summary,
            "description": self.description,
            "responses": responses,
        }
        query = [dict(p) for p in self.parameters if p["in"] != "path"]
        if query:  # a path's parameters are the path item's (see paths)
            operation["parameters"] = copy.deepcopy(query)
        if self.body is not None:
            media: dict[str, Any] = {"schema": copy.deepcopy(dict(self.body))}
            name = str(self.body.get("$ref", "")).rsplit("/", 1)[-1]
            if name in examples:
                media["example"] = examples[name]
            operation["requestBody"] = {"required": True, "content": {"application/json": media}}
        return operation


PREDICT: Final = Endpoint(
    "predict",
    "POST",
    "/predict",
    "predict",
    "Score one record",
    "Probability of the positive label, the label at the model's threshold, the model and "
    "rollout arm that answered, and the id under which the prediction is stored.",
    "the prediction",
    answer_schema=component("PredictResponse"),
    refusals={**BODY_REFUSALS, 422: INVALID_FIELDS, 503: NO_CHAMPION},
    links=links.PREDICT_LINKS,
    body=component("Record"),
)
HEALTH: Final = Endpoint(
    "health", "GET", "/health", "operations", "Liveness", "The process answers.",
    "the process answers",
)  # fmt: skip

#: Every HTTP operation of both apps (the WebSocket ``/ws/predict`` is not an OpenAPI one).
ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    PREDICT,
    Endpoint(
        "predictBatch", "POST", "/predict/batch", "predict", "Score many records",
        "Up to the configured limit of records, all or nothing: one invalid record refuses the "
        "batch. The predictions come in the order of the records.",
        "the predictions", answer_schema=component("BatchResponse"),
        refusals={
            **BODY_REFUSALS,
            422: "invalid records: `detail` names each `records.<i>.<field>` and why",
            503: NO_CHAMPION,
        },
        links=links.BATCH_LINKS, body=component("Batch"),
    ),
    replace(
        PREDICT, name="predictV1", path="/api/v1/predict", tag="v1",
        summary="Score one record (DeployHub name)", description="Same as `POST /predict`.",
    ),
    Endpoint(
        "sendFeedback", "POST", "/feedback", "feedback", "Store the true label of a prediction",
        "Once the outcome is known. A second label for the same prediction replaces the first.",
        "stored", answer_schema=component("FeedbackResponse"),
        refusals={**BODY_REFUSALS, 422: INVALID_FIELDS, 503: "not stored: retry"},
        body=component("Feedback"),
    ),
    Endpoint(
        "retrain", "POST", "/retrain", "retrain", "Retrain in the background",
        "A model better than the champion and every baseline becomes champion and is served "
        "at once. Follow the job at the `Location` header.",
        "job accepted", status=202,
        refusals={409: "a job is running", 429: "rate limited: Retry-After says when to retry"},
        links=links.RETRAIN_LINKS,
    ),
    Endpoint(
        "readRetrainJob", "GET", "/retrain/{job_id}", "retrain", "Follow a retraining job",
        "Its status (queued, running, succeeded, failed), result and error.", "the job",
        refusals={404: "no such job", 422: "not a job id"}, parameters=(JOB_ID_PARAMETER,),
    ),
    HEALTH,
    replace(
        HEALTH, name="healthV1", path="/api/v1/health", tag="v1",
        summary="Liveness (DeployHub name)", description="Same as `GET /health`.",
    ),
    Endpoint(
        "ready", "GET", "/ready", "operations", "Readiness",
        "200 when the champion is loaded and the history database answers; else 503, with the "
        "check that failed.",
        "ready: the checks that passed",
        refusals={503: "not ready: no model loaded, or the database does not answer"},
        refusal_schema={"type": "object"},
    ),
    Endpoint(
        "readModel", "GET", "/model", "operations", "The served model",
        "Which model answers (version, run id, digest, source, scorer), its metrics and its "
        "features.", "the served model", refusals={503: NO_CHAMPION},
    ),
    Endpoint(
        "readPredictions", "GET", "/predictions", "operations", "Stored predictions",
        "Newest first; page with `limit` and `offset`, filter by time and model version.",
        "a page of predictions, newest first",
        refusals={422: "invalid parameters: `detail` names each and why"},
        parameters=tuple(OPENAPI_PARAMETERS),
    ),
    Endpoint(
        "metrics", "GET", "/metrics", "operations", "Prometheus metrics",
        "Request counts, latency histograms, predictions by label and model version, and the "
        "rest of the service's metrics.", str(metrics.OPENAPI_RESPONSES[200]["description"]),
        answer_content=metrics.OPENAPI_RESPONSES[200]["content"],
    ),
    Endpoint(
        "metricsSummary", "GET", "/api/v1/metrics", "v1", "Metrics summary (DeployHub name)",
        "Request count, error rate, latency percentiles and positive rate, as JSON.",
        "the summary",
    ),
    Endpoint(
        "readRollout", "GET", "/rollout", "rollout", "The live rollout",
        "Its state, the live metrics of each arm with their intervals, the tests and the "
        "verdict.", "state, live comparison of the arms, verdict",
        refusals={503: "the history is unreadable"},
    ),
    Endpoint(
        "changeRollout", "PUT", "/rollout", "rollout", "Change the rollout",
        "Change the running rollout's mode or share; `off` pauses it.",
        "the rollout as every worker applies it",
        refusals={**BODY_REFUSALS, 422: INVALID_FIELDS}, body=ROLLOUT_CHANGE_SCHEMA,
    ),
)  # fmt: skip

#: The tags of the documents, in the order Swagger UI shows them.
TAGS: Final[tuple[dict[str, str], ...]] = (
    {"name": "predict", "description": "Score records with the champion"},
    {"name": "feedback", "description": "True labels of served predictions"},
    {"name": "retrain", "description": "Retrain on request (admin scope)"},
    {"name": "rollout", "description": "A challenger on live traffic"},
    {"name": "operations", "description": "Health, model, history, metrics"},
    {"name": "v1", "description": "DeployHub names"},
)
#: The paths whose POST or PUT carries a JSON body (both apps read and refuse it the same way).
BODY_PATHS: Final = frozenset(e.path for e in ENDPOINTS if e.body is not None)


ViewT = TypeVar("ViewT", bound=Callable[..., Any])


class Views(dict[str, Callable[..., Any]]):
    """One app's views, by the name of the operation each serves (see :meth:`serves`)."""

    def serves(self, *names: str) -> Callable[[ViewT], ViewT]:
        """Decorate the view of the operations called ``names`` in :data:`ENDPOINTS`."""
        unknown = set(names) - {endpoint.name for endpoint in ENDPOINTS}
        if unknown:
            raise KeyError(f"no operation called {sorted(unknown)} in ENDPOINTS")

        def decorate(view: ViewT) -> ViewT:
            self.update(dict.fromkeys(names, view))
            return view

        return decorate

    def routes(self) -> Iterator[tuple[Endpoint, Callable[..., Any]]]:
        """Each operation with its view; an operation without one stops the app's start."""
        missing = [endpoint.name for endpoint in ENDPOINTS if endpoint.name not in self]
        if missing:
            raise LookupError(f"no view for the operations {missing}")
        return ((endpoint, self[endpoint.name]) for endpoint in ENDPOINTS)


def paths(settings: Settings, spec: RecordSpec) -> dict[str, dict[str, Any]]:
    """The ``paths`` of the OpenAPI document, with what this server enforces (credentials,
    scopes and rate limits, from ``settings``) and the example record of ``spec``."""
    examples = {"Record": spec.example()}
    found: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        item = found.setdefault(endpoint.path, {})
        item[endpoint.method.lower()] = endpoint.operation(examples)
        in_path = [copy.deepcopy(dict(p)) for p in endpoint.parameters if p["in"] == "path"]
        if in_path:
            item["parameters"] = in_path
    document_security(found, settings)
    return found


def answer_schemas(openapi_version: str) -> dict[str, dict[str, Any]]:
    """The JSON schemas of the answers, for the components of a document of that version
    (3.0 writes a nullable field with ``nullable``, 3.1 with a ``null`` type)."""

    def nullable_string(description: str) -> dict[str, Any]:
        if openapi_version.startswith("3.0"):
            return {"type": "string", "nullable": True, "description": description}
        return {"type": ["string", "null"], "description": description}

    text = {"type": "string"}
    number = {"type": "number"}
    model = {
        "model_name": text,
        "model_version": text,
        "run_id": nullable_string("the model's MLflow run"),
        "arm": {
            "type": "string",
            "enum": [CHAMPION, CHALLENGER],
            "description": "the rollout arm that answered",
        },
        "threshold": number,
    }
    prediction = {
        "prediction_id": {"type": "string", "description": "id of the stored prediction"},
        "probability": {"type": "number", "description": "probability of the positive label"},
        "label": text,
    }
    return {
        "Prediction": _object("One scored record.", prediction),
        "PredictResponse": _object("The answer to POST /predict.", {**prediction, **model}),
        "BatchResponse": _object(
            "The answer to POST /predict/batch.",
            {
                **model,
                "count": {"type": "integer"},
                "predictions": {"type": "array", "items": component("Prediction")},
            },
        ),
        "FeedbackResponse": _object(
            "The answer to POST /feedback: what was stored, and when.",
            {"prediction_id": text, "label": text, "received_at": {**text, "format": "date-time"}},
        ),
        "ErrorDetail": _object(
            "One offending field.", {"field": text, "reason": text}, required=("field", "reason")
        ),
        "ErrorBody": _object(
            "The one error shape of both apps.",
            {
                "error": text,
                "message": text,
                "detail": {"type": "array", "items": component("ErrorDetail")},
                "request_id": {"type": "string", "description": "server errors only: for the logs"},
            },
            required=("error", "message", "detail"),
        ),
    }


def _object(
    description: str, properties: dict[str, Any], required: tuple[str, ...] | None = None
) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": copy.deepcopy(properties),
        "required": list(properties if required is None else required),
    }
