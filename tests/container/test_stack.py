"""The core platform in containers: the compose file's own services, on a real engine.

``docker-compose.yml`` is used as a user runs it, with one override file that points the
services at this machine's PostgreSQL (the ``postgres`` service's image cannot be pulled here)
and puts them on the host's network (the engine has no bridge). The MLflow server, the trainer
and the retraining worker run from the platform image; the Flask and FastAPI APIs from the
serving image, non-root on a read-only root file system. Tests run in file order: the bake
happens before the retraining, so the baked model and the registry's champion differ.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404 - docker compose, fixed arguments
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from xgbops.champion import RegistryClient, model_digest

from tests.processes import free_port
from tests.container.conftest import IMAGE, Images, make
from tests.container.engine import REPO, Engine
from tests.platform.conftest import compose_command

MODEL_NAME = "churn-xgboost"
TOKEN = "container-test-token"  # nosec B105 - a test's own retrain token
#: The services this test starts, in start order.
SERVICES = ("mlflow", "trainer", "api", "api-fastapi", "retrainer")


@dataclass
class Stack:
    """The started services and how to reach them."""

    docker: Engine
    project: str
    files: list[Path]
    env_file: Path
    registry: str
    urls: dict[str, str]
    admin_url: str
    databases: list[str]
    baked: dict[str, Any] = field(default_factory=dict)
    #: Compose turns API keys on: the headers of a key made for the test (``xgbops keys``).
    auth: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        """``docker compose`` on the stack's files; returns stdout."""
        command = [*compose_command(), "-p", self.project, "--env-file", str(self.env_file)]
        for file in self.files:
            command += ["-f", str(file)]
        result = subprocess.run(  # nosec B603 - the compose binary, fixed args
            [*command, *args],
            env=self.docker.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)}: {result.stdout}\n{result.stderr}")
        return str(result.stdout)

    def container(self, service: str) -> str:
        """The id of the service's container."""
        return self.compose("ps", "-a", "-q", service).strip()

    def logs(self, service: str) -> list[str]:
        """The service's log lines (stdout and stderr)."""
        done = self.docker.run("logs", self.container(service))
        return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]

    def wait_healthy(self, service: str, timeout: float = 180) -> None:
        """Wait for Docker's health status ``healthy``; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            state = self.docker.inspect("container", self.container(service))["State"]
            status = state.get("Health", {}).get("Status", state["Status"])
            if status == "healthy":
                return
            if state["Status"] == "exited":
                break
            time.sleep(1)
        tail = "\n".join(self.logs(service)[-30:])
        raise AssertionError(f"{service} is {status}, not healthy:\n{tail}")

    def wait_exited(self, service: str, timeout: float = 300) -> int:
        """Wait for a one-shot service to exit; returns its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.docker.inspect("container", self.container(service))["State"]
            if state["Status"] == "exited":
                return int(state["ExitCode"])
            time.sleep(1)
        raise AssertionError(f"{service} still runs after {timeout} s")

    def champion(self) -> tuple[str, str]:
        """The registry's champion: (version, run id), read from the host."""
        found = RegistryClient(self.registry).champion(MODEL_NAME)
        assert found is not None
        return found.version, found.run_id


