"""Data versions: DVC's hash of the dataset, and restoring a version's data by that hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from dvc_data.hashfile.hash import file_md5
from dvc_objects.fs.local import LocalFileSystem

from tests.conftest import REPO
from xgbops import dataversion
from xgbops.dataversion import DataVersionError, data_version, restore

DATASET = REPO / "data" / "churn.csv"


def test_data_version_is_the_md5_dvc_computes_for_the_file() -> None:
    assert data_version(DATASET) == file_md5(str(DATASET), LocalFileSystem())


def test_data_version_changes_with_one_byte(tmp_path: Path) -> None:
    copy = tmp_path / "churn.csv"
    copy.write_bytes(DATASET.read_bytes())
    before = data_version(copy)
    copy.write_bytes(DATASET.read_bytes().replace(b"yes", b"Yes", 1))
    assert data_version(copy) != before


def test_data_version_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataVersionError, match="missing.csv"):
        data_version(tmp_path / "missing.csv")


def test_version_tags_carry_the_hash_and_the_commit_when_known() -> None:
    tags = dataversion.version_tags(DATASET, "abc123")
    assert tags == {"data_version": data_version(DATASET), "git_commit": "abc123"}
    assert "git_commit" not in dataversion.version_tags(DATASET, None)


def test_restore_copies_the_workspace_file_when_it_is_that_version(tmp_path: Path) -> None:
    output = tmp_path / "out" / "restored.csv"
    restored = restore(REPO, Path("data/churn.csv"), data_version(DATASET), None, output)
    assert restored.source == "workspace"
    assert output.read_bytes() == DATASET.read_bytes()


def test_restore_refuses_a_file_of_another_version(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    changed = project / "data" / "churn.csv"
    changed.write_bytes(DATASET.read_bytes()[:-200])
    wanted = data_version(DATASET)
    with pytest.raises(DataVersionError) as error:
        restore(project, Path("data/churn.csv"), wanted, None, changed)
    assert wanted in str(error.value) and "no git commit recorded" in str(error.value)
    assert changed.read_bytes() == DATASET.read_bytes()[:-200]  # left as it was
