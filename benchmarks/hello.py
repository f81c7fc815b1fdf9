"""Hello-world apps: what each framework costs under the project's own server and settings.

The serving benchmark compares ``/predict`` with these. Each answers the request the
benchmark sends to ``/predict`` (a POSTed JSON record) by parsing the body and returning a
constant JSON object, and does nothing else: no validation, model, history or metrics.

They run exactly as the project's apps do:

- Flask: ``gunicorn --config python:api.gunicorn_conf 'benchmarks.hello:create_flask_app()'``
  (the application on the command line replaces the configuration's ``wsgi_app``; workers,
  threads, keep-alive and logging stay the project's);
- FastAPI: ``python -m benchmarks.hello``, which is ``python -m api.fastapi_app`` serving
  :func:`create_fastapi_app` instead (same ``uvicorn.run`` options, from the same settings).
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import uvicorn
from fastapi import FastAPI, Request
from flask import Flask
from flask import request as flask_request

#: What both apps answer.
HELLO = {"hello": "world"}
#: The factory ``python -m benchmarks.hello`` hands to uvicorn.
FASTAPI_FACTORY = "benchmarks.hello:create_fastapi_app"


def create_flask_app() -> Flask:
    """A Flask app whose ``POST /predict`` reads the JSON body and answers :data:`HELLO`."""
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> dict[str, str]:
        flask_request.get_json()
        return HELLO

    return app


def create_fastapi_app() -> FastAPI:
    """A FastAPI app whose ``POST /predict`` reads the JSON body and answers :data:`HELLO`."""
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, str]:
        await request.json()
        return HELLO

    return app


def serve_fastapi() -> None:
    """Run ``python -m api.fastapi_app``'s ``main`` with only the application swapped.

    Patching ``uvicorn.run`` rather than copying its arguments keeps the two invocations the
    same when the project's changes (workers, logging, limits all come from settings there).
    """
    from api.fastapi_app import (  # pylint: disable=import-outside-toplevel
        __main__ as project_entry,
    )

    run = uvicorn.run

    def run_hello(app: Any, **options: Any) -> None:
        del app  # the project's factory
        run(FASTAPI_FACTORY, **options)

    with mock.patch.object(uvicorn, "run", run_hello):
        project_entry.main()


if __name__ == "__main__":
    serve_fastapi()
