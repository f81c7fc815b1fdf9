#!/bin/sh
# Entry point of the xgbops API image (see the Dockerfile).
#
# Before a serving command (the default `gunicorn --config api/gunicorn.conf.py`, or
# `python -m api.fastapi_app`) it refreshes the champion from the MLflow registry when
# MLFLOW_TRACKING_URI answers, so the container serves the registry's current champion;
# otherwise it serves the copy baked into the image. Any other command (`xgbops train
# --skip-if-champion`, `mlflow server ...`, a shell) runs as given. The command is exec'd, so it
# receives the container's signals.
#
# XGBOPS_REFRESH_TIMEOUT (seconds, default 60) bounds the export, so a registry that accepts
# connections but hangs cannot keep the API from starting.
set -eu

log() {
    printf 'entrypoint: %s\n' "$*" >&2
}

# True when the tracking server's /health answers 200 within 5 s. Non-HTTP URIs (a database
# or a file store) are tried directly by the export.
registry_answers() {
    case "${MLFLOW_TRACKING_URI}" in
        http://* | https://*)
            python - <<'PY'
import os
import sys
import urllib.request

url = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/health"
try:
    with urllib.request.urlopen(url, timeout=5) as response:  # nosec B310 - http(s) only
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
PY
            ;;
        *) return 0 ;;
    esac
}

refresh_champion() {
    if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
        log "MLFLOW_TRACKING_URI is not set: serving the champion baked into the image"
    elif ! registry_answers; then
        log "the MLflow registry (MLFLOW_TRACKING_URI) does not answer: serving the baked champion"
    elif timeout "${XGBOPS_REFRESH_TIMEOUT:-60}" xgbops export-champion; then
        log "champion refreshed from the MLflow registry"
    else
        log "could not export the registry's champion: serving the baked champion"
    fi
    if [ -z "$(find "${XGBOPS_STATE_DIR:-.xgbops}/serving" -name current.json 2>/dev/null | head -n 1)" ]; then
        log "no champion to serve yet: /ready answers 503 until one is exported"
    fi
}

if [ "$#" -eq 0 ]; then
    set -- gunicorn --config api/gunicorn.conf.py
fi

case "$1" in
    gunicorn) refresh_champion ;;
    python | python3)
        if [ "${2:-}" = "-m" ] && [ "${3:-}" = "api.fastapi_app" ]; then
            refresh_champion
        fi
        ;;
    *) ;;
esac

exec "$@"
