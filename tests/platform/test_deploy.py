"""Deploy targets: render.yaml, railway.json and the Hugging Face Space's README.

Each file validates against its schema (tests/platform/schemas/, see the README there), and is
tied to the code: the platforms build the root Dockerfile's last stage, which must be the serving
image (`serve`); the port they route to is the settings' default and the stage's EXPOSE; the
health check path is an endpoint of the API (api/openapi.json, kept equal to the app by
tests/api/test_docs.py); every variable they set is a setting.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from xgbops.config import ServeSettings

from tests.platform.conftest import REPO, require_tool, run_tool
from tests.platform.platform_files import is_setting, read_yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
DOCKERFILE = REPO / "Dockerfile"
RENDER = REPO / "render.yaml"
RAILWAY = REPO / "railway.json"
SPACE = REPO / "deploy" / "huggingface" / "README.md"
DEPLOY_README = REPO / "deploy" / "README.md"
OPENAPI = REPO / "api" / "openapi.json"

SERVE_STAGE = "serve"
#: Variables a platform reads itself rather than the code (Render and Railway route to PORT).
PLATFORM_VARIABLES = {"PORT"}
#: Settings that carry credentials: a deploy file may name them, never hold their value.
SECRETS = {"MLFLOW_TRACKING_URI", "DATABASE_URL", "XGBOPS_RETRAIN_TOKEN"}


# ---------------------------------------------------------------- readers


def dockerfile_stages(text: str) -> list[tuple[str, list[str]]]:
    """The Dockerfile's stages in order: (name, instructions), continuation lines joined.

    An unnamed stage is named by its position (``"0"``, ``"1"``, ...), as ``--target`` can't.
    """
    joined = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, list[str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"(?i)^FROM\s+\S+(?:\s+AS\s+(\S+))?", line)
        if match:
            stages.append((match.group(1) or str(len(stages)), []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def exposed_ports(instructions: list[str]) -> list[int]:
    """The ports of a stage's EXPOSE instructions, in order (``8000/tcp`` is 8000)."""
    ports = []
    for instruction in instructions:
        if re.match(r"(?i)^EXPOSE\s", instruction):
            ports.extend(int(port.split("/")[0]) for port in instruction.split()[1:])
    return ports


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a Markdown file (empty when it has none)."""
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    return dict(yaml.safe_load(match.group(1))) if match else {}


def api_get_paths() -> set[str]:
    """Paths the API answers GET on, from the published OpenAPI document."""
    paths = json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"]
    return {path for path, item in paths.items() if "get" in item}


# ---------------------------------------------------------------- checks


def dockerfile_problems(text: str) -> list[str]:
    """The serving stage is missing, not last, or exposes another port than the settings'."""
    stages = dockerfile_stages(text)
    names = [name for name, _ in stages]
    if SERVE_STAGE not in names:
        return [f"the Dockerfile has no stage named {SERVE_STAGE} (FROM ... AS {SERVE_STAGE})"]
    problems = []
    if names[-1] != SERVE_STAGE:
        problems.append(
            f"{SERVE_STAGE} must be the Dockerfile's last stage (Render, Railway and Hugging "
            f"Face build the last one), not {names[-1]}"
        )
    ports = exposed_ports(dict(stages)[SERVE_STAGE])
    settings = ServeSettings()
    if not ports or ports[0] != settings.port:
        problems.append(f"the {SERVE_STAGE} stage must EXPOSE {settings.port} first, not {ports}")
    if settings.fastapi_port not in ports:
        problems.append(f"the {SERVE_STAGE} stage does not EXPOSE the FastAPI port")
    return problems


def _variable_problems(names: set[str], values: dict[str, Any], where: str) -> list[str]:
    """Variables the code does not read; a port or address other than the serving ones."""
    problems = [
        f"{where} sets {key}, which is not a setting"
        for key in sorted(names)
        if key not in PLATFORM_VARIABLES and not is_setting(key)
    ]
    port = str(ServeSettings().port)
    for key in ("PORT", "XGBOPS_SERVE__PORT"):
        if key in values and str(values[key]) != port:
            problems.append(f"{where} sets {key}={values[key]}; the serving port is {port}")
    if values.get("XGBOPS_SERVE__HOST", "0.0.0.0") != "0.0.0.0":
        problems.append(f"{where} must listen on 0.0.0.0")
    return problems


def _health_problems(path: Any, where: str) -> list[str]:
    if path not in {"/ready", "/health"}:
        return [f"{where} checks {path!r}, neither /ready nor /health"]
    if path not in api_get_paths():
        return [f"{where} checks {path}, which the API does not answer"]
    return []


