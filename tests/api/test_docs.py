"""The API's documents: api/openapi.json and the Postman collection stay true, and Swagger UI
at /docs works offline (both apps serve its files themselves, at the same URLs)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from api import docs_assets
from api.core.service import PredictionService
from api.fastapi_app.app import create_app as create_fastapi
from api.flask_app import create_app as create_flask
from api.openapi_export import openapi_document, main
from tests.conftest import REPO, make_project, project_settings

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
    assert document["paths"]["/retrain"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]


# --- Swagger UI at /docs, served offline by both apps --------------------------------------------

#: Content types a browser runs or applies, by file extension.
ASSET_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}


class _Links(HTMLParser):
    """Every ``src`` and ``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in {"src", "href"} and value)


def _links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


@dataclass
class _Answer:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@pytest.fixture(scope="module")
def docs_apps(tmp_path_factory):
    """Both apps in-process on a fresh project (no model needed: the docs do not score)."""
    settings = project_settings(make_project(tmp_path_factory.mktemp("docs") / "project"))
    flask_app = create_flask(settings, service=PredictionService(settings))
    fastapi_app = create_fastapi(settings, service=PredictionService(settings))

    def get(kind: str, path: str, method: str = "GET") -> _Answer:
        if kind == "flask":
            response = flask_app.test_client().open(path, method=method)
            return _Answer(
                response.status_code, response.mimetype, dict(response.headers), response.data
            )

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=fastapi_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path)

        answer = asyncio.run(send())
        content_type = answer.headers.get("content-type", "").split(";")[0].strip()
        return _Answer(answer.status_code, content_type, dict(answer.headers), answer.content)

    return get


APPS = ["flask", "fastapi"]


@pytest.mark.parametrize("kind", APPS)
def test_the_docs_page_references_only_same_origin_urls(docs_apps, kind):
    page = docs_apps(kind, "/docs")
    assert page.status == 200 and page.content_type == "text/html"
    assert "swagger" in page.text.lower()
    assert not re.findall(r"(?i)\b(?:https?:)?//[a-z0-9]", page.text), page.text
    links = _links(page.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    assert all(link.startswith(docs_assets.assets_url()) for link in links), links
    assert "/openapi.json" in page.text  # the app's own document, same origin too
    assert docs_apps(kind, "/openapi.json").status == 200


@pytest.mark.parametrize("kind", APPS)
def test_every_asset_the_docs_page_loads_is_served(docs_apps, kind):
    for link in _links(docs_apps(kind, "/docs").text):
        asset = docs_apps(kind, link)
        assert asset.status == 200, (kind, link)
        extension = link[link.rindex(".") :]
        assert asset.content_type in ASSET_TYPES[extension], (kind, link, asset.content_type)
        assert len(asset.body) > (100_000 if extension in {".js", ".css"} else 100), link
        assert asset.headers.get("Cache-Control", asset.headers.get("cache-control")) == (
            docs_assets.CACHE_CONTROL
        )


def test_both_apps_serve_the_same_assets_at_the_same_urls(docs_apps):
    flask_links = set(_links(docs_apps("flask", "/docs").text))
    fastapi_links = set(_links(docs_apps("fastapi", "/docs").text))
    # Each page loads Swagger UI's script and stylesheet; flask-smorest's adds the standalone
    # preset, FastAPI's a favicon. Each app answers every one of them, byte for byte alike.
    core = {
        docs_assets.asset_url(docs_assets.SWAGGER_JS),
        docs_assets.asset_url(docs_assets.SWAGGER_CSS),
    }
    assert core <= flask_links and core <= fastapi_links
    assert docs_assets.asset_url(docs_assets.SWAGGER_PRESET_JS) in flask_links
    assert docs_assets.asset_url(docs_assets.FAVICON) in fastapi_links
    for link in sorted(flask_links | fastapi_links):
        flask, fastapi = docs_apps("flask", link), docs_apps("fastapi", link)
        assert (flask.status, fastapi.status) == (200, 200), link
        assert flask.content_type == fastapi.content_type, link
        assert (
            flask.body == fastapi.body == (docs_assets.assets_dir() / Path(link).name).read_bytes()
        )


@pytest.mark.parametrize("kind", APPS)
def test_a_missing_asset_is_the_usual_json_404(docs_apps, kind):
    missing = docs_apps(kind, docs_assets.asset_url("no-such-file.js"))
    assert missing.status == 404 and json.loads(missing.body)["error"] == "not_found"
    escape = docs_apps(kind, docs_assets.assets_url() + "..%2f..%2fopenapi.json")
    assert escape.status == 404


@pytest.mark.parametrize("kind", APPS)
def test_the_docs_and_their_assets_stay_out_of_the_openapi_document(docs_apps, kind):
    paths = json.loads(docs_apps(kind, "/openapi.json").body)["paths"]
    assert not [path for path in paths if path.startswith(docs_assets.DOCS_URL)]


def test_the_asset_urls_carry_the_swagger_ui_version():
    version = docs_assets.swagger_ui_version()
    assert re.fullmatch(r"5\.\d+\.\d+", version), version  # the swagger-ui-dist 5.x release
    assert docs_assets.assets_url() == f"/docs/swagger-ui/{version}/"
    assert (docs_assets.assets_dir() / docs_assets.SWAGGER_JS).stat().st_size > 1_000_000


def test_a_missing_asset_package_is_named(monkeypatch):
    monkeypatch.setattr(docs_assets, "find_spec", lambda name: None)
    docs_assets.assets_dir.cache_clear()
    try:
        with pytest.raises(docs_assets.DocsAssetsMissing, match="flask-swagger-ui"):
            docs_assets.assets_dir()
    finally:
        docs_assets.assets_dir.cache_clear()
