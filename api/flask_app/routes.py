"""Flask views, one per operation of :data:`api.core.openapi.ENDPOINTS`, bound by its name.

Each view calls the core and returns its dict; the record of ``/predict`` goes through the
marshmallow schema, whose ``load`` is the core's check. What an operation answers and refuses
is documented once, in :mod:`api.core.openapi`, not here.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, g, request

from api.core import metrics
from api.core.openapi import Views
from api.core.rollout import model_headers, request_caller
from api.core.service import PredictionService
from api.flask_app.schemas import CoreChecked


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


def flask_rule(path: str) -> str:
    """An OpenAPI path as a Flask rule: ``/retrain/{job_id}`` is ``/retrain/<job_id>``."""
    return path.replace("{", "<").replace("}", ">")


def register(app: Flask, record: type[CoreChecked]) -> None:
    """Route every operation of :data:`~api.core.openapi.ENDPOINTS` to its view; ``record``
    checks the body of ``/predict``."""
    for endpoint, view in views(record()).routes():
        app.add_url_rule(
            flask_rule(endpoint.path),
            endpoint=endpoint.name,
            view_func=view,
            methods=[endpoint.method],
            defaults={},  # none; flask-smorest's OpenAPI plugin reads the rule's (not None)
        )


def views(record: CoreChecked) -> Views:  # pylint: disable=too-many-locals  # a view each
    """The view of each operation."""
    table = Views()

    @table.serves("predict", "predictV1")
    def predict() -> tuple[dict[str, Any], int, dict[str, str]]:
        data = record.load(g.body)  # the core's check, refused as ValidationFailed (422)
        return _with_model_headers(_service().predict_valid(data, g.request_id, _caller()))

    @table.serves("predictBatch")
    def predict_batch() -> tuple[dict[str, Any], int, dict[str, str]]:
        # The core checks records column by column: one rule set with /predict, far faster
        # than a marshmallow pass per record.
        return _with_model_headers(_service().predict_batch(g.body, g.request_id, _caller()))

    @table.serves("sendFeedback")
    def feedback() -> dict[str, Any]:
        return _service().feedback(g.body, g.request_id)

    @table.serves("retrain")
    def retrain() -> tuple[dict[str, Any], int, dict[str, str]]:
        job = _service().retrain(request.remote_addr or "unknown")
        return job, 202, {"Location": f"/retrain/{job['job_id']}"}

    @table.serves("readRetrainJob")
    def retrain_status(job_id: str) -> dict[str, Any]:
        return _service().retrain_status(job_id)

    @table.serves("health", "healthV1")
    def health() -> dict[str, Any]:
        return _service().health()

    @table.serves("ready")
    def ready() -> tuple[dict[str, Any], int]:
        is_ready, body = _service().readiness()
        return body, 200 if is_ready else 503

    @table.serves("readModel")
    def model() -> dict[str, Any]:
        return _service().model_info()

    @table.serves("readPredictions")
    def predictions() -> dict[str, Any]:
        return _service().predictions(request.args.items(multi=True))

    @table.serves("metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), content_type=metrics.CONTENT_TYPE)

    @table.serves("metricsSummary")
    def metrics_summary() -> dict[str, Any]:
        return _service().metrics_summary()

    @table.serves("readRollout")
    def rollout_report() -> dict[str, Any]:
        return _service().rollout_report()

    @table.serves("changeRollout")
    def change_rollout() -> dict[str, Any]:
        return _service().change_rollout(g.body, f"api:{request.remote_addr or 'unknown'}")

    return table
