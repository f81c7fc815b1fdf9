"""FastAPI routers: each endpoint reads the body and calls the core, which checks it."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from api.core import errors, links, metrics
from api.core.links import responses_with_links
from api.core.body import read_json
from api.core.query import OPENAPI_PARAMETERS
from api.core.retrain import JOB_ID_PARAMETER
from api.core.rollout import ROLLOUT_CHANGE_SCHEMA, model_headers, request_caller
from api.core.schema import RecordSpec
from api.core.service import PredictionService, new_request_id
from api.fastapi_app.models import BatchResponse, ErrorBody, FeedbackResponse, PredictResponse


async def get_service(request: Request) -> PredictionService:
    """The service core of this app (a dependency; async: FastAPI would run a plain function
    in a thread, a hop that costs more than the lookup)."""
    service: PredictionService = request.app.state.service
    return service


async def guard(connection: HTTPConnection) -> None:
    """Check the caller's credential, scope and rate limit (:mod:`api.core.access`) before the
    body is read; the rate-limit headers go out with the answer (see the app's middleware).
    In a thread only when the check may wait on the network (:attr:`Access.may_block`)."""
    route = connection.scope.get("route")
    if connection.scope["type"] != "http" or route is None:
        return  # the WebSocket route checks at its handshake, where it can answer
    access = connection.app.state.service.access
    arguments = (
        connection.scope["method"],
        route.path,
        connection.headers.get("authorization"),
        connection.headers.get("x-api-key"),
        connection.client.host if connection.client else "unknown",
    )
    if access.may_block:
        connection.state.limit_headers = await run_in_threadpool(access.check, *arguments)
    else:
        connection.state.limit_headers = access.check(*arguments)


def caller(connection: HTTPConnection) -> str:
    """What keeps this caller on one rollout arm (:func:`api.core.rollout.caller_key`)."""
    service: PredictionService = connection.app.state.service
    client = connection.client.host if connection.client else "unknown"
    return request_caller(connection.headers.get, client, service.settings.rollout.key_header)


ServiceDep = Annotated[PredictionService, Depends(get_service)]
#: Documented with the pattern job ids have, checked by the core (same 422 as Flask's).
JobId = Annotated[
    str,
    Path(
        description=str(JOB_ID_PARAMETER["description"]),
        json_schema_extra={"pattern": JOB_ID_PARAMETER["schema"]["pattern"]},
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "unreadable body"),
        (413, "body too large"),
        (415, "not JSON"),
        (422, "invalid fields"),
        (503, "no champion loaded"),
    )
}


def body_ref(name: str) -> dict[str, Any]:
    """OpenAPI request body pointing at a generated model in the components."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


async def read_body(request: Request) -> Any:
    """The request's JSON body, refused as the core says (415/413/400)."""
    limit = request.app.state.service.settings.serve.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
    return read_json(request.headers.get("content-type"), await request.body(), limit)


def router(spec: RecordSpec, record: type[BaseModel]) -> APIRouter:
    """All HTTP and WebSocket routes for records described by ``spec``."""
    api = APIRouter(dependencies=[Depends(guard)])

    async def predict(
        request: Request, response: Response, service: PredictionService
    ) -> dict[str, Any]:
        # The core checks the record (the one check both apps share); the Record model only
        # documents it, as the Batch model documents /predict/batch.
        body = await read_body(request)
        answer = service.predict(body, request.state.request_id, caller(request))
        response.headers.update(model_headers(answer))
        return answer

    @api.post(
        "/predict",
        response_model=PredictResponse,
        responses={**ERRORS, **responses_with_links(200, links.PREDICT_LINKS)},
        tags=["predict"],
        openapi_extra=body_ref(record.__name__),
    )
    async def predict_one(
        request: Request, response: Response, service: ServiceDep
    ) -> dict[str, Any]:
        """Score one record: probability, label, threshold, model, arm and prediction id."""
        return await predict(request, response, service)

    @api.post(
        "/api/v1/predict",
        response_model=PredictResponse,
        responses={**ERRORS, **responses_with_links(200, links.PREDICT_LINKS)},
        tags=["v1"],
        openapi_extra=body_ref(record.__name__),
    )
    async def predict_v1(
        request: Request, response: Response, service: ServiceDep
    ) -> dict[str, Any]:
        """Same as POST /predict (DeployHub name)."""
        return await predict(request, response, service)

    @api.post(
        "/predict/batch",
        response_model=BatchResponse,
        responses={**ERRORS, **responses_with_links(200, links.BATCH_LINKS)},
        tags=["predict"],
        openapi_extra=body_ref("Batch"),
    )
    async def predict_batch(request: Request, service: ServiceDep) -> Response:
        """Score up to the configured limit of records, all or nothing."""
        # The core checks records column by column (one rule set with /predict, far faster than
        # a pydantic pass per record); the Batch model documents the body. The core's answer is
        # already the documented shape: encoded as is, not re-validated 10,000 times.
        answer = service.predict_batch(
            await read_body(request), request.state.request_id, caller(request)
        )
        return Response(
            orjson.dumps(answer), media_type="application/json", headers=model_headers(answer)
        )

    @api.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={
            **{code: ERRORS[code] for code in (400, 413, 415, 422)},
            503: {"model": ErrorBody, "description": "not stored: retry"},
        },
        tags=["feedback"],
        openapi_extra=body_ref("Feedback"),
    )
    async def feedback(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Store the true label of a prediction; a second label for it replaces the first."""
        return service.feedback(await read_body(request), request.state.request_id)

    @api.post(
        "/retrain",
        status_code=202,
        tags=["retrain"],
        responses={
            409: {"model": ErrorBody, "description": "a job is running"},
            429: {"model": ErrorBody, "description": "rate limited"},
            **responses_with_links(202, links.RETRAIN_LINKS),
        },
    )
    def retrain(request: Request, response: Response, service: ServiceDep) -> dict[str, Any]:
        """Train in the background; a better model becomes champion and is served at once."""
        client = request.client.host if request.client else "unknown"
        job = service.retrain(client)
        response.headers["Location"] = f"/retrain/{job['job_id']}"
        return job

    @api.get(
        "/retrain/{job_id}",
        tags=["retrain"],
        responses={
            404: {"model": ErrorBody, "description": "no such job"},
            422: {"model": ErrorBody, "description": "not a job id"},
        },
    )
    def retrain_status(job_id: JobId, service: ServiceDep) -> dict[str, Any]:
        """Status (queued, running, succeeded, failed), result and error of a job."""
        return service.retrain_status(job_id)

    @api.get("/health", tags=["operations"])
    @api.get("/api/v1/health", tags=["v1"])
    def health(service: ServiceDep) -> dict[str, Any]:
        """Liveness: the process answers."""
        return service.health()

    @api.get("/ready", tags=["operations"], responses={503: {"description": "not ready"}})
    def ready(service: ServiceDep) -> JSONResponse:
        """200 when the champion is loaded and the history database answers, else 503."""
        is_ready, body = service.readiness()
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @api.get("/model", tags=["operations"], responses={503: ERRORS[503]})
    def model(service: ServiceDep) -> dict[str, Any]:
        """Which model answers (version, run id, digest, source), metrics and features."""
        return service.model_info()

    @api.get(
        "/predictions",
        tags=["operations"],
        responses={422: ERRORS[422]},
        openapi_extra={"parameters": OPENAPI_PARAMETERS},  # checked by the core, not FastAPI
    )
    def predictions(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Stored predictions, newest first; page with limit/offset, filter by time/version."""
        return service.predictions(request.query_params.multi_items())

    @api.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses=metrics.OPENAPI_RESPONSES,
    )
    def prometheus() -> Response:
        """Request counts, latency histograms, predictions by label, model version."""
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @api.get("/api/v1/metrics", tags=["v1"])
    def metrics_summary(service: ServiceDep) -> dict[str, Any]:
        """Request count, error rate, latency percentiles, positive rate."""
        return service.metrics_summary()

    @api.get(
        "/rollout",
        tags=["rollout"],
        responses={503: {"model": ErrorBody, "description": "history unreadable"}},
    )
    async def rollout_report(service: ServiceDep) -> dict[str, Any]:
        """The rollout's state, per-arm live metrics with intervals, tests and verdict."""
        return service.rollout_report()

    @api.put(
        "/rollout",
        tags=["rollout"],
        responses={code: ERRORS[code] for code in (400, 413, 415, 422)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ROLLOUT_CHANGE_SCHEMA}},
            }
        },
    )
    async def rollout_change(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Change the running rollout's mode or share (off pauses it); admin scope."""
        client = request.client.host if request.client else "unknown"
        return service.change_rollout(await read_body(request), f"api:{client}")

    @api.websocket("/ws/predict")
    async def ws_predict(websocket: WebSocket) -> None:
        """One JSON record (or {"records": [...]}) per message, one answer each."""
        service: PredictionService = websocket.app.state.service
        request_id = new_request_id(websocket.headers.get("x-request-id"))
        try:
            client = websocket.client.host if websocket.client else "unknown"
            service.access.check(
                "GET",
                "/ws/predict",
                websocket.headers.get("authorization"),
                websocket.headers.get("x-api-key"),
                client,
            )
        except errors.ApiError as refused:  # an HTTP answer to the handshake, as Flask gives
            await websocket.send_denial_response(
                JSONResponse(
                    errors.error_body(refused), refused.status, headers=dict(refused.headers)
                )
            )
            return
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive_text()
                await websocket.send_json(
                    service.answer_message(message, request_id, caller(websocket))
                )
        except WebSocketDisconnect:
            return

    del spec
    return api
