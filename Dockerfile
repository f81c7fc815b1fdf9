# Two images from one Dockerfile (`make docker-build` builds both):
#
#   platform  every `xgbops` command (training, registry export, monitoring and setup jobs, the
#             retraining worker) and `mlflow server`: compose runs those services from it.
#   serve     the lean serving image (the last stage, so a plain `docker build .` gives it, as
#             Render and Railway do): the Flask app under gunicorn (default command) and the
#             FastAPI twin (`python -m api.fastapi_app`), with only what they import.
#
# No model is baked here: a serving container fetches the registry's champion at start
# (docker/entrypoint.sh). Only the publish pipeline bakes one, explicitly, on top of the serve
# image (`make docker-bake`, docker/bake.Dockerfile).
#
# The base image is a build argument, so a registry mirror (or the stand-in `make
# container-test` builds where nothing can be pulled) can stand in for it. pip reaches the
# index through the builder's own configuration when one is given as BuildKit secrets
# (`pip_conf`: a pip.conf; `pip_ca`: a CA bundle); secrets never stay in a layer.

ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# ---------------------------------------------------------------- dependencies
FROM ${PYTHON_IMAGE} AS venv

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
COPY docker/pip-install.sh /usr/local/bin/pip-install
RUN python -m venv /opt/venv


FROM venv AS serve-venv
# Exactly the pinned serving dependencies, a layer of their own (a code change does not
# reinstall them), then the package itself; no byte code yet: docker/slim_venv.py imports what
# the servers import, removes what nothing imported (most of scipy, the libraries' test suites,
# pip), strips the shared libraries (binutils, in this build stage only) and compiles exactly
# the modules that were loaded.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/serve.txt requirements/serve.txt
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca \
    pip-install --no-compile -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY src/ src/
COPY api/ api/
COPY config/ config/
COPY docker/slim_venv.py ./
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca \
    pip-install --no-compile --no-deps . \
    && XGBOPS_PROJECT_DIR=/build /opt/venv/bin/python slim_venv.py \
    && rm -f /opt/venv/bin/pip /opt/venv/bin/pip3*


FROM venv AS platform-venv
COPY requirements/platform.txt requirements/platform.txt
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca \
    pip-install -r requirements/platform.txt
COPY pyproject.toml README.md ./
COPY src/ src/
COPY api/ api/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca \
    pip-install --no-deps .


# ---------------------------------------------------------------- common to both images
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=dev
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.source="https://github.com/xgbops/xgbops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="MIT"

# XGBOPS_SERVE__HOST: listen on every interface of the container (the settings default,
# 127.0.0.1, would be unreachable through a published port).
# OMP_NUM_THREADS: one XGBoost thread per worker; more threads than cores collapses throughput.
# XGBOPS_STATE_DIR: the one writable place of the code (exported champion, SQLite history,
# Prometheus samples, spool); a read-only container mounts a tmpfs or a volume there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    XGBOPS_PROJECT_DIR=/app \
    XGBOPS_STATE_DIR=/var/lib/xgbops \
    XGBOPS_REPORTS_DIR=/var/lib/xgbops/reports \
    XGBOPS_SERVE__HOST=0.0.0.0 \
    XGBOPS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 xgbops \
    && useradd --system --uid 10001 --gid xgbops --no-create-home --home-dir /var/lib/xgbops \
       --shell /usr/sbin/nologin xgbops \
    && mkdir -p /var/lib/xgbops \
    && chown xgbops:xgbops /var/lib/xgbops

WORKDIR /app
COPY config/ config/
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/xgbops-entrypoint
ENTRYPOINT ["/usr/local/bin/xgbops-entrypoint"]


# ---------------------------------------------------------------- platform
FROM runtime AS platform

LABEL org.opencontainers.image.title="xgbops-platform" \
      org.opencontainers.image.description="xgbops training, registry, monitoring jobs and the MLflow server"

# GIT_PYTHON_REFRESH: the image has no git; training records no commit instead of failing.
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION: MLflow 3's job executor (about 1.9 GB and 8 processes
# with a database backend) runs jobs the platform never submits.
ENV GIT_PYTHON_REFRESH=quiet \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

COPY --from=platform-venv /opt/venv /opt/venv
COPY data/ data/
COPY monitoring/ monitoring/
# The MLflow server's artifact store (a volume in compose) is the user's.
RUN mkdir -p /mlartifacts && chown xgbops:xgbops /mlartifacts

USER 10001:10001
HEALTHCHECK NONE
CMD ["xgbops", "--help"]


# ---------------------------------------------------------------- serve (the default target)
FROM runtime AS serve

LABEL org.opencontainers.image.title="xgbops-serve" \
      org.opencontainers.image.description="Serves the champion XGBoost model of the xgbops registry (Flask or FastAPI)"

COPY --from=serve-venv /opt/venv /opt/venv
COPY data/example.json data/example.json

# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001
EXPOSE 8000 8001

# The container's own server, whichever it runs: /ready on the Flask port, else the FastAPI one.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "api.healthcheck"]

CMD ["gunicorn", "--config", "python:api.gunicorn_conf"]
