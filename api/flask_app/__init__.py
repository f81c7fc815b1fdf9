"""The Flask adapter: app factory, views (routes.py), marshmallow schemas, flask-smorest's page.

``create_app(settings)`` builds everything; there is no module-level app. Gunicorn loads it with
``api.flask_app:create_app()`` (see ``api/gunicorn_conf.py``).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import orjson
import structlog
from flask import Blueprint, Flask, Response, current_app, g, request, send_from_directory
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from xgbops.config import Settings, load_settings
from xgbops.logs import configure_logging

from api import docs_assets
from api.core import errors, metrics
from api.core import openapi
from api.core.access import SECURITY_SCHEMES
from api.core.body import check_headers, read_json, write_json
from api.core.schema import RecordSpec
from api.core.service import PredictionService, new_request_id
from api.flask_app import routes
from api.flask_app.schemas import CoreChecked, batch_schema, feedback_schema, record_schema
from api.flask_app.websocket import register_websocket

access_log = structlog.get_logger("xgbops.access")
log = structlog.get_logger(__name__)


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON through orjson: a 10,000-prediction answer encodes 20x faster.

    Keys keep their order; the encoder is the FastAPI twin's (:func:`api.core.body.write_json`).
    """

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return write_json(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def create_app(settings: Settings | None = None, service: PredictionService | None = None) -> Flask:
    """Build the Flask app for ``settings`` (loaded from YAML + environment by default)."""
    settings = settings or load_settings()
    if service is None:  # built here, so started here: this is the worker process
        configure_logging(settings)
        service = PredictionService.create(settings)
        service.start()
    app = Flask("xgbops")
    app.config.update(
        API_TITLE="xgbops",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH=docs_assets.DOCS_URL,
        # Swagger UI's scripts and styles come from this app (see _docs_assets), not a CDN.
        OPENAPI_SWAGGER_UI_URL=docs_assets.assets_url(),
        MAX_CONTENT_LENGTH=settings.serve.max_body_bytes,
        XGBOPS_MAX_HEADER_BYTES=settings.serve.max_header_bytes,
        API_SPEC_OPTIONS={
            "info": {"description": f"Scores {settings.dataset.description}"},
            "components": {"securitySchemes": SECURITY_SCHEMES},
            "tags": list(openapi.TAGS),
            "servers": [{"url": f"http://{settings.serve.host}:{settings.serve.port}"}],
        },
    )
    app.json = OrjsonProvider(app)
    app.extensions["xgbops"] = service
    spec = RecordSpec.from_dataset(settings.dataset)
    record = record_schema(spec)  # the view's check and the document's Record, one class
    routes.register(app, record)
    _document(app, _Api(app), record, settings)
    register_websocket(app, service)
    app.register_blueprint(_docs_assets())
    _install_hooks(app, settings.serve.access_log)
    app.wsgi_app = _close_when_body_unread(app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = metrics.track_in_flight_wsgi(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _docs_assets() -> Blueprint:
    """Swagger UI's files at docs_assets.assets_url(), the URLs the FastAPI twin serves them at.

    A plain Flask blueprint, so the files stay out of the OpenAPI document.
    """
    blueprint = Blueprint("docs_assets", __name__, url_prefix=docs_assets.assets_url().rstrip("/"))

    @blueprint.get("/<path:filename>")
    def _asset(filename: str) -> Response:
        response = send_from_directory(docs_assets.assets_dir(), filename)
        response.headers["Cache-Control"] = docs_assets.CACHE_CONTROL
        return response

    return blueprint


class _Api(Api):  # type: ignore[misc]
    """flask-smorest for the document's page and route, without its stock error and pagination
    components: every answer of this API is documented in :mod:`api.core.openapi`."""

    def _register_responses(self) -> None:
        """None: flask-smorest's would add its own error shape, which this API never sends."""

    def _register_pagination_header(self) -> None:
        """None: this API pages with limit and offset, without flask-smorest's header."""


def _document(app: Flask, api: Api, record: type[CoreChecked], settings: Settings) -> None:
    """The OpenAPI document: every operation from :mod:`api.core.openapi`, the request bodies
    from the marshmallow schemas of ``record``'s dataset."""
    spec = record.record_spec
    components = api.spec.components
    components.schema("Record", schema=record)
    components.schema("Batch", schema=batch_schema(record, settings.serve.batch_limit))
    components.schema("Feedback", schema=feedback_schema(spec.labels))
    for name, schema in openapi.answer_schemas(str(api.spec.openapi_version)).items():
        components.schema(name, schema)
    # flask-smorest's plugin writes a path from a Flask rule: the rule of an operation on it.
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    rule_of = {e.path: rules[e.name] for e in openapi.ENDPOINTS}
    for path, item in openapi.paths(settings, spec).items():
        parameters = item.pop("parameters", [])
        api.spec.path(rule=rule_of[path], operations=item, parameters=parameters)


@functools.cache
def openapi_route(rule: str) -> str:
    """A Flask rule as the OpenAPI document (and :mod:`api.core.access`) writes it."""
    return metrics.endpoint_label(rule)


def _install_hooks(app: Flask, log_requests: bool) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = new_request_id(request.headers.get("X-Request-ID"))
        # Every log line of this request carries its id (gthread reuses threads: clear first).
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
        check_headers(request.headers.items(), current_app.config["XGBOPS_MAX_HEADER_BYTES"])
        if request.url_rule is not None:
            g.limit_headers = current_app.extensions["xgbops"].access.check(
                request.method,
                openapi_route(request.url_rule.rule),
                request.headers.get("Authorization"),
                request.headers.get("X-API-Key"),
                request.remote_addr or "unknown",
            )
        if request.method in ("POST", "PUT") and request.path in openapi.BODY_PATHS:
            _parse_json_body()

    @app.after_request
    def _finish(response: Response) -> Response:
        if not _drain_body(current_app.config["MAX_CONTENT_LENGTH"] * DRAIN_FACTOR):
            request.environ[BODY_UNREAD] = True
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.extend(g.get("limit_headers", {}))
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", 0)
        metrics.observe_request(rule, request.method, response.status_code, elapsed)
        if log_requests:
            access_log.info(
                "http.request",
                method=request.method,
                path=request.path,
                status=response.status_code,
                duration_ms=round(elapsed * 1000, 3),
                request_id=g.get("request_id", ""),
                remote_addr=request.remote_addr,
            )
        return response

    @app.teardown_request
    def _unbind(_: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()

    @app.errorhandler(errors.ApiError)
    def _api_error(error: errors.ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        return _error_response(_translate(error))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        """A bug: the traceback to the log under the request id, nothing of it to the client."""
        log.exception("http.unexpected_error", error=repr(error))
        return _error_response(errors.InternalError())


#: How much of an unread body is read past ``MAX_CONTENT_LENGTH`` before it is left unread.
DRAIN_FACTOR = 4
#: WSGI environ key: the request body was left unread, the connection must not be kept.
BODY_UNREAD = "xgbops.body_unread"


def _drain_body(most: int) -> bool:
    """Read what the request body still holds (a 404 or 405 with a body, a 413, a refused
    chunked body): gunicorn answers ``Connection: keep-alive`` and then drops a connection
    that still carries more than 64 KiB of unread body, so a client's next request on it
    failed. Read, the connection really can be kept. A body already read costs one empty read.

    Returns:
        False if more than ``most`` bytes were left: the connection must be closed.
    """
    stream = request.environ.get("wsgi.input")
    if stream is None or request.method in ("GET", "HEAD"):
        return True
    if (request.content_length or 0) > most:
        return False  # known to be too long: reading it only to close anyway is wasted work
    while most > 0:
        chunk = stream.read(min(65536, most))
        if not chunk:
            return True
        most -= len(chunk)
    return not stream.read(1)


def _close_when_body_unread(wsgi_app: Any) -> Any:
    """Answer ``Connection: close`` when a body was left unread, instead of gunicorn's promise
    to keep a connection it then resets.

    A WSGI app cannot send the hop-by-hop ``Connection`` header itself; gunicorn's response
    object (whose method ``start_response`` is) takes ``force_close()`` until its headers go
    out, which is after the app returns. Under another server this does nothing.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        body = wsgi_app(environ, start_response)
        if environ.get(BODY_UNREAD):
            force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
            if callable(force_close):
                force_close()
        return body

    return app


def _parse_json_body() -> None:
    """Refuse what is not a JSON body before any view runs; keep the parsed value in ``g``."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None:
        # Chunked: werkzeug would stop at the limit without a word and hand over a truncated
        # body; one byte more than the limit tells read_json whether there was more (413).
        raw = request.environ["wsgi.input"].read(limit + 1)
    else:  # Flask refuses a Content-Length over the limit before reading (413, see _translate)
        raw = request.get_data(cache=True)
    g.body = read_json(request.content_type, raw, limit)


def _translate(error: HTTPException) -> errors.ApiError:
    """Map werkzeug/flask-smorest HTTP errors to the core's error types."""
    if error.code == 404:
        return errors.NotFound(f"no route {request.path}")
    if error.code == 405:
        allowed = getattr(error, "valid_methods", None) or []
        return errors.MethodNotAllowed(request.method, allowed)
    if error.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return errors.PayloadTooLarge(f"request body is larger than {limit} bytes")
    if (error.code or 500) >= 500:
        return errors.InternalError()
    return errors.ApiError(error.description or error.name, (), error.code or 500, "http_error")


def _error_response(error: errors.ApiError) -> Response:
    body = errors.error_body(error, g.get("request_id"))
    response = Response(json.dumps(body), status=error.status, mimetype="application/json")
    for name, value in error.headers.items():
        response.headers[name] = value
    return response
