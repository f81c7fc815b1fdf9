"""xgbops.champion: model identity, the pointer, and the registry over MLflow's REST API.

The registry is a real ``mlflow server`` (SQLite backend, proxied artifacts) with champions
trained by xgbops itself.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from xgbops.champion import (
    POINTER_FILE,
    ChampionVersion,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    _auth_headers,
    install_model,
    current_pointer,
    main,
    model_digest,
    read_pointer,
    redact_uri,
    sync_from_registry,
)
from xgbops.rollout.actions import Rollouts
from xgbops.rollout.state import read_state
from xgbops.tracking import Tracker
from xgbops.train import promote_version, train

from api.core.champion import RegistryFollower
from tests.conftest import make_project, project_settings
from tests.mlflow_server import running_mlflow_server
from tests.processes import free_port

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

MODEL = "churn-xgboost"


@dataclass(frozen=True)
class Registry:
    """A tracking server holding a registered champion (version 1) and a second version."""

    url: str
    project: Path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    project = make_project(root / "project")
    backend = f"sqlite:///{root / 'mlflow.db'}"
    with running_mlflow_server(backend, root / "artifacts", root / "server.log") as url:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", url)
            train(project_settings(project, train={"num_boost_round": 5}))
            train(project_settings(project), promote=False)
        yield Registry(url, project)


@pytest.fixture
def registry_settings(registry: Registry, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
    return project_settings(registry.project)


def _bad_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_the_digest_names_the_files_and_their_bytes(registry_settings, tmp_path):
    files = Tracker(registry_settings).download_model(MODEL, version="1", dst=tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(files, copy)
    assert model_digest(files) == model_digest(copy)
    assert model_digest(files).startswith("sha256:") and len(model_digest(files)) == 71
    booster = copy / "booster.ubj"
    booster.write_bytes(booster.read_bytes()[:-1] + b"\0")
    assert model_digest(files) != model_digest(copy)
    (copy / "model.json").unlink()
    with pytest.raises(FileNotFoundError):
        model_digest(copy)


def test_the_client_reads_the_champion_and_downloads_its_files(registry_settings, tmp_path):
    client = RegistryClient(registry_settings.tracking_uri)
    champion = client.champion(MODEL)
    expected = Tracker(registry_settings).champion(MODEL)
    assert champion == ChampionVersion(MODEL, "1", expected.run_id)
    files = client.download(champion, tmp_path / "rest")
    library = Tracker(registry_settings).download_model(MODEL, version="1", dst=tmp_path / "lib")
    assert model_digest(files) == model_digest(library)
    assert client.holdout_metrics(champion.run_id)["roc_auc"] > 0.5


def test_no_champion_is_none_and_a_silent_registry_is_unreachable(registry):
    assert RegistryClient(registry.url).champion("never-trained") is None
    with pytest.raises(RegistryUnreachable, match="does not answer"):
        RegistryClient(_bad_url(), timeout=2).champion(MODEL)
    with pytest.raises(RegistryError, match="not an MLflow server URL"):
        RegistryClient("sqlite:///x.db")


def test_sync_downloads_once_then_leaves_the_model_in_place(registry, tmp_path):
    client = RegistryClient(registry.url)
    first = sync_from_registry(client, MODEL, tmp_path)
    assert first is not None and first.changed
    pointer = first.pointer
    assert (pointer["source"], pointer["version"], pointer["registry"]) == (
        "registry",
        "1",
        registry.url,
    )
    assert pointer["digest"] == model_digest(tmp_path / pointer["model_dir"])
    assert (tmp_path / pointer["model_dir"]).stat().st_mode & 0o777 == 0o755  # any server user
    assert pointer["metrics"]["roc_auc"] > 0.5
    again = sync_from_registry(client, MODEL, tmp_path)
    assert again is not None and not again.changed and again.pointer == pointer
    assert sync_from_registry(client, "never-trained", tmp_path / "other") is None


def test_a_model_with_the_same_version_number_but_another_run_is_replaced(registry, tmp_path):
    """The stale-model bug: a pointer of another registry's "version 1" was kept as current."""
    client = RegistryClient(registry.url)
    champion = client.champion(MODEL)
    files = client.download(champion, tmp_path / "files")
    stranger = ChampionVersion(MODEL, champion.version, "0" * 32)
    install_model(files, tmp_path / "serving", stranger, "registry")
    assert current_pointer(tmp_path / "serving", champion) is None
    synced = sync_from_registry(client, MODEL, tmp_path / "serving")
    assert synced is not None and synced.changed
    assert synced.pointer["run_id"] == champion.run_id


def test_files_changed_on_disk_are_fetched_again(registry, tmp_path):
    client = RegistryClient(registry.url)
    pointer = sync_from_registry(client, MODEL, tmp_path).pointer
    booster = tmp_path / pointer["model_dir"] / "booster.ubj"
    booster.write_bytes(b"corrupt")
    assert current_pointer(tmp_path, client.champion(MODEL)) is None
    healed = sync_from_registry(client, MODEL, tmp_path)
    assert healed.changed and model_digest(tmp_path / healed.pointer["model_dir"]) == (
        healed.pointer["digest"]
    )