def _override(registry_port: int, ports: dict[str, int], admin: str, dbs: dict[str, str]) -> dict:
    """Host network and this machine's PostgreSQL for the services the test starts."""
    user = psycopg.conninfo.conninfo_to_dict(admin).get("user") or "postgres"
    history = f"postgresql://{user}@127.0.0.1:5432/{dbs['history']}"
    endpoints = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{registry_port}",
        "DATABASE_URL": history,
        "XGBOPS_SERVE__REGISTRY_SYNC_INTERVAL": "2",
        # compose's rate limits, counted on this machine's Redis; the retraining test's load
        # runs for a minute at full speed, above compose's 6000 a minute per key
        "XGBOPS_LIMITS__STORAGE_URI": "redis://127.0.0.1:6379/0",
        "XGBOPS_LIMITS__PREDICT": "1000000/minute",
    }
    on_host = {"network_mode": "host", "ports": "!reset", "depends_on": "!reset"}
    probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{registry_port}/health')"
    return {
        "services": {
            "mlflow": {
                **on_host,
                "command": [
                    "mlflow",
                    "server",
                    "--artifacts-destination",
                    "/mlartifacts",
                    "--serve-artifacts",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(registry_port),
                    "--workers",
                    "1",
                ],
                "environment": {
                    "MLFLOW_BACKEND_STORE_URI": (
                        f"postgresql+psycopg://{user}@127.0.0.1:5432/{dbs['mlflow']}"
                    )
                },
                "healthcheck": {"test": ["CMD", "python", "-c", probe], "interval": "2s"},
            },
            # A weak first champion (3 trees), so that retraining promotes a better one.
            "trainer": {
                **on_host,
                "environment": {**endpoints, "XGBOPS_TRAIN__NUM_BOOST_ROUND": "3"},
            },
            "retrainer": {**on_host, "environment": endpoints},
            "api": {
                **on_host,
                "environment": {**endpoints, "XGBOPS_SERVE__PORT": str(ports["api"])},
                "healthcheck": {"interval": "2s", "start_period": "60s"},
            },
            "api-fastapi": {
                **on_host,
                "environment": {
                    **endpoints,
                    "XGBOPS_SERVE__FASTAPI_PORT": str(ports["api-fastapi"]),
                },
                "healthcheck": {"interval": "2s", "start_period": "60s"},
            },
        }
    }


def _write_override(path: Path, content: dict) -> None:
    """YAML with compose's ``!reset`` tag where a value is the string "!reset"."""
    text = yaml.safe_dump(content, sort_keys=False)
    path.write_text(text.replace("'!reset'", "!reset []"), encoding="utf-8")


