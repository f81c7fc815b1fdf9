"""The champion's trees compiled with tl2cgen: same probabilities as XGBoost, or XGBoost."""

from __future__ import annotations

import json
import pickle  # nosec B403 - the test's own objects, as Dask ships them
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from xgbops import compiled
from xgbops.champion import ChampionVersion, install_model, read_pointer
from xgbops.config import Settings
from xgbops.data import load_splits
from xgbops.model import BOOSTER_FILE, COMPILED_MOST_ROWS, Model

from tests.conftest import project_settings

pytestmark = pytest.mark.skipif(
    compiled._compiler() is None,  # pylint: disable=protected-access
    reason="no C compiler (gcc, cc or clang) to compile trees with",
)


@pytest.fixture(scope="module")
def champion_dir(champion_project: Path) -> Path:
    """The shared champion's exported files (booster and featuriser)."""
    serving = project_settings(champion_project).serving_path
    pointer = read_pointer(serving)
    assert pointer is not None
    return serving / pointer["model_dir"]


@pytest.fixture(scope="module")
def compiled_dir(champion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the champion's files with its trees compiled into a cache of this module."""
    target = tmp_path_factory.mktemp("compiled") / "model"
    target.mkdir()
    for name in ("model.json", BOOSTER_FILE):
        shutil.copyfile(champion_dir / name, target / name)
    cache = target.parent / "cache"
    assert compiled.compile_into(target, cache) == "compiled"
    return target


def test_compiled_trees_give_xgboost_probabilities_on_the_holdout(
    compiled_dir: Path, champion_settings: Settings
):
    model = Model.load(compiled_dir)
    assert model.scorer == "compiled" and model.trees is not None
    holdout = load_splits(champion_settings).holdout
    names = model.featurizer.input_names
    features = model.featurizer.transform_columns({n: holdout[n].to_numpy() for n in names})
    ours = model.predict_proba(features)
    theirs = model.booster.inplace_predict(features, missing=np.nan)
    assert len(ours) == len(holdout) > 100
    assert np.abs(ours - theirs).max() <= 1e-6
    assert len(np.unique(np.round(ours, 3))) > 50  # real scores, not a constant


def test_a_library_is_compiled_once_per_booster_and_copied_from_the_cache(
    compiled_dir: Path, tmp_path: Path
):
    cache = compiled_dir.parent / "cache"
    assert [p.name for p in cache.glob("*.so")] == [
        f"{compiled.library_key(compiled_dir / BOOSTER_FILE)}.so"
    ]
    assert compiled.compile_into(compiled_dir, cache) == "present"
    other = tmp_path / "other"
    shutil.copytree(compiled_dir, other, ignore=shutil.ignore_patterns("trees.*"))
    assert compiled.compile_into(other, cache) == "cached"
    assert Model.load(other).scorer == "compiled"


def test_export_compiles_and_the_folder_travels_with_its_library(
    compiled_dir: Path, tmp_path: Path
):
    champion = ChampionVersion("churn", "7", "a" * 32)
    pointer = install_model(compiled_dir, tmp_path / "serving", champion, "local")
    exported = tmp_path / "serving" / pointer["model_dir"]
    assert (exported / compiled.LIBRARY_FILE).is_file()  # copied along, no cache given
    assert Model.load(exported).scorer == "compiled"
    bare = tmp_path / "bare"
    shutil.copytree(compiled_dir, bare, ignore=shutil.ignore_patterns("trees.*"))
    pointer = install_model(bare, tmp_path / "again", champion, "local")
    assert Model.load(tmp_path / "again" / pointer["model_dir"]).scorer == "xgboost"
    pointer = install_model(bare, tmp_path / "third", champion, "local", trees_cache=tmp_path)
    assert Model.load(tmp_path / "third" / pointer["model_dir"]).scorer == "compiled"


def test_without_a_compiler_xgboost_scores(
    compiled_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CC", raising=False)
    bare = tmp_path / "bare"
    shutil.copytree(compiled_dir, bare, ignore=shutil.ignore_patterns("trees.*"))
    outcome = compiled.compile_into(bare, tmp_path / "cache")
    assert outcome == "not compiled: no C compiler (gcc, cc or clang) on PATH"
    assert not (bare / compiled.LIBRARY_FILE).exists()
    assert Model.load(bare).scorer == "xgboost"


def test_a_library_of_another_booster_is_refused(compiled_dir: Path, tmp_path: Path):
    """Named for this booster but compiled from other trees: the probe rows disagree."""
    width = len(Model.load(compiled_dir).featurizer.output_names)
    rng = np.random.default_rng(1)
    data = rng.random((200, width))
    stranger = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(data, label=(data[:, 0] > 0.5).astype(float)),
        20,
    )
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    shutil.copyfile(compiled_dir / "model.json", impostor / "model.json")
    stranger.save_model(impostor / BOOSTER_FILE)
    assert compiled.compile_into(impostor, tmp_path / "cache") == "compiled"
    shutil.copyfile(compiled_dir / BOOSTER_FILE, impostor / BOOSTER_FILE)  # the library stays
    spec = json.loads((impostor / compiled.LIBRARY_SPEC).read_text())
    assert Model.load(impostor).scorer == "xgboost"  # stale: the key no longer matches
    spec["key"] = compiled.library_key(impostor / BOOSTER_FILE)  # forged to match
    (impostor / compiled.LIBRARY_SPEC).write_text(json.dumps(spec))
    assert Model.load(impostor).scorer == "xgboost"  # and the probe rows catch it


def test_probe_rows_reach_both_branches_of_missing_values():
    rows = compiled.probe_rows(12)
    assert rows.shape == (compiled.PROBE_ROWS, 12) and rows.dtype == np.float32
    assert np.isnan(rows).any() and (rows == 1).any() and (np.abs(rows) > 10).any()


def test_a_pickled_model_reloads_its_library_only_if_it_is_still_the_same(compiled_dir: Path):
    """What a Dask worker receives: the library's path and key, not a handle."""
    model = Model.load(compiled_dir)
    assert pickle.loads(pickle.dumps(model)).scorer == "compiled"
    spec = json.loads((compiled_dir / compiled.LIBRARY_SPEC).read_text())
    try:
        (compiled_dir / compiled.LIBRARY_SPEC).write_text(json.dumps({**spec, "key": "other"}))
        travelled = pickle.loads(pickle.dumps(model))
    finally:
        (compiled_dir / compiled.LIBRARY_SPEC).write_text(json.dumps(spec))
    assert travelled.scorer == "xgboost"
    features = compiled.probe_rows(len(model.featurizer.output_names))
    assert np.abs(travelled.predict_proba(features) - model.predict_proba(features)).max() <= 1e-6


def test_a_few_rows_go_to_the_compiled_trees_and_many_to_xgboost(compiled_dir: Path):
    """Each path where it is faster (see COMPILED_MOST_ROWS), both within 1e-6 of each other."""
    model = Model.load(compiled_dir)
    assert model.trees is not None
    width = len(model.featurizer.output_names)
    many = np.tile(compiled.probe_rows(width), (COMPILED_MOST_ROWS // compiled.PROBE_ROWS + 1, 1))
    few = many[: COMPILED_MOST_ROWS - 1]
    assert many.shape[0] >= COMPILED_MOST_ROWS
    assert np.array_equal(model.predict_proba(few), model.trees.predict(few))
    by_xgboost = model.booster.inplace_predict(many, missing=np.nan)
    assert np.array_equal(model.predict_proba(many), by_xgboost)
    assert np.abs(model.trees.predict(many) - by_xgboost).max() <= 1e-6
