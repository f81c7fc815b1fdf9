"""``python -m api.openapi_export FILE``: write the Flask app's OpenAPI document to FILE.

The committed ``api/openapi.json`` (and the Postman collection generated from it by
``make postman``) is this output; a test fails when it no longer matches the app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from xgbops.config import load_settings

from api.core.service import PredictionService
from api.flask_app import create_app


def openapi_document() -> dict[str, Any]:
    """The document the Flask app serves at /openapi.json (no database or model needed)."""
    settings = load_settings()
    app = create_app(settings, service=PredictionService(settings))
    with app.test_request_context():
        api = app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
        document: dict[str, Any] = api.spec.to_dict()
    return document


def main(argv: list[str] | None = None) -> None:
    """Write the document as indented JSON."""
    target = Path((argv or sys.argv[1:] or ["api/openapi.json"])[0])
    target.write_text(json.dumps(openapi_document(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