def _builds_root_dockerfile(dockerfile: Any, context: Any, where: str) -> list[str]:
    if (REPO / str(context) / str(dockerfile)).resolve() != DOCKERFILE.resolve():
        return [f"{where} builds {dockerfile} in {context}, not the root Dockerfile"]
    return []


def render_problems(blueprint: dict[str, Any]) -> list[str]:
    """The Blueprint's web service is not the serving image as the code runs it."""
    webs = [s for s in blueprint.get("services", []) if s.get("type") == "web"]
    if len(webs) != 1:
        return [f"render.yaml must declare one web service, not {len(webs)}"]
    web = webs[0]
    problems = []
    if web.get("runtime") != "docker":
        problems.append("the web service must build with runtime: docker")
    problems += _builds_root_dockerfile(
        web.get("dockerfilePath"), web.get("dockerContext", "."), "render.yaml"
    )
    problems += _health_problems(web.get("healthCheckPath"), "render.yaml")
    variables = {item["key"]: item for item in web.get("envVars", []) if "key" in item}
    values = {key: item["value"] for key, item in variables.items() if "value" in item}
    problems += _variable_problems(set(variables), values, "render.yaml")
    if values.get("PORT") is None or values.get("PORT") != values.get("XGBOPS_SERVE__PORT"):
        problems.append("render.yaml must set PORT (Render routes to it) to XGBOPS_SERVE__PORT")
    for key in SECRETS & variables.keys():
        if "value" in variables[key]:
            problems.append(f"render.yaml holds the value of {key}: use sync: false")
    if variables.get("MLFLOW_TRACKING_URI", {}).get("sync") is not False:
        problems.append("render.yaml must ask for MLFLOW_TRACKING_URI (sync: false)")
    databases = {db["name"] for db in blueprint.get("databases", [])}
    source = variables.get("DATABASE_URL", {}).get("fromDatabase", {})
    if source.get("name") not in databases or source.get("property") != "connectionString":
        problems.append("render.yaml must take DATABASE_URL from its database's connectionString")
    return problems


def railway_problems(config: dict[str, Any]) -> list[str]:
    """railway.json does not build the root Dockerfile or checks the wrong path."""
    build, deploy = config.get("build", {}), config.get("deploy", {})
    problems = []
    if build.get("builder") != "DOCKERFILE":
        problems.append("railway.json must build with the DOCKERFILE builder")
    problems += _builds_root_dockerfile(build.get("dockerfilePath"), ".", "railway.json")
    problems += _health_problems(deploy.get("healthcheckPath"), "railway.json")
    if deploy.get("restartPolicyType") not in {"ON_FAILURE", "ALWAYS"}:
        problems.append("railway.json must restart a crashed deployment")
    return problems


def space_problems(meta: dict[str, Any]) -> list[str]:
    """The Space's front matter does not run the Docker image on the serving port."""
    problems = []
    if meta.get("sdk") != "docker":
        problems.append("the Space must use sdk: docker")
    if meta.get("app_port") != ServeSettings().port:
        problems.append(f"the Space's app_port must be {ServeSettings().port}")
    return problems


def schema_check(document: Any, schema: str, folder: Path) -> tuple[int, str]:
    """check-jsonschema of ``document`` (written as JSON to ``folder``) against ``schema``."""
    tool = require_tool("check-jsonschema")
    path = folder / f"{schema}.instance.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = run_tool(tool, "--schemafile", str(SCHEMAS / schema), str(path))
    return result.returncode, result.stdout + result.stderr


def _documents() -> dict[str, tuple[Any, str]]:
    return {
        "render": (read_yaml(RENDER), "render.blueprint.schema.json"),
        "railway": (json.loads(RAILWAY.read_text(encoding="utf-8")), "railway.schema.json"),
        "huggingface": (
            front_matter(SPACE.read_text(encoding="utf-8")),
            "huggingface-space.schema.json",
        ),
    }


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name", ["render", "railway", "huggingface"])
def test_each_deploy_file_validates_against_its_schema(name, tmp_path):
    document, schema = _documents()[name]
    assert document, f"{name}: nothing to validate"
    status, output = schema_check(document, schema, tmp_path)
    assert status == 0, output


@pytest.mark.parametrize(
    ("name", "mutate", "field"),
    [
        ("render", lambda d: d["services"][0].update(healthcheckPath="/ready"), "healthcheckPath"),
        ("render", lambda d: d["services"][0]["envVars"].append({"key": "X"}), "envVars"),
        ("railway", lambda d: d["deploy"].update(restartPolicyType="on_failure"), "on_failure"),
        ("railway", lambda d: d["build"].update(target="serve"), "target"),
        ("huggingface", lambda d: d.update(app_port="8000"), "8000"),
    ],
    ids=["render key", "render env", "railway enum", "railway target", "space port type"],
)
def test_a_field_the_platform_does_not_know_is_refused(name, mutate, field, tmp_path):
    document, schema = copy.deepcopy(_documents()[name])
    mutate(document)
    status, output = schema_check(document, schema, tmp_path)
    assert status != 0 and field in output, output


