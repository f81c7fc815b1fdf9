"""The published API documents stay true: api/openapi.json and the Postman collection."""

from __future__ import annotations

import json

from api.openapi_export import openapi_document, main
from tests.conftest import REPO

PUBLISHED = REPO / "api" / "openapi.json"
POSTMAN = REPO / "api" / "postman_collection.json"


def test_published_openapi_matches_the_app():
    assert json.loads(PUBLISHED.read_text()) == json.loads(
        json.dumps(openapi_document())
    ), "api/openapi.json is stale: run `make postman`"


def test_export_writes_the_document(tmp_path):
    main([str(tmp_path / "doc.json")])
    assert json.loads((tmp_path / "doc.json").read_text())["info"]["title"] == "xgbops"


def _requests(items, found):
    for item in items:
        if "item" in item:
            _requests(item["item"], found)
        else:
            path = "/" + "/".join(item["request"]["url"]["path"]).replace(":job_id", "{job_id}")
            found.add((item["request"]["method"].lower(), path))
    return found


def test_postman_collection_has_a_request_for_every_operation():
    document = json.loads(PUBLISHED.read_text())
    methods = {"get", "post", "put", "patch", "delete"}
    operations = {(m, p) for p, item in document["paths"].items() for m in item if m in methods}
    collection = json.loads(POSTMAN.read_text())
    assert _requests(collection["item"], set()) == operations
    assert collection["variable"][0]["value"] == document["servers"][0]["url"]


def test_retrain_is_documented_as_bearer_protected():
    document = json.loads(PUBLISHED.read_text())
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/retrain"]["post"]["security"] == [{"bearer": []}]
