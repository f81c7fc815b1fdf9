"""Swagger UI's files, served by both apps from an installed package, so /docs works offline.

The files are the swagger-ui-dist release shipped unmodified in the ``flask-swagger-ui`` wheel
(``flask_swagger_ui/dist``, its version in ``dist/VERSION``). The package is located, never
imported: its Flask blueprint is not used, only its files. Both apps serve them under
:func:`assets_url`, which carries the Swagger UI version: a new release is a new URL, so a
browser may keep each file for a year (:data:`CACHE_CONTROL`). Nothing here knows Flask or
Starlette; each adapter mounts the folder its own way at the same URLs.
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

#: Where Swagger UI answers in both apps (the HTML page; its assets live under assets_url()).
DOCS_URL = "/docs"
#: The distribution that ships the files, and the import name of its folder.
ASSETS_DISTRIBUTION = "flask-swagger-ui"
_PACKAGE = "flask_swagger_ui"
#: The files the two pages reference (flask-smorest's page also loads the standalone preset).
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_PRESET_JS = "swagger-ui-standalone-preset.js"
SWAGGER_CSS = "swagger-ui.css"
FAVICON = "favicon-32x32.png"
#: Versioned URLs never change content: cache for a year, and do not revalidate.
CACHE_CONTROL = "public, max-age=31536000, immutable"


class DocsAssetsMissing(RuntimeError):
    """The package that ships Swagger UI's files is not installed (or has no files)."""


@functools.cache
def assets_dir() -> Path:
    """The folder of Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ...).

    Raises:
        DocsAssetsMissing: ``flask-swagger-ui`` is not installed, or ships no ``dist`` folder.
    """
    spec = find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "dist"
        if (folder / SWAGGER_JS).is_file():
            return folder
    raise DocsAssetsMissing(
        f"Swagger UI's files are missing: install {ASSETS_DISTRIBUTION} (a serving dependency)"
    )


@functools.cache
def swagger_ui_version() -> str:
    """The Swagger UI release of the files, e.g. ``5.34.0``.

    Read from ``dist/VERSION``; the wheel's own version (the same number) when that is missing.
    """
    stamp = assets_dir() / "VERSION"
    if stamp.is_file():
        return stamp.read_text(encoding="utf-8").strip().removeprefix("v")
    return version(ASSETS_DISTRIBUTION)


def assets_url() -> str:
    """The URL prefix (ending in ``/``) both apps serve :func:`assets_dir` under."""
    return f"{DOCS_URL}/swagger-ui/{swagger_ui_version()}/"


def asset_url(name: str) -> str:
    """The URL of one file of :func:`assets_dir` (e.g. ``asset_url(SWAGGER_JS)``)."""
    return assets_url() + name
