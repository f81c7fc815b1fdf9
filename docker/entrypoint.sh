#!/bin/sh
# Entry point of both xgbops images (see the Dockerfile).
#
# Before a serving command (the default `gunicorn --config python:api.gunicorn_conf`, or
# `python -m api.fastapi_app`) it puts the champion in the state directory with
# `python -m xgbops.champion sync`: behind an MLflow server, the registry's champion, or only
# when the registry does not answer, the model baked into the image (XGBOPS_BAKED_MODEL, set by
# docker/bake.Dockerfile) — and it says which. A registry that answers without a usable
# champion leaves nothing to serve: the server starts and /ready answers 503 until the workers'
# registry follower finds one. Any other command (`xgbops train`, `mlflow server`, the
# retraining worker, a shell) runs as given. The command is exec'd, so it receives the
# container's signals.
set -eu

is_serving() {
    case "$1" in
        gunicorn) return 0 ;;
        python | python3) [ "${2:-}" = "-m" ] && [ "${3:-}" = "api.fastapi_app" ] ;;
        *) return 1 ;;
    esac
}

if [ "$#" -eq 0 ]; then
    set -- gunicorn --config python:api.gunicorn_conf
fi

if is_serving "$@"; then
    if [ -n "${XGBOPS_BAKED_MODEL:-}" ]; then
        python -m xgbops.champion sync --baked "${XGBOPS_BAKED_MODEL}"
    else
        python -m xgbops.champion sync
    fi
fi

exec "$@"