def test_the_embedded_store_exports_the_same_pointer_as_local(champion_settings, tmp_path):
    pointer_file = Tracker(champion_settings).export_champion(MODEL, tmp_path)
    pointer = json.loads(pointer_file.read_text(encoding="utf-8"))
    assert pointer["source"] == "local" and "registry" not in pointer
    assert pointer["digest"] == model_digest(tmp_path / pointer["model_dir"])
    before = pointer_file.stat().st_mtime_ns
    Tracker(champion_settings).export_champion(MODEL, tmp_path)
    assert pointer_file.stat().st_mtime_ns == before  # already in place: not exported again


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _sync(monkeypatch, capsys, project: Path, registry_url: str, *args: str) -> list[dict]:
    monkeypatch.setenv("XGBOPS_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_url)
    monkeypatch.setenv("XGBOPS_LOG_FORMAT", "json")
    assert main(["sync", "--timeout", "2", *args]) == 0
    # which model is served, and from where; the compiled trees' events are tests/test_compiled's
    return [e for e in _events(capsys.readouterr().err) if not e["event"].startswith("trees.")]


def test_the_sync_command_serves_the_registry_champion(registry, monkeypatch, capsys, project):
    events = _sync(monkeypatch, capsys, project, registry.url)
    serving = [e for e in events if e["event"] == "champion.serving"]
    assert serving and serving[0]["source"] == "registry" and serving[0]["model_version"] == "1"
    assert read_pointer(project / ".xgbops" / "serving" / MODEL)["source"] == "registry"


def test_the_sync_command_serves_the_baked_model_only_when_the_registry_is_down(
    registry, monkeypatch, capsys, project, tmp_path
):
    baked = tmp_path / "baked"
    synced = sync_from_registry(RegistryClient(registry.url), MODEL, baked)
    events = _sync(monkeypatch, capsys, project, _bad_url(), "--baked", str(baked))
    assert [e["event"] for e in events] == ["champion.registry_unreachable", "champion.serving"]
    assert events[1]["source"] == "baked" and events[1]["run_id"] == synced.pointer["run_id"]
    pointer = read_pointer(project / ".xgbops" / "serving" / MODEL)
    assert pointer["source"] == "baked" and pointer["metrics"] == synced.pointer["metrics"]


def test_the_sync_command_serves_nothing_rather_than_a_stale_model(
    registry, monkeypatch, capsys, project, tmp_path
):
    serving = project / ".xgbops" / "serving" / "never-trained"
    serving.mkdir(parents=True)
    (serving / POINTER_FILE).write_text("{}", encoding="utf-8")
    monkeypatch.setenv("XGBOPS_TRAIN__MODEL_NAME", "never-trained")
    events = _sync(monkeypatch, capsys, project, registry.url, "--baked", str(tmp_path))
    assert [e["event"] for e in events] == ["champion.registry_has_none", "champion.none"]
    assert not (serving / POINTER_FILE).exists()


def test_the_follower_installs_each_new_champion_once(registry, registry_settings, tmp_path):
    follower = RegistryFollower(RegistryClient(registry.url), MODEL, tmp_path, interval=60)
    assert follower.sync_once() is True
    assert follower.sync_once() is False
    promote_version(registry_settings, "2", force=True)
    try:
        assert follower.sync_once() is True
        assert read_pointer(tmp_path)["version"] == "2"
    finally:
        promote_version(registry_settings, "1", force=True)


def test_the_follower_keeps_serving_and_says_so_once_when_the_registry_is_down(tmp_path):
    follower = RegistryFollower(RegistryClient(_bad_url(), timeout=2), MODEL, tmp_path, 0.05)
    with capture_logs() as logs:
        follower.start()
        time.sleep(0.5)
        follower.close()
    problems = [e for e in logs if e["event"] == "champion.registry_unreachable"]
    assert len(problems) == 1 and problems[0]["log_level"] == "warning"
    assert not (tmp_path / POINTER_FILE).exists()


def test_uris_lose_their_credentials_and_requests_carry_mlflows(monkeypatch):
    with_credentials = "https://user:secret@mlflow.example:5000/x"  # pragma: allowlist secret
    assert redact_uri(with_credentials) == "https://mlflow.example:5000/x"
    file_uri = "sqlite:////var/lib/xgbops/predictions.db"
    assert redact_uri(file_uri) == file_uri  # nothing to hide, the empty host kept
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")  # pragma: allowlist secret
    assert _auth_headers() == {"Authorization": "Basic YWxpY2U6czNjcmV0"}
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    assert _auth_headers() == {"Authorization": "Bearer tok"}


def test_the_follower_carries_the_rollout_state_and_the_challenger(
    registry, registry_settings, tmp_path
):
    champion = Tracker(registry_settings).champion(MODEL)
    assert champion is not None
    other = "2" if champion.version == "1" else "1"
    rollouts = Rollouts(registry_settings)
    follower = RegistryFollower(RegistryClient(registry.url), MODEL, tmp_path, interval=60)
    try:
        started = rollouts.start(other, "shadow", 100)  # writes the registry's rollout.state
        follower.sync_once()  # a replica that never saw the command
        assert read_state(tmp_path) == started
        assert read_pointer(tmp_path, "challenger")["version"] == other
        assert read_pointer(tmp_path)["version"] == champion.version
        changed = rollouts.change("canary", 20)
        follower.sync_once()
        assert read_state(tmp_path) == changed and changed.share == 20
        rollouts.rollback()
        follower.sync_once()
        assert read_state(tmp_path).ended_by == "rollback"
        assert not (tmp_path / "challenger.json").exists()  # the alias is gone: so is the file
    finally:
        rollouts.close()
