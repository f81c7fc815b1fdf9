"""Settings: YAML + environment, validated with errors that name the file, the field and why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from xgbops.config import ConfigError, load_settings, parse_duration, to_sqlalchemy_url


def _write(path: Path, content: object) -> Path:
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_defaults_describe_the_churn_dataset(settings):
    assert settings.dataset.target.column == "churn"
    assert len(settings.dataset.features) == 19
    assert settings.dataset.feature("state").type == "categorical"
    assert settings.train.promotion.metric == "roc_auc"
    assert settings.train.promotion.greater_is_better is True
    assert settings.data_path == settings.project_dir / "data" / "churn.csv"


def test_embedded_tracking_uri_is_a_sqlite_file_in_the_state_dir(settings):
    assert settings.tracking_uri == f"sqlite:///{settings.project_dir / '.xgbops' / 'mlflow.db'}"


def test_compiled_trees_are_cached_per_user_unless_told_or_turned_off(project, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(project / "cache"))
    assert load_settings(project_dir=project).compiled_cache_path == (
        project / "cache" / "xgbops" / "trees"
    )
    monkeypatch.setenv("XGBOPS_SERVE__COMPILED_CACHE", "build/trees")
    assert load_settings(project_dir=project).compiled_cache_path == project / "build" / "trees"
    monkeypatch.setenv("XGBOPS_SERVE__COMPILED_PREDICTOR", "false")
    assert load_settings(project_dir=project).compiled_cache_path is None


def test_mlflow_tracking_uri_from_the_environment_wins(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert load_settings(project_dir=project).tracking_uri == "http://mlflow.example:5000"


def test_environment_overrides_nested_training_values(project, monkeypatch):
    monkeypatch.setenv("XGBOPS_TRAIN__PARAMS__MAX_DEPTH", "3")
    monkeypatch.setenv("XGBOPS_TRAIN__NUM_BOOST_ROUND", "7")
    monkeypatch.setenv("XGBOPS_TRAIN__PROMOTION__METRIC", "log_loss")
    settings = load_settings(project_dir=project)
    assert settings.train.params["max_depth"] == 3  # read as a YAML scalar, not "3"
    assert settings.train.params["eta"] == 0.05  # the rest of the YAML is kept
    assert settings.train.num_boost_round == 7
    assert settings.train.promotion.greater_is_better is False


def test_config_paths_come_from_the_environment(project, monkeypatch):
    train = yaml.safe_load((project / "config" / "train.yaml").read_text())
    train["model_name"] = "other-model"
    _write(project / "other.yaml", train)
    monkeypatch.setenv("XGBOPS_TRAIN_CONFIG", "other.yaml")
    assert load_settings(project_dir=project).train.model_name == "other-model"


def test_missing_file_is_named(project):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_settings(project_dir=project, train_config="nope.yaml")


def test_invalid_yaml_is_named(project):
    (project / "broken.yaml").write_text("model_name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_settings(project_dir=project, train_config="broken.yaml")


def test_non_mapping_yaml_is_rejected(project):
    (project / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_settings(project_dir=project, train_config="list.yaml")


def test_every_invalid_training_value_is_reported_with_file_and_field(project):
    path = _write(
        project / "bad.yaml",
        {"model_name": "m", "num_boost_round": 0, "promotion": {"metric": "speed"}, "typo": 1},
    )
    with pytest.raises(ConfigError) as error:
        load_settings(project_dir=project, train_config=path)
    message = str(error.value)
    assert f"{path}: num_boost_round: Input should be greater than or equal to 1" in message
    assert f"{path}: promotion.metric: Value error, unknown metric 'speed'" in message
    assert f"{path}: typo: Extra inputs are not permitted" in message


def test_only_binary_objectives_are_accepted(project):
    path = _write(
        project / "t.yaml", {"model_name": "m", "params": {"objective": "reg:squarederror"}}
    )
    with pytest.raises(ConfigError, match="objective must be binary:logistic"):
        load_settings(project_dir=project, train_config=path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["features"][1].update(min=10, max=1), "min (10.0) is greater than max (1.0)"),
        (lambda d: d["features"][0]["categories"].append("KS"), "duplicate categories: ['KS']"),
        (lambda d: d["features"].append(dict(d["features"][1])), "duplicate feature names"),
        (lambda d: d["features"][1].update(type="text"), "does not match any of the expected tags"),
        (lambda d: d["target"].update(negative="yes"), "positive and negative labels must differ"),
        (lambda d: d["features"][1].update(name="churn"), "is also listed as a feature"),
        (lambda d: d["features"][1].update(max=float("inf")), "must be finite"),
        (lambda d: d.pop("target"), "target: Field required"),
    ],
)
def test_invalid_dataset_descriptions_are_rejected(project, mutate, expected):
    dataset = yaml.safe_load((project / "config" / "dataset.yaml").read_text())
    mutate(dataset)
    path = _write(project / "dataset.yaml", dataset)
    with pytest.raises(ConfigError) as error:
        load_settings(project_dir=project, dataset_config=path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_settings_are_immutable(settings):
    with pytest.raises(Exception, match="frozen"):
        settings.reports_dir = Path("elsewhere")


def test_to_sqlalchemy_url_names_psycopg_for_postgresql_only() -> None:
    assert to_sqlalchemy_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    for url in ("postgresql+psycopg://u@h/db", "sqlite:////tmp/x.db", "mysql://u@h/db"):
        assert to_sqlalchemy_url(url) == url


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("1.5h", timedelta(minutes=90)), ("7D", timedelta(days=7))],
)
def test_durations_are_a_number_and_a_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["24", "0m", "-2m", "soon", "5 minutes"])
def test_a_duration_without_a_unit_or_not_positive_is_refused(text):
    with pytest.raises(ValueError, match=f"invalid duration '{text}'"):
        parse_duration(text)


def test_schedule_durations_come_from_the_environment_in_both_syntaxes(project, monkeypatch):
    monkeypatch.setenv("XGBOPS_MONITORING__FOLLOW__DRIFT_EVERY", "2h")
    monkeypatch.setenv("XGBOPS_MONITORING__FOLLOW__MLFLOW_EVERY", "PT10M")
    follow = load_settings(project_dir=project).monitoring.follow
    assert (follow.drift_every, follow.mlflow_every) == (timedelta(hours=2), timedelta(minutes=10))
    assert follow.predictions_every == timedelta(minutes=1)
    monkeypatch.setenv("XGBOPS_MONITORING__FOLLOW__DRIFT_EVERY", "0s")
    with pytest.raises(ConfigError, match="monitoring.follow.drift_every: .*invalid duration '0s'"):
        load_settings(project_dir=project)
