"""k8s/: every manifest validates (strict) against the Kubernetes schemas, base and overlay.

There is no kubectl/kustomize here, so the overlay is rendered by the few kustomize features it
uses (resources, replicas, secretGenerator, JSON 6902 patches) and anything else fails loudly;
the rendered objects are validated too, and their cross-references checked.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess  # nosec B404 - runs k8s/blue-green/switch.sh against a stand-in kubectl
import sys
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


# --- blue-green: the base twice, one live Service that picks a track -------------------------

BLUE_GREEN = K8S / "blue-green"
TRACKS = ("blue", "green")
SWITCH = BLUE_GREEN / "switch.sh"
#: The Service clients use; the ``track`` of its selector is the switch.
LIVE = "xgbops-api"
#: What the blue-green kustomization uses, and what a track's adds to render()'s features: the
#: base under a name suffix, with labels that narrow its selectors, and an image of its own.
_BLUE_GREEN_SUPPORTED = {"apiVersion", "kind", "resources", "secretGenerator"}
_TRACK_SUPPORTED = {"apiVersion", "kind", "resources", "nameSuffix", "labels", "images"}


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj["spec"]["template"]["spec"]] if obj["kind"] in {"Deployment", "Job"} else []


def _image_name(image: str) -> str:
    """``registry:5000/name:tag`` -> ``registry:5000/name``."""
    name, colon, tag = image.rpartition(":")
    return name if colon and "/" not in tag else image


def render_track(folder: Path) -> list[dict[str, Any]]:
    """The objects of one track (k8s/blue-green/<track>) as kustomize renders them.

    The resources are rendered by :func:`render`, then, as kustomize does: every name gets the
    ``nameSuffix``, and so do the references to the renamed objects (envFrom, the autoscaler's
    target); ``labels`` go on every object and, with ``includeSelectors``, on the Services' and
    Deployments' selectors and pod templates too; ``images`` retag the matching containers.

    Raises:
        ValueError: the kustomization uses a field this renderer does not know.
    """
    kustomization = read_yaml(folder / "kustomization.yaml")
    unknown = sorted(kustomization.keys() - _TRACK_SUPPORTED)
    if unknown:
        raise ValueError(f"{folder.name}: unsupported field(s) {unknown}")
    objects = [
        obj for entry in kustomization.get("resources", []) for obj in render(folder / entry)
    ]
    suffix = kustomization.get("nameSuffix", "")
    renamed = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}

    def new_name(kind: str, name: str) -> str:
        return name + suffix if (kind, name) in renamed else name

    for obj in objects:
        obj["metadata"]["name"] += suffix
        for pod in _pod_specs(obj):
            for source in (s for c in pod["containers"] for s in c.get("envFrom", [])):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        source[key]["name"] = new_name(kind, source[key]["name"])
        if obj["kind"] == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            target["name"] = new_name(target["kind"], target["name"])
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeSelectors") and obj["kind"] == "Service":
                obj["spec"]["selector"].update(label["pairs"])
            elif label.get("includeSelectors") and obj["kind"] == "Deployment":
                obj["spec"]["selector"]["matchLabels"].update(label["pairs"])
                obj["spec"]["template"]["metadata"]["labels"].update(label["pairs"])
    for image in kustomization.get("images", []):
        for container in (c for obj in objects for p in _pod_specs(obj) for c in p["containers"]):
            if _image_name(container["image"]) == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def render_blue_green(folder: Path = BLUE_GREEN) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k k8s/blue-green`` creates: both tracks (render_track), the
    live Service, and the Secret, generated from the ``.example`` as :func:`render` does.

    Raises:
        ValueError: a field this renderer does not know, here or in a track.
    """
    kustomization = read_yaml(folder / "kustomization.yaml")
    unknown = sorted(kustomization.keys() - _BLUE_GREEN_SUPPORTED)
    if unknown:
        raise ValueError(f"{folder.name}: unsupported field(s) {unknown}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects.extend(render_track(path) if path.is_dir() else [read_yaml(path)])
    for generator in kustomization.get("secretGenerator", []):
        data = {
            key: base64.b64encode((value or "").encode()).decode()
            for env in generator.get("envs", [])
            for key, value in env_file(folder / f"{env}.example").items()
        }
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return objects


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return not selector.items() - labels.items()


def _pod_labels(objects: list[dict[str, Any]], track: str) -> dict[str, str]:
    return _target(objects, "Deployment", f"{LIVE}-{track}")["spec"]["template"]["metadata"][
        "labels"
    ]


def _without_track(deployment: dict[str, Any], track: str) -> dict[str, Any]:
    """A track's Deployment without what may differ: its name, its track and its image (and
    the names its suffix gave the objects it reads)."""
    stripped = copy.deepcopy(deployment)
    del stripped["metadata"]["name"]
    spec = stripped["spec"]
    for labels in (
        stripped["metadata"]["labels"],
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"],
    ):
        labels.pop("track", None)
    for container in spec["template"]["spec"]["containers"]:
        container["image"] = _image_name(container["image"])
        for source in container.get("envFrom", []):
            for reference in source.values():
                reference["name"] = reference["name"].removesuffix(f"-{track}")
    return stripped


def blue_green_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What blue-green needs of the rendered objects: one Deployment per track, alike but for
    name, track and image tag; a live Service whose selector takes exactly one track's pods and
    would take the other's but for the track; each track's own Service and autoscaler."""
    deployments = sorted(obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment")
    if deployments != [f"{LIVE}-{track}" for track in TRACKS]:
        return [f"Deployments {deployments}, not one per track {TRACKS}"]
    problems = []
    for track in TRACKS:
        deployment = _target(objects, "Deployment", f"{LIVE}-{track}")
        for where, labels in (
            ("labels", deployment["metadata"]["labels"]),
            ("selector", deployment["spec"]["selector"]["matchLabels"]),
            ("pod labels", deployment["spec"]["template"]["metadata"]["labels"]),
        ):
            if labels.get("track") != track:
                problems.append(f"{LIVE}-{track}: {where} without track: {track}")
    alike = [_without_track(_target(objects, "Deployment", f"{LIVE}-{t}"), t) for t in TRACKS]
    if alike[0] != alike[1]:
        problems.append("the two Deployments differ in more than name, track and image")
    selector = _target(objects, "Service", LIVE)["spec"]["selector"]
    selected = [t for t in TRACKS if _selects(selector, _pod_labels(objects, t))]
    if len(selected) != 1:
        problems.append(f"Service {LIVE} selects the pods of {selected}, not of exactly one track")
    others = {key: value for key, value in selector.items() if key != "track"}
    problems += [
        f"the {track} pods lack the labels Service {LIVE} selects besides the track: {others}"
        for track in TRACKS
        if not _selects(others, _pod_labels(objects, track))
    ]
    for track in TRACKS:
        own = _target(objects, "Service", f"{LIVE}-{track}")["spec"]["selector"]
        reached = [t for t in TRACKS if _selects(own, _pod_labels(objects, t))]
        if reached != [track]:
            problems.append(f"Service {LIVE}-{track} selects the pods of {reached}")
        scalers = [
            obj["metadata"]["name"]
            for obj in objects
            if obj["kind"] == "HorizontalPodAutoscaler"
            and obj["spec"]["scaleTargetRef"]["name"] == f"{LIVE}-{track}"
        ]
        if len(scalers) != 1:
            problems.append(f"{LIVE}-{track} has {len(scalers)} autoscalers, not one of its own")
    return problems


def _copy_k8s(tmp_path: Path) -> Path:
    """k8s/base and k8s/blue-green copied under tmp_path (what the blue-green folder reads);
    returns the copy of k8s/blue-green."""
    for folder in (BASE, BLUE_GREEN):
        shutil.copytree(folder, tmp_path / "k8s" / folder.relative_to(K8S))
    return tmp_path / "k8s" / BLUE_GREEN.name


def test_the_blue_green_kustomizations_list_existing_files():
    assert kustomization_problems(BLUE_GREEN) == []
    for track in TRACKS:
        listed = read_yaml(BLUE_GREEN / track / "kustomization.yaml")["resources"]
        assert [entry for entry in listed if not (BLUE_GREEN / track / entry).exists()] == []
    assert "secrets.env" in (BLUE_GREEN / ".gitignore").read_text().split()


def test_blue_green_renders_valid_objects_with_one_live_track(tmp_path):
    objects = render_blue_green()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == [
        *["ConfigMap"] * 2,
        *["Deployment"] * 2,
        *["HorizontalPodAutoscaler"] * 2,
        "Secret",
        *["Service"] * 3,
    ]
    status, output = kubernetes_validate(objects, tmp_path)
    assert status == 0, output
    assert reference_problems(objects) == []
    assert blue_green_problems(objects) == []
    # What service.yaml ships: blue is live.
    assert _target(objects, "Service", LIVE)["spec"]["selector"]["track"] == "blue"


def test_each_track_runs_the_image_its_own_kustomization_names(tmp_path):
    for track in TRACKS:
        tag = read_yaml(BLUE_GREEN / track / "kustomization.yaml")["images"][0]["newTag"]
        container = _target(render_blue_green(), "Deployment", f"{LIVE}-{track}")["spec"][
            "template"
        ]["spec"]["containers"][0]
        assert container["image"] == f"{SERVE_IMAGE}:{tag}"

    copied = _copy_k8s(tmp_path)
    green = read_yaml(copied / "green" / "kustomization.yaml")
    green["images"][0]["newTag"] = "9.9.9"
    write_yaml(copied / "green" / "kustomization.yaml", green)
    objects = render_blue_green(copied)
    images = {
        track: _target(objects, "Deployment", f"{LIVE}-{track}")["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        for track in TRACKS
    }
    assert images == {
        "blue": _target(render_blue_green(), "Deployment", f"{LIVE}-blue")["spec"]["template"][
            "spec"
        ]["containers"][0]["image"],
        "green": f"{SERVE_IMAGE}:9.9.9",
    }
    assert blue_green_problems(objects) == []  # another image is the one allowed difference


def test_a_track_with_an_unknown_kustomize_feature_is_caught(tmp_path):
    copied = _copy_k8s(tmp_path)
    green = read_yaml(copied / "green" / "kustomization.yaml")
    green["replicas"] = [{"name": LIVE, "count": 3}]
    write_yaml(copied / "green" / "kustomization.yaml", green)
    with pytest.raises(ValueError, match=r"green: unsupported field\(s\) \['replicas'\]"):
        render_blue_green(copied)


def _track_label(objects, track, value):
    deployment = _target(objects, "Deployment", f"{LIVE}-{track}")
    deployment["spec"]["selector"]["matchLabels"]["track"] = value
    deployment["spec"]["template"]["metadata"]["labels"]["track"] = value


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda o: _track_label(o, "green", "blue"), "not of exactly one track"),
        (
            lambda o: _target(o, "Service", LIVE)["spec"]["selector"].pop("track"),
            "selects the pods of ['blue', 'green']",
        ),
        (
            lambda o: _target(o, "Service", LIVE)["spec"]["selector"].update(
                {"app.kubernetes.io/name": "api"}
            ),
            "lack the labels Service xgbops-api selects besides the track",
        ),
        (
            lambda o: _target(o, "Deployment", f"{LIVE}-green")["spec"].update(replicas=3),
            "differ in more than name, track and image",
        ),
        (
            lambda o: _target(o, "Deployment", f"{LIVE}-green")["spec"]["template"]["spec"][
                "containers"
            ][0]["envFrom"][0]["configMapRef"].update(name=f"{LIVE}-config-blue"),
            "differ in more than name, track and image",
        ),
        (
            lambda o: _target(o, "Service", f"{LIVE}-green")["spec"]["selector"].update(
                track="blue"
            ),
            "Service xgbops-api-green selects the pods of ['blue']",
        ),
        (
            lambda o: _target(o, "HorizontalPodAutoscaler", f"{LIVE}-green")["spec"][
                "scaleTargetRef"
            ].update(name=f"{LIVE}-blue"),
            "xgbops-api-green has 0 autoscalers",
        ),
        (
            lambda o: o.remove(_target(o, "Deployment", f"{LIVE}-green")),
            "not one per track",
        ),
    ],
    ids=[
        "green-labelled-blue",
        "live-without-track",
        "live-other-label",
        "replicas",
        "other-configmap",
        "track-service",
        "autoscaler",
        "one-deployment",
    ],
)
def test_a_broken_blue_green_is_caught(mutate, problem):
    objects = copy.deepcopy(render_blue_green())
    mutate(objects)
    problems = blue_green_problems(objects)
    assert any(problem in found for found in problems), problems


# switch.sh, run against a stand-in kubectl that records its arguments (one JSON list a line)
_FAKE_KUBECTL = """#!{python}
import json
import os
import sys

with open(os.environ["KUBECTL_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1 if sys.argv[1:2] == [os.environ.get("KUBECTL_FAILS", "")] else 0)
"""


def run_switch(
    script: Path, track: str, tmp_path: Path, fails: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run ``script track`` with the stand-in kubectl (its first argument ``fails`` fails);
    returns the result and the kubectl calls."""
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(_FAKE_KUBECTL.format(python=sys.executable), encoding="utf-8")
    kubectl.chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "KUBECTL": str(kubectl),
        "KUBECTL_LOG": str(log),
        "KUBECTL_FAILS": fails,
    }
    result = subprocess.run(  # nosec B603 - the repository's script, fixed arguments
        ["bash", str(script), track],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``kubectl patch --type=merge``): maps merge, null deletes."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


@pytest.mark.parametrize("track", TRACKS)
def test_the_switch_selects_the_other_track_in_the_cluster_and_in_the_file(tmp_path, track):
    copied = _copy_k8s(tmp_path)
    result, calls = run_switch(copied / SWITCH.name, track, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # Ready first, then one patch of the live Service.
    assert calls[0][:3] == ["rollout", "status", f"deployment/{LIVE}-{track}"]
    assert calls[1][:5] == ["patch", "service", LIVE, "--type=merge", "-p"]
    assert len(calls) == 2
    objects = render_blue_green()
    live = _target(objects, "Service", LIVE)
    live.update(merge_patch(live, json.loads(calls[1][5])))
    selected = [t for t in TRACKS if _selects(live["spec"]["selector"], _pod_labels(objects, t))]
    assert selected == [track]
    assert blue_green_problems(objects) == []

    # The file says the same, and the next apply stays valid.
    rendered = render_blue_green(copied)
    assert _target(rendered, "Service", LIVE)["spec"] == live["spec"]
    (tmp_path / "rendered").mkdir()
    status, output = kubernetes_validate(rendered, tmp_path / "rendered")
    assert status == 0, output
    assert blue_green_problems(rendered) == []


def test_switching_back_restores_the_file(tmp_path):
    copied = _copy_k8s(tmp_path)
    for track in ("green", "blue"):
        assert run_switch(copied / SWITCH.name, track, tmp_path)[0].returncode == 0
    assert (copied / "service.yaml").read_text() == (BLUE_GREEN / "service.yaml").read_text()


def test_the_switch_refuses_an_unknown_track_and_a_track_that_is_not_ready(tmp_path):
    copied = _copy_k8s(tmp_path)
    result, calls = run_switch(copied / SWITCH.name, "purple", tmp_path)
    assert result.returncode == 2 and "usage" in result.stderr and calls == []

    result, calls = run_switch(copied / SWITCH.name, "green", tmp_path, fails="rollout")
    assert result.returncode != 0
    assert [call[0] for call in calls] == ["rollout"]  # no patch
    assert (copied / "service.yaml").read_text() == (BLUE_GREEN / "service.yaml").read_text()


def test_the_switch_script_passes_shellcheck_and_is_executable(tmp_path):
    tool = require_tool("shellcheck")
    result = run_tool(tool, str(SWITCH))
    assert result.returncode == 0, result.stdout
    assert os.access(SWITCH, os.X_OK), f"{SWITCH} must be executable (chmod +x)"
    broken = tmp_path / "switch.sh"
    broken.write_text(SWITCH.read_text().replace('>"$service_file.tmp"', ">$service_file.tmp"))
    assert run_tool(tool, str(broken)).returncode != 0


def test_the_blue_green_rendering_agrees_with_kustomize(tmp_path):
    """render_blue_green() against kubectl's own kustomize, where kubectl is installed.

    Not a failure under CI=true: no pinned dependency installs kubectl. The Secret's name hash
    (and its type, which kustomize adds) are the only differences allowed.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer is not compared with kustomize")
    copied = _copy_k8s(tmp_path)
    shutil.copy2(copied / "secrets.env.example", copied / "secrets.env")
    result = run_tool(kubectl, "kustomize", str(copied), timeout=120)
    assert result.returncode == 0, result.stderr
    hashed = re.compile(r"^xgbops-api-secrets-[a-z0-9]+$")

    def canonical(objects: list[dict[str, Any]]) -> list[str]:
        text = []
        for obj in objects:
            if obj["kind"] == "Secret":
                obj.pop("type", None)
            serialized = json.dumps(obj, sort_keys=True)
            text.append(
                re.sub(r'"xgbops-api-secrets-[a-z0-9]+"', '"xgbops-api-secrets"', serialized)
            )
        return sorted(text)

    kustomized = list(yaml.safe_load_all(result.stdout))
    assert any(hashed.match(obj["metadata"]["name"]) for obj in kustomized)
    assert canonical(kustomized) == canonical(render_blue_green(copied))
