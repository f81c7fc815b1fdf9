"""FastAPI routers: each endpoint reads the body and calls the core, which checks it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from api.core import errors, metrics
from api.core.body import read_json, write_json
from api.core.openapi import Views
from api.core.rollout import model_headers, request_caller
from api.core.service import PredictionService, new_request_id


def service_of(request: Request) -> PredictionService:
    """The service core of this app (looked up, not injected: FastAPI's dependency solving
    costs more per request than the lookup)."""
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


def _json(
    answer: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The core's answer encoded as is: it is already the documented shape, so FastAPI's
    re-encoding (``jsonable_encoder``) would only cost time."""
    return Response(write_json(answer), status, headers, media_type="application/json")


async def read_body(request: Request) -> Any:
    """The request's JSON body, refused as the core says (415/413/400)."""
    limit = request.app.state.service.settings.serve.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
    return read_json(request.headers.get("content-type"), await request.body(), limit)


def router() -> APIRouter:
    """All HTTP and WebSocket routes: each operation of :data:`api.core.openapi.ENDPOINTS` to
    its view (documented there, not here; the core checks each body against the dataset)."""
    api = APIRouter(dependencies=[Depends(guard)])
    for endpoint, view in views().routes():
        api.add_api_route(
            endpoint.path,
            view,
            methods=[endpoint.method],
            name=endpoint.name,
            status_code=endpoint.status,
            include_in_schema=False,  # the document comes from api.core.openapi
        )
    api.add_api_websocket_route("/ws/predict", ws_predict)
    return api


def views() -> Views:  # pylint: disable=too-many-locals  # a view each
    """The view of each operation."""
    table = Views()

    @table.serves("predict", "predictV1")
    async def predict(request: Request) -> Response:
        service = service_of(request)
        # The core checks the record (the one check both apps share).
        body = await read_body(request)
        answer = service.predict(body, request.state.request_id, caller(request))
        return _json(answer, headers=model_headers(answer))

    @table.serves("predictBatch")
    async def predict_batch(request: Request) -> Response:
        service = service_of(request)
        # The core checks records column by column (one rule set with /predict, far faster than
        # a pydantic pass per record).
        answer = service.predict_batch(
            await read_body(request), request.state.request_id, caller(request)
        )
        return _json(answer, headers=model_headers(answer))

    @table.serves("sendFeedback")
    async def feedback(request: Request) -> Response:
        return _json(
            service_of(request).feedback(await read_body(request), request.state.request_id)
        )

    @table.serves("retrain")
    def retrain(request: Request) -> Response:
        service = service_of(request)
        client = request.client.host if request.client else "unknown"
        job = service.retrain(client)
        return _json(job, 202, {"Location": f"/retrain/{job['job_id']}"})

    @table.serves("readRetrainJob")
    def retrain_status(job_id: str, request: Request) -> Response:
        return _json(service_of(request).retrain_status(job_id))

    @table.serves("health", "healthV1")
    def health(request: Request) -> Response:
        return _json(service_of(request).health())

    @table.serves("ready")
    def ready(request: Request) -> Response:
        service = service_of(request)
        is_ready, body = service.readiness()
        return _json(body, 200 if is_ready else 503)

    @table.serves("readModel")
    def model(request: Request) -> Response:
        return _json(service_of(request).model_info())

    @table.serves("readPredictions")
    def predictions(request: Request) -> Response:
        return _json(service_of(request).predictions(request.query_params.multi_items()))

    @table.serves("metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @table.serves("metricsSummary")
    def metrics_summary(request: Request) -> Response:
        return _json(service_of(request).metrics_summary())

    @table.serves("readRollout")
    async def rollout_report(request: Request) -> Response:
        return _json(service_of(request).rollout_report())

    @table.serves("changeRollout")
    async def rollout_change(request: Request) -> Response:
        service = service_of(request)
        client = request.client.host if request.client else "unknown"
        return _json(service.change_rollout(await read_body(request), f"api:{client}"))

    return table


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
            JSONResponse(errors.error_body(refused), refused.status, headers=dict(refused.headers))
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
