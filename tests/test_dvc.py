"""The DVC pipeline, run for real: the repository's dvc.yaml and .dvc/config in a copy of the
project, with the pinned `dvc` (init, add, repro, params/metrics diff, push/pull) against the
local default remote and a real S3-compatible server (moto's server mode, on a free port).

The tests share one project and run in file order: each builds on the state the previous one
left (the first repro, then a second that does nothing, then a parameter change, ...), as a
user's repository would. Training is tiny (few rounds) to keep the module cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 - the tests run dvc, git and moto_server, as users do
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.cli_runner import run_xgbops
from tests.conftest import REPO, seed_mlflow_store
from tests.processes import free_port, log_tail, require_program
from xgbops.config import load_settings
from xgbops.dataversion import data_version
from xgbops.tracking import Tracker

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
#: What a stage of dvc.yaml depends on, copied from the repository with the DVC files.
PROJECT_FILES = (
    "config",
    "data",
    "dvc.yaml",
    ".dvcignore",
    "src/xgbops/data.py",
    "src/xgbops/model.py",
    "src/xgbops/train.py",
    "src/xgbops/evaluate.py",
)
#: The repository's own DVC settings, copied over what `dvc init` writes (as a clone has them).
DVC_FILES = (".dvc/config", ".dvc/.gitignore")
TINY_TRAIN = {"num_boost_round": 15, "early_stopping_rounds": 5, "baselines": ["majority"]}


class Project:
    """A git + DVC repository made of the project's files, and the commands run in it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the project; fail the test with its output when it fails."""
        done = subprocess.run(  # nosec B603 - fixed programs, test-made arguments
            [str(a) for a in args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def dvc(self, *args: str) -> str:
        """Run ``dvc ARGS``; its output (stdout and stderr)."""
        done = self.run(DVC, *args)
        return done.stdout + done.stderr

    def commit(self, message: str) -> str:
        """Commit everything git sees; the new commit's hash."""
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)
        return self.run("git", "rev-parse", "HEAD").stdout.strip()

    def lock(self) -> dict[str, Any]:
        """dvc.lock, read."""
        return dict(yaml.safe_load((self.root / "dvc.lock").read_text(encoding="utf-8")))

    def versions(self) -> list[Any]:
        """The registered versions of the project's model, oldest first."""
        settings = load_settings(project_dir=self.root)
        found = Tracker(settings).versions(settings.model_name)
        return sorted(found, key=lambda v: int(v.version))


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path
) -> Iterator[Project]:
    """The project's DVC files in a fresh git repository, `dvc init`-ed, with tiny training;
    its MLflow store (untracked, as a first run leaves it) created empty, sparing the first
    `xgbops train` MLflow's schema migrations."""
    git = require_program("git")
    root = tmp_path_factory.mktemp("dvc") / "project"
    for name in PROJECT_FILES:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    train_yaml = root / "config" / "train.yaml"
    config = yaml.safe_load(train_yaml.read_text(encoding="utf-8"))
    train_yaml.write_text(yaml.safe_dump({**config, **TINY_TRAIN}), encoding="utf-8")
    # OMP_*: the OpenMP threads tests/conftest.py gives each pytest-xdist worker's processes.
    keep = (
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "SSL_CERT_FILE",
        "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY",
    )
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        PATH=f"{BIN}{os.pathsep}{Path(git).parent}{os.pathsep}/usr/bin:/bin",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        GIT_CONFIG_GLOBAL=os.devnull,
        XGBOPS_NOTIFY__DESKTOP="false",
    )
    made = Project(root, env)
    made.run("git", "init", "-q")
    made.dvc("init", "-q")
    for name in DVC_FILES:
        shutil.copy(REPO / name, root / name)
    made.commit("project")
    seed_mlflow_store(mlflow_store_template, root / ".xgbops" / "mlflow.db")
    yield made


def test_repro_runs_every_stage_and_tags_the_run_with_the_data_version(project: Project) -> None:
    commit = project.run("git", "rev-parse", "HEAD").stdout.strip()
    output = project.dvc("repro")
    for stage in ("data-check", "train", "evaluate"):
        assert f"Running stage '{stage}'" in output
    lock = project.lock()
    dataset = {d["path"]: d["md5"] for d in lock["stages"]["train"]["deps"]}["data/churn.csv"]
    assert dataset == data_version(project.root / "data" / "churn.csv")
    assert lock["stages"]["train"]["params"]["config/train.yaml"]["num_boost_round"] == 15
    (version,) = project.versions()
    assert version.tags["data_version"] == dataset
    assert version.tags["git_commit"] == commit
    card = (project.root / "reports" / "training" / "model_card.md").read_text(encoding="utf-8")
    assert dataset in card
    metrics = project.dvc("metrics", "show")
    assert "holdout.roc_auc" in metrics and "reports/evaluation/metrics.json" in metrics
    project.commit("first run")


def test_second_repro_does_nothing(project: Project) -> None:
    output = project.dvc("repro")
    assert "Running stage" not in output
    assert "up to date" in output
    assert len(project.versions()) == 1