@pytest.fixture(scope="module")
def stack(
    docker: Engine, images: Images, postgres_admin_url: str, tmp_path_factory
) -> Iterator[Stack]:
    """mlflow → trainer (exits) → api, api-fastapi (healthy) → retrainer, as compose orders them."""
    tmp = tmp_path_factory.mktemp("stack")
    suffix = uuid.uuid4().hex[:8]
    dbs = {"mlflow": f"xgbops_ct_mlflow_{suffix}", "history": f"xgbops_ct_history_{suffix}"}
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        for name in dbs.values():
            connection.execute(f'CREATE DATABASE "{name}"')
    registry_port = free_port()
    ports = {"api": free_port(), "api-fastapi": free_port()}
    env_file = tmp / "compose.env"
    env_file.write_text(
        (REPO / ".env.example").read_text(encoding="utf-8")
        + f"\nXGBOPS_IMAGE={IMAGE}\nAPI_IMAGE_TAG=latest\nXGBOPS_RETRAIN_TOKEN={TOKEN}\n",
        encoding="utf-8",
    )
    override = tmp / "compose.host.yml"
    _write_override(override, _override(registry_port, ports, postgres_admin_url, dbs))
    started = Stack(
        docker,
        f"xgbops-ct-{suffix}",
        [REPO / "docker-compose.yml", override],
        env_file,
        f"http://127.0.0.1:{registry_port}",
        {name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        postgres_admin_url,
        list(dbs.values()),
    )
    up = ("--profile", "core", "up", "-d", "--no-deps", "--no-build", "--pull", "never")
    try:
        started.compose(*up, "mlflow")
        started.wait_healthy("mlflow")
        started.compose(*up, "trainer")
        assert started.wait_exited("trainer") == 0, "\n".join(started.logs("trainer")[-30:])
        started.compose(*up, "api", "api-fastapi")
        started.wait_healthy("api")
        started.wait_healthy("api-fastapi")
        started.compose(*up, "retrainer")
        started.auth = {"X-API-Key": _new_key(started, "admin")}
        yield started
    finally:
        for service in SERVICES:
            if started.compose("ps", "-a", "-q", service, check=False).strip():
                print(f"--- {service}\n" + "\n".join(started.logs(service)[-15:]))
        started.compose("--profile", "core", "down", "-v", "--timeout", "20", check=False)
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            for name in dbs.values():
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _new_key(stack: Stack, scope: str) -> str:
    """A key made by ``xgbops keys create`` in the platform image's retrainer container."""
    container = stack.container("retrainer")
    made = stack.docker.run(
        "exec", container, "xgbops", "keys", "create", "--name", "container-test", "--scope", scope
    )
    return made.stdout.strip().splitlines()[-1]


def test_compose_turns_keys_and_shared_rate_limits_on(stack: Stack):
    for service, url in stack.urls.items():
        refused = httpx.post(f"{url}/predict", json=_record(), timeout=10)
        assert refused.status_code == 401, (service, refused.text)
        admitted = httpx.post(f"{url}/predict", json=_record(), headers=stack.auth, timeout=10)
        assert admitted.status_code == 200, (service, admitted.text)
        assert admitted.headers["ratelimit-limit"] == "1000000", service
    assert httpx.get(f"{stack.urls['api']}/health", timeout=10).status_code == 200  # open


def _record() -> dict[str, Any]:
    return dict(json.loads((REPO / "data" / "example.json").read_text(encoding="utf-8")))


def test_both_apps_turn_healthy_and_serve_exactly_the_registry_champion(stack: Stack, tmp_path):
    version, run_id = stack.champion()
    files = RegistryClient(stack.registry).download(
        RegistryClient(stack.registry).champion(MODEL_NAME), tmp_path  # type: ignore[arg-type]
    )
    for service, url in stack.urls.items():
        state = stack.docker.inspect("container", stack.container(service))["State"]
        assert state["Health"]["Status"] == "healthy"
        model = httpx.get(f"{url}/model", headers=stack.auth, timeout=10).json()
        assert (model["model_version"], model["run_id"]) == (version, run_id), service
        assert model["source"] == "registry"
        assert model["digest"] == model_digest(files)


def test_both_apps_answer_predict_and_log_json_lines_with_the_request_id(stack: Stack):
    for service, url in stack.urls.items():
        request_id = uuid.uuid4().hex
        answer = httpx.post(
            f"{url}/predict",
            json=_record(),
            headers={"X-Request-ID": request_id, **stack.auth},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == stack.champion()[0]
        time.sleep(0.5)
        lines = stack.logs(service)
        events = [json.loads(line) for line in lines]  # every line is JSON, or this raises
        mine = [e for e in events if e.get("request_id") == request_id]
        assert any(e.get("path") == "/predict" and e.get("status") == 200 for e in mine), mine
        assert any(e.get("event") == "champion.serving" for e in events)


def test_the_apps_run_as_a_user_on_a_read_only_root(stack: Stack):
    for service in stack.urls:
        container = stack.container(service)
        host_config = stack.docker.inspect("container", container)["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True
        assert stack.docker.run("exec", container, "id", "-u").stdout.strip() == "10001"
        denied = stack.docker.run("exec", container, "touch", "/app/written", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_the_publish_bake_puts_the_champion_in_the_image(stack: Stack, images: Images):
    """The publish pipeline's explicit bake (before retraining: the baked model is v1)."""
    env = {**stack.docker.env, "MLFLOW_TRACKING_URI": stack.registry}
    baker = Engine(stack.docker.cli, env)
    make(baker, "docker-bake", DOCKER=stack.docker.cli, IMAGE=IMAGE, BAKED_IMAGE=f"{IMAGE}-baked")
    stack.baked.update(zip(("version", "run_id"), stack.champion()))
    env_list = stack.docker.inspect("image", f"{IMAGE}-baked:latest")["Config"]["Env"]
    assert "XGBOPS_BAKED_MODEL=/opt/xgbops/baked" in env_list  # pragma: allowlist secret


def test_retraining_in_the_trainer_swaps_both_apps_without_a_failed_request(stack: Stack):
    before = stack.champion()
    failures: list[str] = []
    answered: dict[str, list[str]] = {service: [] for service in stack.urls}
    stop = threading.Event()

    def load(service: str, url: str) -> None:
        with httpx.Client(base_url=url, headers=stack.auth, timeout=10) as client:
            while not stop.is_set():
                try:
                    reply = client.post("/predict", json=_record())
                    if reply.status_code != 200:
                        failures.append(f"{service}: {reply.status_code} {reply.text[:200]}")
                    else:
                        answered[service].append(str(reply.json()["model_version"]))
                except httpx.HTTPError as exc:
                    failures.append(f"{service}: {exc!r}")
                time.sleep(0.02)

    threads = [threading.Thread(target=load, args=item) for item in stack.urls.items()]
    for thread in threads:
        thread.start()
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        submitted = httpx.post(f"{stack.urls['api']}/retrain", headers=headers, timeout=10)
        assert submitted.status_code == 202, submitted.text
        job_url = f"{stack.urls['api-fastapi']}/retrain/{submitted.json()['job_id']}"
        deadline, job = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            job = httpx.get(job_url, headers=headers, timeout=10).json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert job["status"] == "succeeded", (job, stack.logs("retrainer")[-20:])
        assert job["result"]["promoted"] is True
        after = stack.champion()
        assert after != before
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            httpx.get(f"{url}/model", headers=stack.auth, timeout=10).json()["run_id"] == after[1]
            for url in stack.urls.values()
        ):
            time.sleep(0.5)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    for service, url in stack.urls.items():
        assert (
            httpx.get(f"{url}/model", headers=stack.auth, timeout=10).json()["run_id"] == after[1]
        ), service
        assert answered[service][-1] == after[0]


def _run_baked(stack: Stack, registry: str, **env: str) -> tuple[str, str]:
    port = free_port()
    variables = {"XGBOPS_SERVE__PORT": str(port), "MLFLOW_TRACKING_URI": registry, **env}
    flags = [item for k, v in variables.items() for item in ("-e", f"{k}={v}")]
    container = stack.docker.run(
        "run",
        "-d",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/var/lib/xgbops:uid=10001",
        "--tmpfs",
        "/tmp",
        *flags,
        f"{IMAGE}-baked:latest",
    ).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return container, url
        except httpx.HTTPError:
            time.sleep(0.5)
    logs = stack.docker.run("logs", container, check=False)
    stack.docker.run("rm", "-f", container, check=False)
    raise AssertionError(f"the baked image did not answer:\n{logs.stderr[-3000:]}")


def test_a_baked_model_gives_way_to_the_registry_and_serves_alone_when_it_is_down(stack: Stack):
    assert stack.baked, "the bake test must run first"
    champion_version, champion_run = stack.champion()
    assert champion_run != stack.baked["run_id"]
    up, url = _run_baked(stack, stack.registry)
    try:
        model = httpx.get(f"{url}/model", headers=stack.auth, timeout=10).json()
        assert (model["run_id"], model["source"]) == (champion_run, "registry")
    finally:
        stack.docker.run("rm", "-f", up)
    down, url = _run_baked(stack, f"http://127.0.0.1:{free_port()}")
    try:
        model = httpx.get(f"{url}/model", headers=stack.auth, timeout=10).json()
        assert (model["run_id"], model["source"]) == (stack.baked["run_id"], "baked")
        logs = stack.docker.run("logs", down)
        events = [json.loads(line) for line in logs.stderr.splitlines() if line.strip()]
        said = [e for e in events if e.get("event") == "champion.serving"]
        assert said and said[0]["source"] == "baked" and said[0]["run_id"] == stack.baked["run_id"]
    finally:
        stack.docker.run("rm", "-f", down)


def test_a_registry_without_a_champion_is_not_ready_even_with_a_baked_model(stack: Stack):
    container, url = _run_baked(stack, stack.registry, XGBOPS_TRAIN__MODEL_NAME="never-registered")
    try:
        ready = httpx.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"]["ok"] is False
    finally:
        stack.docker.run("rm", "-f", container)


def test_every_service_stays_within_its_memory_budget(stack: Stack):
    config = yaml.safe_load(stack.compose("--profile", "core", "config"))
    measured = {}
    for service in ("mlflow", "api", "api-fastapi", "retrainer"):
        limit = int(config["services"][service]["mem_limit"])
        stats = stack.docker.inspect("container", stack.container(service))["HostConfig"]
        assert stats["Memory"] == limit
        used = stack.docker.run(
            "stats", "--no-stream", "--format", "{{json .}}", stack.container(service)
        ).stdout
        usage = json.loads(used)["MemUsage"].split("/")[0].strip()
        print(f"{service}: {usage} of {limit / 2**20:.0f} MiB")
        measured[service] = {"used": usage, "limit_mib": limit / 2**20}
        assert _bytes(usage) < limit
    (REPO / "reports").mkdir(exist_ok=True)
    (REPO / "reports" / "container-memory.json").write_text(
        json.dumps(measured, indent=2), encoding="utf-8"
    )


def _bytes(text: str) -> float:
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)
