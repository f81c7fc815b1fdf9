# xgbops: every step of the chain is a target here. Jenkins, GitHub Actions, docker-compose
# and people call these targets, never the raw commands. `make` alone lists them.

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
REPORTS := reports
# One lock file per extra of pyproject.toml; the platform's holds them all, and the others are
# compiled against it, so every image and venv agrees on every version.
PLATFORM_LOCK := requirements/platform.txt
EXTRA_LOCKS := serve train monitoring
DEV_LOCK := requirements/dev.txt
# benchmarks/ and tools/ (run by make targets and tests) are linted and typed like src/ and api/.
SRC := src/xgbops api benchmarks tools docs/hooks
CHECKED := src api tests benchmarks tools docs/hooks
# The embedded default: MLflow on a SQLite file under .xgbops/ (what xgbops.config derives).
MLFLOW_UI_URI ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/.xgbops/mlflow.db)
MLFLOW_UI_PORT ?= 5000
# Extra options for the training steps, e.g. `make train TRAIN_ARGS=--no-promote`.
TRAIN_ARGS ?=
# Training engine, e.g. `make train ENGINE=dask-local` (local, dask or dask-local; see
# docs/guide/scale.md). Empty: XGBOPS_ENGINE, else local.
ENGINE ?=
PROMOTE_ARGS ?=
# Options of `xgbops tune`, e.g. `make tune TUNE_ARGS="--trials 50 --workers 2 --timeout 20m"`.
TUNE_ARGS ?=
# Runs or versions `make compare` compares, e.g. `make compare COMPARE_ARGS="3 champion"`.
COMPARE_ARGS ?= champion
EXAMPLE ?= data/example.json
BENCH_ARGS ?=
FUZZ_EXAMPLES ?= 500
API_HOST ?= $(or $(XGBOPS_SERVE__HOST),127.0.0.1)
API_PORT ?= $(or $(XGBOPS_SERVE__PORT),8000)
# Images: `make docker-build docker-push IMAGE=you/xgbops` gives you/xgbops-serve and
# you/xgbops-platform. DOCKER may name another client (e.g. one with BuildKit built in).
IMAGE ?= $(or $(XGBOPS_IMAGE),xgbops/xgbops)
SERVE_IMAGE := $(IMAGE)-serve
PLATFORM_IMAGE := $(IMAGE)-platform
# What `make docker-bake` tags: the serving image itself, unless told otherwise.
BAKED_IMAGE ?= $(SERVE_IMAGE)
DOCKER ?= docker
# Extra `docker build` options, e.g. BUILD_ARGS='--secret id=pip_ca,src=/etc/ssl/certs/ca.pem'.
BUILD_ARGS ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
SMOKE_PORT ?= 18000
# Where the smoke test reaches the container: the host's loopback by default; Jenkins in compose
# sets SMOKE_NETWORK (the compose network), where the container answers by its name.
SMOKE_NETWORK ?=
SMOKE_URL ?= $(if $(SMOKE_NETWORK),http://xgbops-smoke:8000,http://127.0.0.1:$(SMOKE_PORT))
# docker compose profiles for `make up`: core, ci, monitoring (comma-separated).
PROFILES ?= core
COMPOSE := docker compose
# What `make notify` reports: set by the pipelines (Jenkins fills these in its post block).
NOTIFY_ARGS ?=
DRIFT_WINDOW ?= 24h
REPORT_WINDOW ?= 30d

.PHONY: help install install-runtime lock format format-check lint typecheck security test \
	quality data-check train evaluate promote tune compare pipeline run serve serve-fastapi openapi postman \
	rollout-start rollout-ramp rollout-status rollout-promote rollout-rollback \
	bench bench-test fuzz mlflow-ui watch \
	docker-build docker-bake docker-smoke docker-push container-deps container-test up down platform-check sonar sonar-gate notify \
	monitor-setup monitor-sync monitor-system monitor-follow drift monitor-report kibana-import observability-check \
	system-deps clean distclean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "xgbops needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(VENV)/.runtime: $(BIN)/python $(PLATFORM_LOCK) pyproject.toml
	$(BIN)/pip install --quiet -r $(PLATFORM_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime $(DEV_LOCK)
	$(BIN)/pip install --quiet -r $(DEV_LOCK)
	@touch $@

# npm-groovy-lint (Jenkinsfiles) pinned in package-lock.json; skipped where npm is missing.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Jenkinsfile lint in tests/platform will be skipped"; fi

install-runtime: $(VENV)/.runtime ## Create .venv with the pinned platform dependencies (every extra but dev)

install: $(VENV)/.dev node_modules/.installed ## Create .venv with runtime + development dependencies (pinned)

UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --no-header --quiet

lock: $(VENV)/.dev ## Re-pin requirements/*.txt (one per extra) from pyproject.toml (needs network)
	$(UV_COMPILE) --extra platform -o $(PLATFORM_LOCK)
	for extra in $(EXTRA_LOCKS); do \
		$(UV_COMPILE) --extra $$extra -c $(PLATFORM_LOCK) -o requirements/$$extra.txt; done
	$(UV_COMPILE) --extra platform --extra dev -c $(PLATFORM_LOCK) -o $(DEV_LOCK)

$(REPORTS):
	@mkdir -p $@

format: install ## Reformat the code with black
	$(BIN)/black $(CHECKED)

format-check: install ## Fail if black would reformat anything
	$(BIN)/black --check --diff $(CHECKED)

lint: install | $(REPORTS) ## pylint (>= 9.5) and flake8; reports for SonarQube in reports/
	$(BIN)/pylint $(SRC) --output-format=colorized,parseable:$(REPORTS)/pylint.txt
	$(BIN)/flake8 $(CHECKED) --tee --output-file=$(REPORTS)/flake8.txt

typecheck: install ## mypy, strict on src and api
	$(BIN)/mypy

security: install | $(REPORTS) ## bandit (medium+ fails) and a secrets scan of tracked files
	$(BIN)/bandit -q -c pyproject.toml -r $(SRC) -f json -o $(REPORTS)/bandit.json --exit-zero
	$(BIN)/bandit -q -c pyproject.toml -r $(SRC) --severity-level medium
	git ls-files -z | xargs -0 $(BIN)/detect-secrets-hook --baseline .secrets.baseline

test: install | $(REPORTS) ## pytest + branch coverage; JUnit and coverage XML in reports/
	$(BIN)/pytest

quality: format-check lint typecheck security test ## Every code check, as the quality pipeline runs them

data-check: install-runtime ## Check the dataset against config/dataset.yaml; report in reports/
	$(BIN)/xgbops data-check

train: install-runtime ## Train, track in MLflow, register, promote if better (TRAIN_ARGS=...)
	$(if $(ENGINE),XGBOPS_ENGINE=$(ENGINE)) $(BIN)/xgbops train $(TRAIN_ARGS)

evaluate: install-runtime ## Score the latest version on the holdout; plots in reports/evaluation
	$(BIN)/xgbops evaluate

promote: install-runtime ## Make the latest version champion if it beats the champion (PROMOTE_ARGS=...)
	$(BIN)/xgbops promote $(PROMOTE_ARGS)

tune: install-runtime ## Optuna study over train.yaml's tune.space; best params to config/tuned.yaml (TUNE_ARGS=..., ENGINE=dask-local|dask)
	$(if $(ENGINE),XGBOPS_ENGINE=$(ENGINE)) $(BIN)/xgbops tune $(TUNE_ARGS)

compare: install-runtime ## Table and plot of MLflow runs or registered versions (COMPARE_ARGS="3 champion")
	$(BIN)/xgbops compare $(COMPARE_ARGS)

# Rollout (docs/guide/rollout.md): a challenger on live traffic beside the champion; the API's
# workers apply each change within a second. pipelines/rollout.Jenkinsfile calls these.
MODE ?= canary
SHARE ?= 10
rollout-start: install-runtime ## Put version CHALLENGER on live traffic (MODE=shadow|canary|ab SHARE=10)
	@test -n "$(CHALLENGER)" || { echo "CHALLENGER=<registered version> is required" >&2; exit 2; }
	$(BIN)/xgbops rollout start $(CHALLENGER) --mode $(MODE) --share $(SHARE)

rollout-ramp: install-runtime ## Move a canary to its next traffic step (rollout.steps)
	$(BIN)/xgbops rollout ramp

rollout-status: install-runtime ## Live comparison of the arms and its verdict: reports/rollout.json, .md
	$(BIN)/xgbops rollout status --json-file reports/rollout.json --markdown-file reports/rollout.md --ship

rollout-promote: install-runtime ## The challenger becomes champion (the old one stays previous_champion)
	$(BIN)/xgbops rollout promote

rollout-rollback: install-runtime ## Stop the rollout, or give champion back to previous_champion
	$(BIN)/xgbops rollout rollback

pipeline: quality data-check train ## The local chain: quality -> data-check -> train

# DVC (dvc.yaml): the same stages, each rerun only when its inputs changed. DVC_REMOTE names a
# remote of .dvc/config: empty for the default (a folder under .xgbops/), `s3` for MinIO or S3
# (credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3).
.PHONY: repro data-pull data-push
DVC_REMOTE ?=
DVC := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc

repro: install-runtime ## Rerun the DVC stages whose inputs changed: data-check -> train -> evaluate
	$(DVC) repro

data-pull: install-runtime ## Pull the dataset (when DVC tracks it) from DVC_REMOTE for the data check
	$(DVC) pull --allow-missing --with-deps data-check $(if $(DVC_REMOTE),--remote $(DVC_REMOTE))

data-push: install-runtime ## Push DVC-tracked data and the stages' outputs to DVC_REMOTE
	$(DVC) push $(if $(DVC_REMOTE),--remote $(DVC_REMOTE))

run: install-runtime ## Quickstart: install, train if there is no champion, serve it on :8000
	$(BIN)/xgbops train --skip-if-champion
	@echo "Prediction of the champion for $(EXAMPLE), from the command line:"
	@$(BIN)/xgbops predict $(EXAMPLE)
	@echo
	@echo "Serving the champion on http://$(API_HOST):$(API_PORT) (Ctrl-C stops). Try, in another terminal:"
	@echo "  curl -s -X POST http://$(API_HOST):$(API_PORT)/predict -H 'Content-Type: application/json' -d @$(EXAMPLE)"
	@echo "  open http://$(API_HOST):$(API_PORT)/docs for Swagger UI; 'make mlflow-ui' for runs and the registry."
	@$(MAKE) --no-print-directory serve

serve: install-runtime ## Serve the champion with Flask + gunicorn on :8000 (XGBOPS_SERVE__*)
	$(BIN)/xgbops export-champion
	$(BIN)/gunicorn --config python:api.gunicorn_conf

serve-fastapi: install-runtime ## Serve the champion with the FastAPI twin + uvicorn on :8001
	$(BIN)/xgbops export-champion
	$(BIN)/python -m api.fastapi_app

openapi: install-runtime ## Write the Flask app's OpenAPI document to api/openapi.json
	$(BIN)/python -m api.openapi_export api/openapi.json

postman: openapi ## Regenerate api/postman_collection.json from the OpenAPI document (needs npx)
	npx --yes openapi-to-postmanv2@6.3.3 -s api/openapi.json -o api/postman_collection.json -p -O folderStrategy=Tags

# The manual: docs/ + mkdocs.yml. Its reference pages are generated at build time (docs/hooks/)
# from the settings model, the app's OpenAPI document and this Makefile.
.PHONY: docs docs-build
DOCS_ADDR ?= 127.0.0.1:8002

docs: install ## Serve the manual (MkDocs) on DOCS_ADDR (127.0.0.1:8002), rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr $(DOCS_ADDR)

docs-build: install ## Build the manual into site/ (mkdocs build --strict: a warning fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install ## Flask and FastAPI vs their hello-worlds and `mlflow models serve` (needs wrk); reports/bench.json
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk"; exit 2; }
	$(BIN)/python -m benchmarks.serving $(BENCH_ARGS)

bench-test: install ## The serving benchmark end to end in its quick mode, checked (about 2 minutes; .ci/run runs it)
	$(BIN)/pytest tests/test_benchmarks.py -m bench --no-cov -p no:cacheprovider -q

fuzz: install ## schemathesis + hypothesis against both apps, >= 10,000 requests
	XGBOPS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/api/test_fuzz.py -p no:cacheprovider --no-cov -q

mlflow-ui: install-runtime ## MLflow UI on the embedded store at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_UI_URI)" --host 127.0.0.1 --port $(MLFLOW_UI_PORT)

watch: install ## Re-run the relevant part of the chain whenever a project file changes
	$(BIN)/xgbops watch

docker-build: ## Build the serving and the platform images (no model inside), tagged VERSION and GIT_SHA
	DOCKER_BUILDKIT=1 $(DOCKER) build --target platform $(BUILD_ARGS) \
		--build-arg VERSION=$(VERSION) --build-arg GIT_SHA=$(GIT_SHA) \
		-t $(PLATFORM_IMAGE):$(VERSION) -t $(PLATFORM_IMAGE):$(GIT_SHA) -t $(PLATFORM_IMAGE):latest .
	DOCKER_BUILDKIT=1 $(DOCKER) build --target serve $(BUILD_ARGS) \
		--build-arg VERSION=$(VERSION) --build-arg GIT_SHA=$(GIT_SHA) \
		-t $(SERVE_IMAGE):$(VERSION) -t $(SERVE_IMAGE):$(GIT_SHA) -t $(SERVE_IMAGE):latest .

docker-bake: install-runtime ## Bake the registry's champion into the serving image (the publish pipeline's step)
	rm -rf $(REPORTS)/bake && mkdir -p $(REPORTS)/bake
	$(BIN)/xgbops export-champion --output $(REPORTS)/bake
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/bake.Dockerfile \
		--build-arg SERVE_IMAGE=$(SERVE_IMAGE):$(GIT_SHA) \
		-t $(BAKED_IMAGE):$(VERSION) -t $(BAKED_IMAGE):$(GIT_SHA) -t $(BAKED_IMAGE):latest $(REPORTS)/bake

docker-smoke: ## Run the serving image and check /health and /predict answer as documented
	$(DOCKER) rm -f xgbops-smoke >/dev/null 2>&1 || true
	$(DOCKER) run -d --name xgbops-smoke \
		$(if $(SMOKE_NETWORK),--network $(SMOKE_NETWORK),-p 127.0.0.1:$(SMOKE_PORT):8000) \
		$(SERVE_IMAGE):$(GIT_SHA)
	$(BIN)/python -m api.smoke $(SMOKE_URL) --example $(EXAMPLE) --timeout 120 \
		|| { $(DOCKER) logs xgbops-smoke; $(DOCKER) rm -f xgbops-smoke; exit 1; }
	$(DOCKER) rm -f xgbops-smoke

docker-push: ## Push both images' VERSION, GIT_SHA and latest tags (after `docker login`)
	for image in $(SERVE_IMAGE) $(PLATFORM_IMAGE); do \
		for tag in $(VERSION) $(GIT_SHA) latest; do $(DOCKER) push $$image:$$tag; done; done

container-deps: ## Debian packages of container-test: docker.io (the engine) and debootstrap (a stand-in base image)
	@if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends docker.io debootstrap; fi

container-test: install container-deps | $(REPORTS) ## Build both images, run the core platform in containers on a real Docker engine
	$(BIN)/pytest tests/container -n 0 -p no:cacheprovider --no-cov -v --timeout 2400 --durations 0 \
		--junitxml=$(REPORTS)/junit-container.xml

up: ## Bring up the platform with docker compose (PROFILES=core,ci,monitoring,data)
	@test -f .env || { cp .env.example .env; echo "Created .env from .env.example: change the passwords in it."; }
	GIT_SHA=$(GIT_SHA) COMPOSE_PROFILES=$(PROFILES) $(COMPOSE) up -d --build --wait

down: ## Stop the platform (volumes are kept; `docker compose down -v` drops them)
	COMPOSE_PROFILES=core,ci,monitoring,data,observability,dask $(COMPOSE) down

platform-check: install ## Lint what cannot run here (Jenkinsfiles, Dockerfiles, compose, k8s, YAML) + consistency tests
	$(BIN)/pytest tests/platform -p no:cacheprovider --no-cov -q

sonar: install ## SonarQube analysis of the reports in reports/ (SONAR_HOST_URL, SONAR_TOKEN)
	npx --yes @sonar/scan@5.0.1 -Dsonar.host.url=$${SONAR_HOST_URL:-http://127.0.0.1:9000}

sonar-gate: install-runtime ## Create/update the SonarQube quality gate, assign it, add the Jenkins webhook
	$(BIN)/xgbops sonar-gate

notify: install-runtime ## Email + desktop notification of a pipeline result (NOTIFY_ARGS=...)
	$(BIN)/xgbops notify $(NOTIFY_ARGS)

monitor-setup: install-runtime ## Install the Elasticsearch index templates and ILM policy (idempotent)
	$(BIN)/xgbops monitor setup

monitor-sync: install-runtime ## Ship every MLflow run, the prediction history and its feedback, and a running rollout's comparison, to the monitoring sink
	$(BIN)/xgbops monitor sync-mlflow
	$(BIN)/xgbops monitor predictions
	$(BIN)/xgbops rollout status --ship > /dev/null

monitor-system: install-runtime ## One CPU/RAM/disk sample of the machine to the monitoring sink
	$(BIN)/xgbops monitor system --count 1

drift: install-runtime ## Drift of recent predictions against the training data (DRIFT_WINDOW=24h)
	$(BIN)/xgbops monitor drift --window $(DRIFT_WINDOW)

monitor-follow: install-runtime ## Ship predictions, samples, MLflow runs and drift on their schedules until Ctrl-C
	$(BIN)/xgbops monitor follow

monitor-report: install-runtime | $(REPORTS) ## Sample the machine, check drift, write reports/monitoring.html (REPORT_WINDOW=30d)
	$(BIN)/xgbops monitor system --count 1
	$(BIN)/xgbops monitor drift --window $(DRIFT_WINDOW)
	$(BIN)/xgbops monitor report --output $(REPORTS)/monitoring.html --window $(REPORT_WINDOW)

kibana-import: install-runtime ## Import the Kibana data views and dashboards (waits for Kibana)
	$(BIN)/xgbops monitor kibana-import

ALERTMANAGER_CONFIG := monitoring/alertmanager/alertmanager.yml
observability-check: install ## promtool/amtool: Prometheus config, rules and alert unit tests, Alertmanager routes; Grafana dashboards
	@command -v promtool >/dev/null && command -v amtool >/dev/null || \
		{ echo "promtool/amtool missing: make system-deps (Debian's prometheus, prometheus-alertmanager)" >&2; exit 1; }
	promtool check config monitoring/prometheus/prometheus.yml
	promtool check rules monitoring/prometheus/rules/*.yml
	promtool test rules monitoring/prometheus/tests/*.yml
	amtool check-config $(ALERTMANAGER_CONFIG)
	amtool config routes test --config.file=$(ALERTMANAGER_CONFIG) --verify.receivers=oncall-mail severity=page
	amtool config routes test --config.file=$(ALERTMANAGER_CONFIG) --verify.receivers=team-mail severity=ticket
	$(BIN)/python -m tools.grafana_dashboards --check

system-deps: ## Debian/Ubuntu packages some checks use: chromium (report test), wrk (make bench), prometheus + prometheus-alertmanager (observability)
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium wrk prometheus prometheus-alertmanager

clean: ## Remove reports, the embedded MLflow store and caches (keeps .venv)
	rm -rf $(REPORTS) .xgbops .pytest_cache .mypy_cache .coverage .coverage.* htmlcov build
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv
	rm -rf $(VENV)