def test_param_change_reruns_training_but_not_the_data_check(project: Project) -> None:
    train_yaml = project.root / "config" / "train.yaml"
    config = yaml.safe_load(train_yaml.read_text(encoding="utf-8"))
    config["params"]["max_depth"] = 2
    train_yaml.write_text(yaml.safe_dump(config), encoding="utf-8")
    status = project.dvc("status")
    assert "train:" in status and "data-check:" not in status
    params = project.dvc("params", "diff")
    assert "params.max_depth" in params
    output = project.dvc("repro")
    assert "Running stage 'train'" in output
    assert "Running stage 'data-check'" not in output
    assert "Stage 'data-check' didn't change, skipping" in output
    assert len(project.versions()) == 2
    diff = project.dvc("metrics", "diff", "--json")
    changed = json.loads(diff)
    assert "holdout.roc_auc" in changed["reports/training/metrics.json"]
    project.commit("shallower trees")


def test_tuned_params_are_a_parameter_of_the_train_stage(project: Project) -> None:
    """What `xgbops tune` writes makes the train stage stale, as an edit of train.yaml does
    (the rerun itself is the test above), and shows in params diff."""
    tuned = project.root / "config" / "tuned.yaml"
    lock = project.lock()
    assert lock["stages"]["train"]["params"]["config/tuned.yaml"] == {"params": {}}
    written = tuned.read_text(encoding="utf-8")
    tuned.write_text(yaml.safe_dump({"params": {"max_depth": 3}}), encoding="utf-8")
    try:
        status = project.dvc("status")
        assert "train:" in status and "data-check:" not in status
        assert "config/tuned.yaml" in status
        params = project.dvc("params", "diff")
        assert "config/tuned.yaml" in params and "params.max_depth" in params
    finally:
        tuned.write_text(written, encoding="utf-8")
    assert "train:" not in project.dvc("status")  # back as committed: nothing to rerun


def test_a_registered_version_leads_back_to_its_data(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 1's tag names the data; `xgbops data checkout` restores exactly those bytes."""
    dataset = project.root / "data" / "churn.csv"
    original = dataset.read_bytes()
    wanted = project.versions()[0].tags["data_version"]
    dataset.write_bytes(original[: len(original) // 2])  # the data moved on since
    assert data_version(dataset) != wanted
    status, out, _ = run_xgbops(
        monkeypatch, capsys, "data", "checkout", "--version", "1", cwd=project.root
    )
    assert status == 0
    assert data_version(dataset) == wanted
    assert dataset.read_bytes() == original
    assert f"data version {wanted} (commit " in out  # found in git history, through DVC
    assert project.run("git", "status", "--porcelain").stdout == ""


def test_push_and_pull_through_the_local_default_remote(project: Project) -> None:
    model_card = project.root / "reports" / "training" / "model_card.md"
    card = model_card.read_bytes()
    assert "pushed" in project.dvc("push")
    remote = project.root / ".xgbops" / "dvc-remote" / "files" / "md5"
    lock = project.lock()
    md5 = {o["path"]: o["md5"] for o in lock["stages"]["train"]["outs"]}
    stored = md5["reports/training/model_card.md"]
    assert (remote / stored[:2] / stored[2:]).read_bytes() == card
    shutil.rmtree(project.root / ".dvc" / "cache")
    model_card.unlink()
    project.dvc("pull")
    assert model_card.read_bytes() == card


@pytest.fixture
def s3_server(project: Project, tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port with an empty bucket; the environment that reaches it."""
    port = free_port()
    log = tmp_path / "moto.log"
    with log.open("wb") as out:
        server = subprocess.Popen(  # nosec B603 - the pinned moto_server
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret (moto takes any key)
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
    }
    try:
        _wait_for_bucket(_client(env), server, log)
        project.env.update(env)
        yield env
    finally:
        for name in env:
            project.env.pop(name, None)
        server.terminate()
        server.wait(timeout=30)


def _client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def _wait_for_bucket(client: Any, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            pytest.fail(f"moto_server exited {server.returncode}:\n{log_tail(log)}")
        try:
            client.create_bucket(Bucket="xgbops-data")
            return
        except Exception:  # pylint: disable=broad-exception-caught  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer:\n{log_tail(log)}")
            time.sleep(0.2)


def test_dataset_added_to_dvc_travels_through_the_s3_remote(
    project: Project, s3_server: dict[str, str]
) -> None:
    """A team's setup: the dataset leaves git for DVC (`dvc add`), pushed to S3, pulled back."""
    dataset = project.root / "data" / "churn.csv"
    content, version = dataset.read_bytes(), data_version(dataset)
    project.run("git", "rm", "-q", "--cached", "data/churn.csv")
    project.dvc("add", "data/churn.csv")
    tracked = yaml.safe_load((project.root / "data" / "churn.csv.dvc").read_text("utf-8"))
    assert tracked["outs"][0]["md5"] == version
    assert "up to date" in project.dvc("repro")  # same bytes: nothing to rerun
    project.commit("dataset tracked by DVC")
    project.dvc("push", "-r", "s3")
    client = _client(s3_server)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="xgbops-data")["Contents"]}
    assert f"dvc/files/md5/{version[:2]}/{version[2:]}" in keys
    shutil.rmtree(project.root / ".dvc" / "cache")
    dataset.unlink()
    project.dvc("pull", "-r", "s3")
    assert dataset.read_bytes() == content
