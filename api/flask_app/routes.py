"""Flask blueprints: each view parses with marshmallow, calls the core, returns its dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser

from api.core import links, metrics
from api.core.links import responses_with_links
from api.core.query import OPENAPI_PARAMETERS
from api.core.retrain import JOB_ID_PARAMETER
from api.core.rollout import ROLLOUT_CHANGE_SCHEMA, model_headers, request_caller
from api.core.schema import RecordSpec
from api.core.service import PredictionService
from api.flask_app.schemas import (
    BatchResponseSchema,
    ErrorBodySchema,
    FeedbackResponseSchema,
    PredictResponseSchema,
    batch_schema,
    feedback_schema,
    record_schema,
)


class _ParsedBody(FlaskParser):
    """webargs, reading the body the app's before_request already parsed and checked."""

    def _raw_load_json(self, req: Any) -> Any:
        return g.body if "body" in g else super()._raw_load_json(req)


class _Blueprint(Blueprint):  # type: ignore[misc]  # pylint: disable=too-many-ancestors
    ARGUMENTS_PARSER = _ParsedBody()


def _service() -> PredictionService:
    service: PredictionService = current_app.extensions["xgbops"]
    return service


def _caller() -> str:
    """What keeps this caller on one rollout arm (:func:`api.core.rollout.caller_key`)."""
    key_header = _service().settings.rollout.key_header
    return request_caller(request.headers.get, request.remote_addr or "unknown", key_header)


