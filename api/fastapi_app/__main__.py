"""``python -m api.fastapi_app``: serve the FastAPI twin with uvicorn, addresses from settings."""

from __future__ import annotations

import uvicorn

from xgbops.config import load_settings
from xgbops.logs import configure_logging, logging_config

from api.server import ServerPlan


def main() -> None:
    """Run uvicorn with the app factory, as :class:`~api.server.ServerPlan` says."""
    settings = load_settings()
    configure_logging(settings)
    plan = ServerPlan.for_app("fastapi", settings)
    plan.prepare_environment()
    if plan.multiprocess_metrics:
        plan.clear_metrics()
    uvicorn.run(
        "api.fastapi_app.app:create_app",
        factory=True,
        host=plan.host,
        port=plan.port,
        workers=plan.workers,
        timeout_keep_alive=plan.keepalive_s,
        timeout_graceful_shutdown=plan.graceful_timeout_s,
        # uvicorn's records through xgbops' formatter; the app writes the access log itself.
        log_config=logging_config(settings),
        log_level=plan.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
