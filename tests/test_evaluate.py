"""Metrics and plots from labels and scores."""

from __future__ import annotations

import numpy as np
import pytest

from xgbops import evaluate

Y = np.array([0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])


def test_metrics_match_hand_computed_values():
    m = evaluate.compute_metrics(Y, P, threshold=0.5)
    # predictions at 0.5: 0 1 1 0 1 0 -> TP=2 FP=1 FN=1 TN=2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 positive/negative pairs ranked right
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P)))
    assert set(m) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
    }


def test_threshold_changes_label_metrics_only():
    low, high = evaluate.compute_metrics(Y, P, 0.05), evaluate.compute_metrics(Y, P, 0.95)
    assert low["recall"] == 1.0 and high["recall"] == 0.0
    assert low["roc_auc"] == high["roc_auc"]


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([1, 1]), np.array([0.2, 0.3]), "single class"),
        (np.array([0, 1]), np.array([0.2]), "2 labels but 1 scores"),
    ],
)
def test_undefined_metrics_are_refused(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        evaluate.compute_metrics(labels, scores, 0.5)


@pytest.mark.parametrize(
    ("challenger", "champion", "greater", "expected"),
    [
        (0.91, 0.90, True, True),
        (0.90, 0.90, True, False),  # a tie keeps the champion
        (0.89, 0.90, True, False),
        (0.10, 0.20, False, True),  # lower log-loss is better
        (0.20, 0.20, False, False),
    ],
)
def test_is_better_is_strict(challenger, champion, greater, expected):
    assert evaluate.is_better(challenger, champion, greater) is expected


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_every_plot_is_written_as_a_png(tmp_path):
    figures = [
        evaluate.plot_roc(Y, P, tmp_path / "roc.png"),
        evaluate.plot_precision_recall(Y, P, tmp_path / "pr.png"),
        evaluate.plot_confusion_matrix(Y, P, 0.5, ["no", "yes"], tmp_path / "cm.png"),
        evaluate.plot_feature_importance({"a": 3.0, "b": 1.0}, tmp_path / "fi.png"),
        evaluate.plot_learning_curve(
            {
                "train": {"auc": [0.7, 0.8]},
                "validation": {"auc": [0.6, 0.7], "logloss": [0.5, 0.4]},
            },
            tmp_path / "sub" / "curve.png",
        ),
    ]
    names = ["roc.png", "pr.png", "cm.png", "fi.png", "sub/curve.png"]
    assert all(_is_png(tmp_path / name) for name in names)
    assert [len(f.axes) for f in figures] == [1, 1, 2, 1, 2]  # the matrix has a colour bar


def test_plotting_leaves_the_global_matplotlib_backend_alone(tmp_path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    before = matplotlib.get_backend()
    evaluate.plot_roc(Y, P, tmp_path / "roc.png")
    assert matplotlib.get_backend() == before
