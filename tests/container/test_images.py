"""The two images, as `make docker-build` builds them on a real engine."""

from __future__ import annotations

import json

from tests.container.conftest import SERVE_BUDGET_BYTES, Images
from tests.container.engine import Engine


def test_the_serving_image_adds_at_most_its_budget_to_the_base(docker: Engine, images: Images):
    added = images.size(docker, images.serve) - images.size(docker, images.base)
    print(f"serve image adds {added / 1e6:.1f} MB to {images.base} ({images.base_origin})")
    assert 0 < added <= SERVE_BUDGET_BYTES


def test_the_serving_image_holds_nothing_the_servers_do_not_import(docker: Engine, images: Images):
    script = (
        "import importlib.util, json\n"
        "names = ['mlflow', 'pandas', 'sklearn', 'matplotlib', 'pandera', 'pyarrow', 'typer',\n"
        "         'elasticsearch', 'pip', 'setuptools', 'scipy.stats', 'scipy.optimize',\n"
        "         'flask', 'fastapi', 'gunicorn', 'uvicorn', 'xgboost', 'sqlalchemy']\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))\n"
    )
    found = json.loads(
        docker.run("run", "--rm", "--entrypoint", "python", images.serve, "-c", script).stdout
    )
    absent = {"mlflow", "pandas", "sklearn", "matplotlib", "pandera", "pyarrow", "typer"}
    absent |= {"elasticsearch", "pip", "setuptools", "scipy.stats", "scipy.optimize"}
    assert {name for name, present in found.items() if present} == set(found) - absent


def test_the_platform_image_has_every_command(docker: Engine, images: Images):
    for command in (["xgbops", "--help"], ["mlflow", "--version"]):
        docker.run("run", "--rm", images.platform, *command)
    env = docker.inspect("image", images.platform)["Config"]["Env"]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in env


def test_both_images_run_as_a_user_and_say_their_revision(docker: Engine, images: Images):
    for image in (images.serve, images.platform):
        config = docker.inspect("image", image)["Config"]
        assert config["User"] == "10001:10001"
        revision = config["Labels"]["org.opencontainers.image.revision"]
        assert revision not in ("", "unknown") and len(revision) == 12


def test_the_serving_image_health_check_probes_its_own_app(docker: Engine, images: Images):
    health = docker.inspect("image", images.serve)["Config"]["Healthcheck"]
    assert health["Test"] == ["CMD", "python", "-m", "api.healthcheck"]