def _with_model_headers(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The answer, with which model gave it in headers too (a proxy can route on them)."""
    return body, 200, model_headers(body)


def blueprints(spec: RecordSpec, batch_limit: int) -> list[Blueprint]:
    """The API's blueprints for records described by ``spec``."""
    # pylint: disable=unused-variable,too-many-locals  # view classes register themselves
    record_class = record_schema(spec)
    record = record_class()  # an instance: webargs would build one per request from a class
    batch = batch_schema(record_class, batch_limit)
    scoring = _Blueprint("predict", __name__, description="Score records with the champion")
    ops = _Blueprint("operations", __name__, description="Health, model, history, metrics")
    legacy = _Blueprint("v1", __name__, url_prefix="/api/v1", description="DeployHub names")
    retraining = _Blueprint("retrain", __name__, description="Retrain on request (bearer token)")
    labelling = _Blueprint("feedback", __name__, description="True labels of served predictions")
    rolling = _Blueprint("rollout", __name__, description="A challenger on live traffic")
    feedback = feedback_schema(spec.labels)

    def predict_view(data: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        return _with_model_headers(_service().predict_valid(data, g.request_id, _caller()))

    @scoring.route("/predict")
    class Predict(MethodView):
        """POST one record."""

        @scoring.arguments(record, example=spec.example())
        @scoring.alt_response(200, schema=PredictResponseSchema, description="the prediction")
        @scoring.doc(responses=responses_with_links(200, links.PREDICT_LINKS))
        @scoring.alt_response(422, schema=ErrorBodySchema, description="invalid fields")
        @_body_errors(scoring)
        @scoring.alt_response(503, schema=ErrorBodySchema, description="no champion loaded")
        def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
            """Score one record: probability, label, threshold, model, arm and prediction id."""
            return predict_view(data)

    @scoring.route("/predict/batch")
    class PredictBatch(MethodView):
        """POST many records."""

        @scoring.doc(
            requestBody={"required": True, "content": {"application/json": {"schema": batch}}}
        )
        @scoring.alt_response(200, schema=BatchResponseSchema, description="the predictions")
        @scoring.doc(responses=responses_with_links(200, links.BATCH_LINKS))
        @scoring.alt_response(
            422, schema=ErrorBodySchema, description="invalid records.<i>.<field>"
        )
        @_body_errors(scoring)
        def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
            """Score up to the configured limit of records, all or nothing."""
            # The core checks records column by column (one rule set with /predict, far faster
            # than a marshmallow pass per record); the schema above documents the body.
            return _with_model_headers(_service().predict_batch(g.body, g.request_id, _caller()))

    @legacy.route("/predict")
    class LegacyPredict(MethodView):
        """The DeployHub name of /predict."""

        @legacy.arguments(record, example=spec.example())
        @legacy.alt_response(200, schema=PredictResponseSchema, description="the prediction")
        @legacy.doc(responses=responses_with_links(200, links.PREDICT_LINKS))
        @legacy.alt_response(422, schema=ErrorBodySchema)
        @_body_errors(legacy)
        def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
            """Same as POST /predict."""
            return predict_view(data)

    @labelling.route("/feedback")
    class Feedback(MethodView):
        """POST the true label of a served prediction."""

        @labelling.doc(
            requestBody={"required": True, "content": {"application/json": {"schema": feedback}}}
        )
        @labelling.alt_response(200, schema=FeedbackResponseSchema, description="stored")
        @labelling.alt_response(422, schema=ErrorBodySchema, description="invalid fields")
        @_body_errors(labelling)
        @labelling.alt_response(503, schema=ErrorBodySchema, description="not stored: retry")
        def post(self) -> dict[str, Any]:
            """Store the true label of a prediction; a second label for it replaces the first."""
            return _service().feedback(g.body, g.request_id)

    @retraining.route("/retrain")
    class Retrain(MethodView):
        """Start retraining."""

        @retraining.response(202, description="job accepted; follow it at /retrain/<job_id>")
        @retraining.doc(responses=responses_with_links(202, links.RETRAIN_LINKS))
        @retraining.alt_response(409, schema=ErrorBodySchema, description="a job is running")
        @retraining.alt_response(429, schema=ErrorBodySchema, description="rate limited")
        def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
            """Train in the background; a better model becomes champion and is served at once."""
            job = _service().retrain(request.remote_addr or "unknown")
            return job, 202, {"Location": f"/retrain/{job['job_id']}"}

    @retraining.route("/retrain/<string:job_id>", parameters=[JOB_ID_PARAMETER])
    class RetrainStatus(MethodView):
        """Follow a retraining job."""

        @retraining.response(200, description="the job")
        @retraining.alt_response(404, schema=ErrorBodySchema, description="no such job")
        @retraining.alt_response(422, schema=ErrorBodySchema, description="not a job id")
        def get(self, job_id: str) -> dict[str, Any]:
            """Status (queued, running, succeeded, failed), result and error of a job."""
            return _service().retrain_status(job_id)

    @ops.route("/health")
    class Health(MethodView):
        """Liveness."""

        @ops.response(200, description="the process answers")
        def get(self) -> dict[str, Any]:
            """The process answers."""
            return _service().health()

    @legacy.route("/health")
    class LegacyHealth(MethodView):
        """The DeployHub name of /health."""

        @legacy.response(200, description="the process answers")
        def get(self) -> dict[str, Any]:
            """Same as GET /health."""
            return _service().health()

    @ops.route("/ready")
    class Ready(MethodView):
        """Readiness."""

        @ops.response(200, description="ready: the checks that passed")
        @ops.alt_response(503, description="model not loaded or database unreachable")
        def get(self) -> tuple[dict[str, Any], int]:
            """200 when the champion is loaded and the history database answers, else 503."""
            ready, body = _service().readiness()
            return body, 200 if ready else 503

    @rolling.route("/rollout")
    class Rollout(MethodView):
        """The challenger on live traffic."""

        @rolling.response(200, description="state, live comparison of the arms, verdict")
        @rolling.alt_response(503, schema=ErrorBodySchema, description="history unreadable")
        def get(self) -> dict[str, Any]:
            """The rollout's state, per-arm live metrics with intervals, tests and verdict."""
            return _service().rollout_report()

        @rolling.doc(
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": ROLLOUT_CHANGE_SCHEMA}},
            }
        )
        @rolling.response(200, description="the rollout as every worker applies it")
        @rolling.alt_response(422, schema=ErrorBodySchema, description="invalid fields")
        @_body_errors(rolling)
        def put(self) -> dict[str, Any]:
            """Change the running rollout's mode or share (off pauses it); admin scope."""
            return _service().change_rollout(g.body, f"api:{request.remote_addr or 'unknown'}")

    @ops.route("/model")
    class ModelInfo(MethodView):
        """The served model."""

        @ops.response(200, description="the served model")
        @ops.alt_response(503, schema=ErrorBodySchema)
        def get(self) -> dict[str, Any]:
            """Which model answers (version, run id, digest, source), metrics and features."""
            return _service().model_info()

    @ops.route("/predictions")
    class Predictions(MethodView):
        """The prediction history."""

        @ops.doc(parameters=OPENAPI_PARAMETERS)
        @ops.response(200, description="a page of predictions, newest first")
        @ops.alt_response(422, schema=ErrorBodySchema)
        def get(self) -> dict[str, Any]:
            """Stored predictions, newest first; page with limit/offset, filter by time/version."""
            return _service().predictions(request.args.items(multi=True))

    @ops.route("/metrics")
    class Metrics(MethodView):
        """Prometheus exposition."""

        @ops.doc(responses=metrics.OPENAPI_RESPONSES)
        def get(self) -> Response:
            """Request counts, latency histograms, predictions by label, model version."""
            return Response(metrics.render(), content_type=metrics.CONTENT_TYPE)

    @legacy.route("/metrics")
    class LegacyMetrics(MethodView):
        """JSON summary."""

        @legacy.response(200, description="the summary")
        def get(self) -> dict[str, Any]:
            """Request count, error rate, latency percentiles, positive rate."""
            return _service().metrics_summary()

    return [scoring, labelling, retraining, rolling, ops, legacy]


def _body_errors(blueprint: Blueprint) -> Callable[[Any], Any]:
    """Document the refusals of an unreadable body (400, 413, 415)."""

    def decorate(view: Any) -> Any:
        for status, text in ((400, "unreadable JSON"), (413, "body too large"), (415, "not JSON")):
            view = blueprint.alt_response(status, schema=ErrorBodySchema, description=text)(view)
        return view

    return decorate
