"""The FastAPI twin: the same contract as the Flask app, on the same service core.

``create_app(settings)`` builds the app; uvicorn runs it with ``--factory
api.fastapi_app.app:create_app``. There is no module-level app.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xgbops.config import Settings, load_settings
from xgbops.logs import configure_logging

from api import docs_assets
from api.core import errors, metrics
from api.core import openapi
from api.core.access import SECURITY_SCHEMES
from api.core.body import check_headers
from api.core.schema import RecordSpec
from api.core.service import PredictionService, new_request_id
from api.fastapi_app.models import batch_model, feedback_model, record_model
from api.fastapi_app.routes import router

access_log = structlog.get_logger("xgbops.access")
log = structlog.get_logger(__name__)


def create_app(
    settings: Settings | None = None, service: PredictionService | None = None
) -> FastAPI:
    """Build the FastAPI app for ``settings`` (loaded from YAML + environment by default)."""
    settings = settings or load_settings()
    if service is None:  # built here: this is the worker process
        configure_logging(settings)
        service = PredictionService.create(settings)
    spec = RecordSpec.from_dataset(settings.dataset)
    record = record_model(spec)
    batch = batch_model(record, settings.serve.batch_limit)
    feedback = feedback_model(spec.labels)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.close()

    app = FastAPI(
        title="xgbops",
        version="1",
        description=f"Scores {settings.dataset.description}",
        docs_url=None,  # our own page (_install_docs): Swagger UI from this app, not a CDN
        openapi_url="/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(router())
    _install_docs(app)
    app.add_middleware(
        _Observe,
        log_requests=settings.serve.access_log,
        max_header_bytes=settings.serve.max_header_bytes,
    )
    app.add_middleware(metrics.TrackInFlight)
    _install_handlers(app)
    models = [record, batch, feedback]
    app.openapi = lambda: _openapi(app, models, settings, spec)  # type: ignore[method-assign]
    return app


def _openapi(
    app: FastAPI, models: list[Any], settings: Settings, spec: RecordSpec
) -> dict[str, Any]:
    """Every operation from :mod:`api.core.openapi`, the request bodies from the pydantic
    models of the dataset's records (the Flask document is built the same way)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=[],  # every operation is in api.core.openapi, none is described twice
        tags=list(openapi.TAGS),
    )
    document["paths"] = openapi.paths(settings, spec)
    components = document.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas.update(openapi.answer_schemas(document["openapi"]))
    app.openapi_schema = document
    return document


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its files at the URLs the Flask app serves them at.

    Neither the page nor the files are in the OpenAPI document (as in the Flask app).
    """
    app.mount(
        docs_assets.assets_url().rstrip("/"),
        _Assets(directory=docs_assets.assets_dir()),
        name="docs_assets",
    )

    @app.get(docs_assets.DOCS_URL, include_in_schema=False)
    async def _swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")  # behind a path prefix
        return get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=app.title,
            swagger_js_url=root + docs_assets.asset_url(docs_assets.SWAGGER_JS),
            swagger_css_url=root + docs_assets.asset_url(docs_assets.SWAGGER_CSS),
            swagger_favicon_url=root + docs_assets.asset_url(docs_assets.FAVICON),
            oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to return from
        )


class _Assets(StaticFiles):
    """Starlette's static files with the long cache lifetime of versioned URLs."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = docs_assets.CACHE_CONTROL
        return response


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def _api_error(request: Request, error: errors.ApiError) -> JSONResponse:
        return _error_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(errors.ValidationFailed(_request_errors(error)), request)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        """The client left mid-request: normal traffic, not an incident (nobody reads this)."""
        log.info("http.client_disconnected", path=request.url.path)
        return _error_response(errors.BadRequest("the client disconnected"), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        """A bug: the traceback to the log under the request id, nothing of it to the client."""
        log.exception("http.unexpected_error", error=repr(error))
        return _error_response(errors.InternalError(), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return _error_response(errors.NotFound(f"no route {request.url.path}"), request)
        if error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "").replace(" ", "").split(",")
            refused = errors.MethodNotAllowed(request.method, filter(None, allowed))
            return _error_response(refused, request)
        if error.status_code >= 500:
            return _error_response(errors.InternalError(), request)
        return _error_response(
            errors.ApiError(str(error.detail), (), error.status_code, "http_error"), request
        )


def _request_errors(error: RequestValidationError) -> list[errors.FieldError]:
    """FastAPI's own checks (rare: the core checks bodies and queries): name the field only."""
    found = []
    for item in error.errors():
        location = [str(part) for part in item["loc"] if part not in {"query", "body", "path"}]
        found.append(errors.FieldError(".".join(location) or "body", str(item["msg"])))
    return found


def _error_response(error: errors.ApiError, request: Request) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse(
        errors.error_body(error, request_id), status_code=error.status, headers=dict(error.headers)
    )


class _Observe:
    """Pure ASGI middleware: request id, latency and status per route, for every response.

    The request id is bound to structlog's context for the request's task, so every log line
    of the request carries it, uvicorn's "Exception in ASGI application" included (hence no
    clearing at the end: the task's context goes with the task).
    """

    def __init__(
        self, app: ASGIApp, log_requests: bool = True, max_header_bytes: int = 8192
    ) -> None:
        self.app = app
        self.log_requests = log_requests
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = new_request_id(headers.get(b"x-request-id", b"").decode("latin-1") or None)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                for name, value in scope["state"].get("limit_headers", {}).items():
                    headers.append((name.lower().encode(), value.encode()))
            await send(message)

        try:
            try:
                check_headers(
                    ((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
                    self.max_header_bytes,
                )
            except errors.HeaderTooLarge as refused:  # before routing, as Flask's before_request
                body = errors.error_body(refused)
                await JSONResponse(body, status_code=refused.status)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            metrics.observe_request(path, scope["method"], status, elapsed)
            if self.log_requests:
                client = scope.get("client")
                access_log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    request_id=request_id,
                    remote_addr=client[0] if client else None,
                )
