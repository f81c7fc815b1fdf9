"""make watch: which part of the chain a change re-runs, and the watcher loop itself."""

from __future__ import annotations

import stat
import threading
import time

import pytest

from xgbops.watch import CHAIN, run_targets, targets_for, watch


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["src/xgbops/train.py"], ["quality", "data-check", "train"]),
        (["tests/test_data.py"], ["quality", "data-check", "train"]),
        (["data/churn.csv"], ["data-check", "train"]),
        (["config/dataset.yaml"], ["data-check", "train"]),
        (["config/train.yaml"], ["train"]),
        (["config/train.yaml", "src/xgbops/model.py"], ["quality", "data-check", "train"]),
        (["reports/junit.xml", ".xgbops/mlflow.db", "src/xgbops/__pycache__/x.pyc"], []),
        (["README.md"], []),
    ],
)
def test_targets_for_a_change_start_where_the_chain_is_invalidated(paths, expected):
    assert targets_for(paths) == expected


def test_chain_is_the_make_pipeline_order():
    assert CHAIN == ("quality", "data-check", "train")


def _fake_make(tmp_path, status):
    script = tmp_path / "make"
    log = tmp_path / "calls"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {status}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_run_targets_calls_make_once_with_the_targets_and_returns_its_status(tmp_path):
    make, log = _fake_make(tmp_path, 3)
    assert run_targets(["data-check", "train"], make=make) == 3
    assert log.read_text() == "data-check train\n"
    assert run_targets([], make=make) == 0
    assert log.read_text() == "data-check train\n"


def test_watch_reacts_to_a_real_file_change(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "notes.txt").write_text("irrelevant")
    seen = []

    def touch_later():
        time.sleep(1.0)
        (tmp_path / "notes.txt").write_text("still irrelevant")
        time.sleep(0.5)
        (tmp_path / "config" / "train.yaml").write_text("seed: 1\n")

    writer = threading.Thread(target=touch_later)
    writer.start()
    watch(tmp_path, on_change=seen.append, stop_after=1)
    writer.join()
    assert seen == [["train"]]
