"""The serving layer: one service core (``api.core``), two thin adapters (Flask and FastAPI).

Server entry points (``api/gunicorn.conf.py``, ``python -m api.fastapi_app``) serve lean: the
API needs numpy and xgboost only, but xgboost imports scikit-learn (and with it pandas) whenever
it is installed. Marking those modules absent halves a worker's memory and start-up time;
training, which needs them, runs in its own process (``xgbops train``) and is unaffected.
"""

import os
import sys

LEAN_ENV = "XGBOPS_LEAN_SERVING"
LEAN_MODULES = ("sklearn", "pandas", "mlflow", "matplotlib", "pandera")


def serve_lean() -> None:
    """Make this process (and the workers it starts) refuse the modules serving never needs."""
    os.environ[LEAN_ENV] = "1"
    for name in LEAN_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed"


if os.environ.get(LEAN_ENV) == "1":  # a worker started by a lean entry point
    serve_lean()
