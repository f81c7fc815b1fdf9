"""A project for rollouts: v1 the champion, v2 a weak model (2 rounds of depth 1), v3 broken on
purpose: the champion's booster with its labels swapped, so it serves the wrong label almost
whenever the champion serves the right one."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.serving import coerce_record, feature_types
from tests.conftest import make_project, project_settings
from xgbops.config import Settings
from xgbops.tracking import Tracker
from xgbops.train import train

WEAK = {"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1}}


def register_inverted(settings: Settings, work: Path) -> str:
    """Register the champion's booster with its labels swapped: a broken challenger."""
    tracker = Tracker(settings)
    inverted = work / "inverted" / "model"  # MLflow keeps the folder's name: "model"
    shutil.copytree(tracker.download_model(settings.model_name, version="1"), inverted)
    spec = json.loads((inverted / "model.json").read_text(encoding="utf-8"))
    target = spec["target"]
    target["positive"], target["negative"] = target["negative"], target["positive"]
    (inverted / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    example = pd.DataFrame([labelled_records(settings)[0][0]])
    with tracker.run("inverted-labels"):
        uri = tracker.log_model(inverted, example, pd.DataFrame({"probability": [0.5]}))
    return tracker.register(uri, settings.model_name)


def labelled_records(settings: Settings) -> list[tuple[dict[str, Any], str]]:
    """The dataset's rows as (record, true label)."""
    types = feature_types(settings)
    column = settings.dataset.target.column
    with settings.data_path.open(newline="", encoding="utf-8") as handle:
        return [(coerce_record(row, types), row[column]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def rollout_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 champion, v2 weak, v3 broken (labels swapped), none of them on trial; copy it before
    changing it."""
    project = make_project(tmp_path_factory.mktemp("rollout") / "project")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(("XGBOPS_", "MLFLOW_"))]:
            patch.delenv(name)
        train(project_settings(project))
        train(project_settings(project, train=WEAK), promote=False)
        assert register_inverted(project_settings(project), project.parent) == "3"
    return project


@pytest.fixture
def rollout_project(rollout_template: Path, tmp_path: Path) -> Path:
    """A private copy of the rollout project (its registry and serving folder may change)."""
    project = tmp_path / "project"
    shutil.copytree(rollout_template, project)
    return project