def test_the_serving_image_is_the_dockerfiles_last_stage_on_the_settings_port():
    # Fails until the Dockerfile has its `serve` stage last (the stage the platforms build).
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_a_dockerfile_without_serve_last_is_caught():
    settings = ServeSettings()
    good = f"FROM python AS base\nRUN true\nFROM base AS serve\nEXPOSE {settings.port} \\\n 8001\n"
    assert dockerfile_problems(good) == []
    assert (
        "must be the Dockerfile's last stage"
        in dockerfile_problems(good + "FROM base AS platform\n")[0]
    )
    assert "EXPOSE" in dockerfile_problems(good.replace(str(settings.port), "9000"))[0]
    assert "no stage named serve" in dockerfile_problems("FROM python\nEXPOSE 8000\n")[0]


def test_render_runs_the_serving_image_as_the_code_does():
    assert render_problems(read_yaml(RENDER)) == []


def test_railway_builds_the_serving_image_and_checks_readiness():
    assert railway_problems(json.loads(RAILWAY.read_text(encoding="utf-8"))) == []


def test_the_space_runs_the_docker_image_on_the_serving_port():
    assert space_problems(front_matter(SPACE.read_text(encoding="utf-8"))) == []


def test_the_health_paths_are_endpoints_of_the_api():
    assert {"/health", "/ready"} <= api_get_paths()


def test_the_projects_readme_has_no_front_matter_and_the_space_readme_says_how_to_push():
    assert front_matter((REPO / "README.md").read_text(encoding="utf-8")) == {}
    space = SPACE.read_text(encoding="utf-8")
    assert "git push" in space and "MLFLOW_TRACKING_URI" in space


def test_the_deploy_guide_gives_railway_the_serving_port():
    # railway.json cannot set variables: the guide names the one Railway needs.
    assert f"PORT={ServeSettings().port}" in DEPLOY_README.read_text(encoding="utf-8")


def _web(blueprint: dict[str, Any]) -> dict[str, Any]:
    web: dict[str, Any] = blueprint["services"][0]
    return web


def _env(blueprint: dict[str, Any], key: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in _web(blueprint)["envVars"] if e.get("key") == key)
    return found


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: _web(b).update(dockerfilePath="./docker/Dockerfile"), "not the root"),
        (lambda b: _web(b).update(healthCheckPath="/healthz"), "neither /ready"),
        (lambda b: _env(b, "PORT").update(value="10000"), "PORT=10000"),
        (lambda b: _env(b, "XGBOPS_SERVE__PORT").update(value="8001"), "serving port"),
        (lambda b: _web(b)["envVars"].append({"key": "XGBOPS_PROT", "value": "1"}), "not a"),
        (lambda b: _env(b, "MLFLOW_TRACKING_URI").update(sync=None, value="x"), "value of"),
        (lambda b: _env(b, "DATABASE_URL")["fromDatabase"].update(name="db"), "DATABASE_URL"),
        (lambda b: _web(b).update(runtime="python"), "runtime: docker"),
    ],
    ids=["dockerfile", "health", "port", "serve port", "typo", "secret", "database", "runtime"],
)
def test_a_render_blueprint_at_odds_with_the_code_is_caught(mutate, problem):
    blueprint = copy.deepcopy(read_yaml(RENDER))
    mutate(blueprint)
    problems = render_problems(blueprint)
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda c: c["build"].update(builder="RAILPACK"), "DOCKERFILE builder"),
        (lambda c: c["build"].update(dockerfilePath="api/Dockerfile"), "not the root"),
        (lambda c: c["deploy"].update(healthcheckPath="/metrics"), "neither /ready"),
        (lambda c: c["deploy"].update(restartPolicyType="NEVER"), "restart"),
    ],
    ids=["builder", "dockerfile", "health", "restart"],
)
def test_a_railway_config_at_odds_with_the_code_is_caught(mutate, problem):
    config = copy.deepcopy(json.loads(RAILWAY.read_text(encoding="utf-8")))
    mutate(config)
    problems = railway_problems(config)
    assert any(problem in found for found in problems), problems


def test_a_space_on_another_port_or_sdk_is_caught():
    meta = front_matter(SPACE.read_text(encoding="utf-8"))
    port = ServeSettings().port
    assert space_problems({**meta, "app_port": 7860}) == [f"the Space's app_port must be {port}"]
    assert space_problems({**meta, "sdk": "gradio"}) == ["the Space must use sdk: docker"]
