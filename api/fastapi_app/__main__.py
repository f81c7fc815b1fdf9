"""``python -m api.fastapi_app``: serve the FastAPI twin with uvicorn, addresses from settings."""

from __future__ import annotations

import os

import uvicorn

from xgbops.config import load_settings
from xgbops.logs import configure_logging, logging_config


def main() -> None:
    """Run uvicorn with the app factory; one XGBoost thread per worker process."""
    settings = load_settings()
    configure_logging(settings)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    metrics_dir = settings.state_path / "prometheus" / f"fastapi-{settings.serve.fastapi_port}"
    if settings.serve.workers > 1:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    uvicorn.run(
        "api.fastapi_app.app:create_app",
        factory=True,
        host=settings.serve.host,
        port=settings.serve.fastapi_port,
        workers=settings.serve.workers,
        # uvicorn's records through xgbops' formatter; the app writes the access log itself.
        log_config=logging_config(settings),
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
