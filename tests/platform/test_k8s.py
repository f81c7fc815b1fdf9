"""k8s/: every manifest validates (strict) against the Kubernetes schemas, base and overlay.

There is no kubectl/kustomize here, so the overlay is rendered by the few kustomize features it
uses (resources, replicas, secretGenerator, JSON 6902 patches) and anything else fails loudly;
the rendered objects are validated too, and their cross-references checked.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from xgbops.config import ServeSettings

from tests.platform.conftest import REPO, require_tool, run_tool
from tests.platform.platform_files import env_file, is_setting, read_yaml, write_yaml

K8S = REPO / "k8s"
#: The serving image's name (`make docker-build` tags it; XGBOPS_IMAGE overrides it there).
SERVE_IMAGE = "xgbops/xgbops-serve"
BASE = K8S / "base"
MINIKUBE = K8S / "overlays" / "minikube"
DASK = K8S / "dask"
_SUPPORTED = {"apiVersion", "kind", "resources", "labels", "replicas", "secretGenerator", "patches"}


def kustomization_problems(folder: Path) -> list[str]:
    """Listed resources that do not exist; kustomize features this renderer does not know."""
    kustomization = read_yaml(folder / "kustomization.yaml")
    problems = [
        f"{folder.name}: unsupported field {key}" for key in kustomization.keys() - _SUPPORTED
    ]
    for entry in kustomization.get("resources", []):
        if not (folder / entry).exists():
            problems.append(f"{folder.name}/kustomization.yaml lists {entry}, which does not exist")
    for generator in kustomization.get("secretGenerator", []):
        for env in generator.get("envs", []):
            if not (folder / f"{env}.example").is_file():
                problems.append(f"{folder.name}: {env}.example (the template of {env}) is missing")
    return problems


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k folder`` would create (for the features in _SUPPORTED).

    Secrets are generated from the ``.example`` of their env files (the real ones are not in
    the repository).

    Raises:
        ValueError: a patch that does not apply (its target or path does not exist).
    """
    kustomization = read_yaml(folder / "kustomization.yaml")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects.extend(render(path) if path.is_dir() else [read_yaml(path)])
    for generator in kustomization.get("secretGenerator", []):
        data = {}
        for env in generator.get("envs", []):
            for key, value in env_file(folder / f"{env}.example").items():
                data[key] = base64.b64encode((value or "").encode()).decode()
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for replicas in kustomization.get("replicas", []):
        _target(objects, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        target = _target(objects, patch["target"]["kind"], patch["target"]["name"])
        for operation in yaml.safe_load(patch["patch"]):
            _apply(target, operation)
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    return objects


def _target(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise ValueError(f"no {kind} named {name} to patch")


def _apply(target: dict[str, Any], operation: dict[str, Any]) -> None:
    """One JSON 6902 ``replace`` or ``add`` (what the overlays use)."""
    *parents, last = [part for part in operation["path"].split("/") if part]
    node: Any = target
    for part in parents:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"patch path {operation['path']} does not exist") from exc
    if operation["op"] == "replace" and (isinstance(node, dict) and last not in node):
        raise ValueError(f"patch replaces {operation['path']}, which does not exist")
    if operation["op"] not in {"replace", "add"}:
        raise ValueError(f"unsupported patch operation {operation['op']}")
    if isinstance(node, list):
        node[int(last)] = operation["value"]
    else:
        node[last] = operation["value"]


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Broken links between the rendered objects, probes and settings."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    problems = []
    for deployment in by_kind.get("Deployment", {}).values():
        pod = deployment["spec"]["template"]
        if (
            deployment["spec"]["selector"]["matchLabels"].items()
            - pod["metadata"]["labels"].items()
        ):
            problems.append("the Deployment's selector does not match its pod labels")
        if not pod["spec"].get("securityContext", {}).get("runAsNonRoot"):
            problems.append("pods must run as non-root (runAsNonRoot)")
        for container in pod["spec"]["containers"]:
            problems.extend(_container_problems(container, by_kind))
    for service in by_kind.get("Service", {}).values():
        selected = [
            d
            for d in by_kind.get("Deployment", {}).values()
            if not service["spec"]["selector"].items()
            - d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not selected:
            problems.append(f"Service {service['metadata']['name']} selects no Deployment's pods")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in by_kind.get(target["kind"], {}):
            problems.append(
                f"the autoscaler targets {target['kind']} {target['name']}, which is not there"
            )
    for config in by_kind.get("ConfigMap", {}).values():
        problems.extend(
            f"ConfigMap sets {key}, not a setting" for key in config["data"] if not is_setting(key)
        )
    return problems


def _container_problems(container: dict[str, Any], by_kind: dict[str, Any]) -> list[str]:
    problems = []
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    if ports.get("http") != ServeSettings().port:
        problems.append(f"the container's http port must be {ServeSettings().port}")
    probes = {
        name: container.get(name, {}).get("httpGet", {})
        for name in ("livenessProbe", "readinessProbe")
    }
    if (
        probes["livenessProbe"].get("path") != "/health"
        or probes["readinessProbe"].get("path") != "/ready"
    ):
        problems.append("liveness must probe /health and readiness /ready")
    for probe in probes.values():
        if probe.get("port") not in ports:
            problems.append(
                f"a probe uses port {probe.get('port')!r}, which the container does not name"
            )
    for source in container.get("envFrom", []):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source and source[key]["name"] not in by_kind.get(kind, {}):
                problems.append(f"envFrom {kind} {source[key]['name']} is not there")
    configured = {
        key: value
        for config in by_kind.get("ConfigMap", {}).values()
        for key, value in config["data"].items()
    }
    if configured.get("XGBOPS_SERVE__PORT") != str(ports.get("http")):
        problems.append("ConfigMap XGBOPS_SERVE__PORT differs from the container port")
    if configured.get("XGBOPS_SERVE__HOST") != "0.0.0.0":
        problems.append("ConfigMap XGBOPS_SERVE__HOST must be 0.0.0.0")
    if not container.get("resources", {}).get("requests", {}).get("cpu"):
        problems.append("no CPU request: the autoscaler cannot compute utilisation")
    return problems


def kubernetes_validate(objects: list[dict[str, Any]], folder: Path) -> tuple[int, str]:
    """kubernetes-validate --strict on ``objects``, one file each in ``folder``."""
    tool = require_tool("kubernetes-validate")
    paths = [
        write_yaml(folder / f"{i:02d}-{obj['kind'].lower()}.yaml", obj)
        for i, obj in enumerate(objects)
    ]
    result = run_tool(tool, "--strict", "--quiet", *map(str, paths))
    return result.returncode, result.stdout + result.stderr


def _base_files() -> list[Path]:
    return [BASE / entry for entry in read_yaml(BASE / "kustomization.yaml")["resources"]]


def test_every_base_manifest_validates_strictly():
    tool = require_tool("kubernetes-validate")
    files = _base_files()
    assert {path.name for path in files} == {
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
    }
    result = run_tool(tool, "--strict", "--quiet", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("folder", [BASE, MINIKUBE, DASK], ids=["base", "minikube", "dask"])
def test_the_kustomizations_list_existing_files(folder):
    assert kustomization_problems(folder) == []


def test_the_minikube_overlay_renders_valid_objects(tmp_path):
    objects = render(MINIKUBE)
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Secret", "Service"]
    status, output = kubernetes_validate(objects, tmp_path)
    assert status == 0, output
    deployment = _target(objects, "Deployment", "xgbops-api")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    assert _target(objects, "Service", "xgbops-api")["spec"]["type"] == "NodePort"
    assert _target(objects, "HorizontalPodAutoscaler", "xgbops-api")["spec"]["minReplicas"] == 1


@pytest.mark.parametrize("folder", [BASE, MINIKUBE], ids=["base", "minikube"])
def test_the_rendered_objects_reference_each_other(folder):
    objects = render(folder)
    if folder == BASE:  # the overlay supplies the Secret
        objects.append({"kind": "Secret", "metadata": {"name": "xgbops-api-secrets"}})
    assert reference_problems(objects) == []


def test_the_image_tag_is_the_package_version():
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None
    image = read_yaml(BASE / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    # The serving image (the Dockerfile's `serve` stage), as `make docker-build` tags it.
    assert image == f"{SERVE_IMAGE}:{version.group(1)}"


def test_make_docker_build_tags_the_serving_image():
    """The Makefile's IMAGE stem plus its serving suffix is the image the manifests run."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    stem = re.search(r"^IMAGE \?= \$\(or \$\(XGBOPS_IMAGE\),(\S+)\)$", makefile, re.M)
    suffix = re.search(r"^SERVE_IMAGE := \$\(IMAGE\)(\S+)$", makefile, re.M)
    assert stem and suffix and stem[1] + suffix[1] == SERVE_IMAGE


def test_the_probes_are_endpoints_of_the_api():
    container = read_yaml(BASE / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    paths = json.loads((REPO / "api" / "openapi.json").read_text(encoding="utf-8"))["paths"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "get" in paths[container[probe]["httpGet"]["path"]], probe


def test_the_secret_file_stays_out_of_git_and_holds_settings():
    assert "secrets.env" in (MINIKUBE / ".gitignore").read_text().split()
    keys = env_file(MINIKUBE / "secrets.env.example")
    assert keys and all(is_setting(key) for key in keys), keys


def test_a_manifest_kubernetes_rejects_is_caught(tmp_path):
    broken = copy.deepcopy(render(MINIKUBE))
    deployment = _target(broken, "Deployment", "xgbops-api")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"][
        "paht"
    ] = "/"
    _target(broken, "HorizontalPodAutoscaler", "xgbops-api")["spec"]["minReplicas"] = "one"
    status, output = kubernetes_validate(broken, tmp_path)
    assert status != 0 and "paht" in output and "minReplicas" in output


def test_a_missing_resource_or_unknown_feature_is_caught(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    kustomization = read_yaml(BASE / "kustomization.yaml")
    kustomization["resources"].append("ingress.yaml")
    kustomization["images"] = [{"name": SERVE_IMAGE, "newTag": "1"}]
    write_yaml(folder / "kustomization.yaml", kustomization)
    problems = kustomization_problems(folder)
    assert "base/kustomization.yaml lists ingress.yaml, which does not exist" in problems
    assert "base: unsupported field images" in problems


def test_a_patch_that_does_not_apply_is_caught(tmp_path):
    overlay = tmp_path / "overlays" / "minikube"
    overlay.mkdir(parents=True)
    (tmp_path / "base").symlink_to(BASE)
    kustomization = read_yaml(MINIKUBE / "kustomization.yaml")
    kustomization["patches"][0]["patch"] = kustomization["patches"][0]["patch"].replace(
        "/spec/template/spec/containers/0/imagePullPolicy",
        "/spec/template/spec/container/0/imagePullPolicy",
    )
    write_yaml(overlay / "kustomization.yaml", kustomization)
    (overlay / "secrets.env.example").write_text((MINIKUBE / "secrets.env.example").read_text())
    with pytest.raises(ValueError, match="does not exist"):
        render(overlay)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda o: _target(o, "Service", "xgbops-api")["spec"].update(selector={"app": "x"}),
            "selects no",
        ),
        (
            lambda o: _target(o, "Deployment", "xgbops-api")["spec"]["template"]["spec"][
                "containers"
            ][0]["readinessProbe"]["httpGet"].update(path="/health"),
            "readiness /ready",
        ),
        (
            lambda o: _target(o, "ConfigMap", "xgbops-api-config")["data"].update(
                XGBOPS_SERVE__PORT="9000"
            ),
            "PORT",
        ),
        (
            lambda o: _target(o, "ConfigMap", "xgbops-api-config")["data"].update(
                XGBOPS_WORKERS="2"
            ),
            "not a setting",
        ),
        (
            lambda o: _target(o, "HorizontalPodAutoscaler", "xgbops-api")["spec"][
                "scaleTargetRef"
            ].update(name="api"),
            "targets Deployment api",
        ),
        (
            lambda o: _target(o, "Deployment", "xgbops-api")["spec"]["template"]["spec"][
                "securityContext"
            ].pop("runAsNonRoot"),
            "non-root",
        ),
    ],
    ids=["selector", "readiness", "port", "typo", "hpa target", "root"],
)
def test_a_broken_reference_is_caught(tmp_path, mutate, problem):
    objects = copy.deepcopy(render(MINIKUBE))
    mutate(objects)
    broken = tmp_path / "rendered.yaml"
    broken.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    problems = reference_problems(list(yaml.safe_load_all(broken.read_text(encoding="utf-8"))))
    assert any(problem in found for found in problems), problems


def dask_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The Dask cluster's objects: pods select and probe what they name, the Service reaches
    the scheduler, every worker and the training Job join it, nothing runs as root."""
    problems = []
    scheduler = _target(objects, "Service", "xgbops-dask-scheduler")
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]
        for obj in objects
        if obj["kind"] in {"Deployment", "Job"}
    }
    for name, pod in pods.items():
        if not pod["spec"].get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name} must run as non-root")
        container = pod["spec"]["containers"][0]
        ports = {port["name"] for port in container.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if port is not None and port not in ports:
                problems.append(f"{name}'s {probe} uses port {port!r}, which it does not name")
        if not container.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{name} has no memory limit")
        address = f"tcp://{scheduler['metadata']['name']}:8786"
        joins = address in container["command"] or any(
            env.get("value") == address for env in container.get("env", [])
        )
        if name != "xgbops-dask-scheduler" and not joins:
            problems.append(f"{name} does not join the scheduler at {address}")
    selected = [
        name
        for name, pod in pods.items()
        if not scheduler["spec"]["selector"].items() - pod["metadata"]["labels"].items()
    ]
    if selected != ["xgbops-dask-scheduler"]:
        problems.append(f"the scheduler's Service selects {selected}")
    return problems


def test_the_dask_cluster_renders_valid_objects_that_join_one_scheduler(tmp_path):
    objects = render(DASK)
    assert sorted(obj["kind"] for obj in objects) == ["Deployment", "Deployment", "Job", "Service"]
    status, output = kubernetes_validate(objects, tmp_path)
    assert status == 0, output
    assert dask_problems(objects) == []
    job = _target(objects, "Job", "xgbops-train-dask")["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in job["containers"][0]["env"]}
    assert env["XGBOPS_ENGINE"] == "dask" and is_setting("XGBOPS_DASK__SCHEDULER_ADDRESS")


def test_a_worker_that_does_not_join_the_scheduler_is_caught():
    objects = render(DASK)
    worker = _target(objects, "Deployment", "xgbops-dask-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["command"][2] = "tcp://elsewhere:8786"
    assert dask_problems(objects) == [
        "xgbops-dask-worker does not join the scheduler at tcp://xgbops-dask-scheduler:8786"
    ]
