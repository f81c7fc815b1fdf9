# The xgbops API image: the Flask app under gunicorn (default command), the FastAPI twin
# (`python -m api.fastapi_app`), and every `xgbops` command (training, export, monitoring), so
# compose runs the MLflow server, the trainer and the setup jobs from this same image.
#
# The model: `make docker-build` exports the registry's champion to .xgbops/serving/ first and
# it is baked in here, so a published image answers /predict with no registry at all (the
# publish pipeline smoke-tests exactly that). At start, docker/entrypoint.sh replaces it with the
# registry's current champion when MLFLOW_TRACKING_URI answers. A plain `docker compose build`
# has nothing to bake: the compose trainer registers a champion before the API starts.

ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Runtime dependencies only (no dev tools), exactly the pinned versions; a layer of their own so
# a code change does not reinstall them. Byte code is compiled here, once: the final image
# never writes any (PYTHONDONTWRITEBYTECODE, read-only code) but starts faster with it.
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements/runtime.txt

# The package itself, installed as `make install` does (editable): the `xgbops` command and the
# `api` and `xgbops` modules resolve to /app/src and /app/api, one copy of the code.
COPY pyproject.toml README.md ./
COPY src/ src/
COPY api/ api/
RUN /opt/venv/bin/pip install --no-deps -e . \
    && /opt/venv/bin/python -m compileall -q src api


FROM ${PYTHON_IMAGE}

ARG VERSION=dev
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="xgbops-api" \
      org.opencontainers.image.description="Serves the champion XGBoost model of the xgbops registry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="MIT"

# XGBOPS_SERVE__HOST: listen on every interface of the container (the settings default,
# 127.0.0.1, would be unreachable through a published port).
# OMP_NUM_THREADS: one XGBoost thread per worker; more threads than cores collapses throughput.
# GIT_PYTHON_REFRESH: the image has no git; training records no commit instead of failing.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    GIT_PYTHON_REFRESH=quiet \
    XGBOPS_SERVE__HOST=0.0.0.0 \
    XGBOPS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 xgbops \
    && useradd --system --uid 10001 --gid xgbops --create-home --home-dir /home/xgbops \
       --shell /usr/sbin/nologin xgbops

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/src src/
COPY --from=builder /app/api api/
COPY config/ config/
COPY data/ data/
COPY --chmod=0755 docker/entrypoint.sh docker/entrypoint.sh

# Code is root's and read-only; the state directory (exported champion, SQLite history,
# Prometheus samples, spool), the reports and the MLflow artifact store are the user's.
# The champion is copied only when the build context has one (see the top of this file).
# /run/xgbops-secrets is where compose mounts the volume shared with Jenkins: owned by uid 1000
# (Jenkins' user, which sonar-setup runs as), a new volume takes that owner from the image.
RUN --mount=type=bind,target=/context \
    mkdir -p .xgbops/serving reports /mlartifacts /run/xgbops-secrets \
    && if [ -d /context/.xgbops/serving ]; then cp -R /context/.xgbops/serving/. .xgbops/serving/; fi \
    && chown -R xgbops:xgbops .xgbops reports /mlartifacts \
    && chown 1000:1000 /run/xgbops-secrets \
    && chmod 0750 /run/xgbops-secrets

# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001

EXPOSE 8000 8001

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('XGBOPS_SERVE__PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["gunicorn", "--config", "api/gunicorn.conf.py"]
