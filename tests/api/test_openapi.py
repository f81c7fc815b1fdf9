"""The endpoint catalogue (api/core/openapi.py): both apps serve exactly its operations, and
both OpenAPI documents, built from it, say the same thing of every one."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match

from api.core.openapi import ENDPOINTS, answer_schemas
from api.core.service import PredictionService
from api.fastapi_app import routes as fastapi_routes
from api.fastapi_app.app import create_app as create_fastapi
from api.flask_app import create_app as create_flask, openapi_route
from tests.conftest import project_settings

CATALOGUE = {(e.method, e.path) for e in ENDPOINTS}
NOT_OPERATIONS = {"/ws/predict", "/openapi.json", "/docs"}  # the WebSocket and the docs


def _documents(settings):
    service = PredictionService(settings)  # never started: documents need no model or database
    flask_app, fastapi_app = create_flask(settings, service), create_fastapi(settings, service)
    flask_document = flask_app.test_client().get("/openapi.json").get_json()
    return flask_app, fastapi_app, flask_document, fastapi_app.openapi()


@pytest.fixture(scope="module", params=["open", "locked"])
def built(request, champion_project):
    """Both apps and their documents, with the embedded default's settings and with keys and
    rate limits on (the documents say what the server enforces)."""
    extra = {"auth": {"enabled": True}, "limits": {"predict": "9/second", "read": "5/second"}}
    return _documents(
        project_settings(champion_project, **(extra if request.param == "locked" else {}))
    )


def test_both_documents_describe_every_operation_alike(built):
    _, _, flask_document, fastapi_document = built
    assert flask_document["paths"] == fastapi_document["paths"]
    assert flask_document["tags"] == fastapi_document["tags"]
    operations = {
        (method.upper(), path)
        for path, item in flask_document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert operations == CATALOGUE
    for name, schema in answer_schemas(flask_document["openapi"]).items():
        assert flask_document["components"]["schemas"][name] == schema
    for name, schema in answer_schemas(fastapi_document["openapi"]).items():
        assert fastapi_document["components"]["schemas"][name] == schema


def test_every_reference_of_a_document_resolves(built):
    """Each ``$ref`` names a component of the same document (request bodies come from each
    framework's models, answers from the catalogue)."""
    for document in built[2:]:
        found: list[str] = []
        _refs(document["paths"], found)
        _refs(document["components"]["schemas"], found)
        names = set(document["components"]["schemas"])
        assert found and {ref.rsplit("/", 1)[-1] for ref in found} <= names


def _refs(value, found):
    if isinstance(value, dict):
        if "$ref" in value:
            found.append(value["$ref"])
        for item in value.values():
            _refs(item, found)
    elif isinstance(value, list):
        for item in value:
            _refs(item, found)


def test_each_app_serves_exactly_the_catalogued_operations(built):
    flask_app, fastapi_app, _, _ = built
    served_by_flask = {
        (method, openapi_route(rule.rule))
        for rule in flask_app.url_map.iter_rules()
        if rule.endpoint in {e.name for e in ENDPOINTS}
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    others = {
        openapi_route(rule.rule)
        for rule in flask_app.url_map.iter_rules()
        if rule.endpoint not in {e.name for e in ENDPOINTS}
    }
    assert served_by_flask == CATALOGUE
    assert {path for path in others if not path.startswith(("/static", "/docs/"))} == (
        NOT_OPERATIONS
    )
    router = fastapi_routes.router()
    served_by_fastapi = {
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert served_by_fastapi == CATALOGUE
    for method, path in CATALOGUE:  # and the app routes each of them to a view
        scope = {"type": "http", "path": path.replace("{job_id}", "0" * 32), "method": method}
        assert any(r.matches(scope)[0] is Match.FULL for r in fastapi_app.router.routes), path


@pytest.mark.parametrize(
    ("version", "run_id"),
    [
        ("3.0.3", {"type": "string", "nullable": True}),
        ("3.1.0", {"type": ["string", "null"]}),
    ],
)
def test_a_nullable_answer_field_is_written_as_its_document_version_says(version, run_id):
    schema = answer_schemas(version)["PredictResponse"]["properties"]["run_id"]
    assert {k: v for k, v in schema.items() if k != "description"} == run_id


def test_every_refusal_of_a_body_endpoint_is_documented_with_the_error_shape(built):
    document = built[2]
    for endpoint in ENDPOINTS:
        responses = document["paths"][endpoint.path][endpoint.method.lower()]["responses"]
        if endpoint.body is not None:
            assert {"400", "413", "415", "422"} <= set(responses), endpoint.name
        for status, response in responses.items():
            if status.startswith(("4", "5")) and endpoint.name != "ready":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (endpoint, status)
