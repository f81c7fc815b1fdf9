"""Metrics and plots from true labels and predicted probabilities.

Pure functions of arrays: nothing here trains, loads or logs. Plots are built with
matplotlib's object API (no pyplot, no global backend switch, so notebooks keep theirs),
written as PNG files, and the figure is returned for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn import metrics

Labels = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float64]


def compute_metrics(y_true: Labels, y_score: Scores, threshold: float) -> dict[str, float]:
    """Holdout metrics of a binary classifier.

    Args:
        y_true: 0/1 labels.
        y_score: probabilities of the positive class.
        threshold: probability at or above which a row is predicted positive.

    Returns:
        accuracy, precision, recall, f1, roc_auc, pr_auc, log_loss and brier, as floats.

    Raises:
        ValueError: the inputs differ in length or ``y_true`` holds a single class.
    """
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_true)} labels but {len(y_score)} scores")
    if len(np.unique(y_true)) < 2:
        raise ValueError("the labels hold a single class; ROC-AUC is undefined")
    y_pred = (y_score >= threshold).astype(np.int64)
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y_true, y_score)),
        "pr_auc": float(metrics.average_precision_score(y_true, y_score)),
        "log_loss": float(metrics.log_loss(y_true, y_score, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y_true, y_score)),
    }


def is_better(challenger: float, champion: float, greater_is_better: bool) -> bool:
    """True only if ``challenger`` strictly beats ``champion``: a tie keeps the champion."""
    return challenger > champion if greater_is_better else challenger < champion


def plot_learning_curve(history: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Figure:
    """Plot each evaluation metric per boosting round, one panel per metric.

    Args:
        history: ``{dataset: {metric: [value per round]}}`` as XGBoost's ``evals_result``.
        path: the PNG to write.
    """
    metric_names = sorted({m for per_set in history.values() for m in per_set})
    panels = max(len(metric_names), 1)
    fig = Figure(figsize=(5 * panels, 4))
    axes = [fig.add_subplot(1, panels, index + 1) for index in range(panels)]
    for axis, metric in zip(axes, metric_names):
        for dataset, per_set in history.items():
            if metric in per_set:
                axis.plot(per_set[metric], label=dataset)
        axis.set(title=metric, xlabel="boosting round")
        axis.legend()
    return _save(fig, path)


def plot_roc(y_true: Labels, y_score: Scores, path: Path) -> Figure:
    """ROC curve with its AUC."""
    fpr, tpr, _ = metrics.roc_curve(y_true, y_score)
    fig = Figure(figsize=(5, 5))
    axis = fig.add_subplot()
    axis.plot(fpr, tpr, label=f"AUC = {metrics.roc_auc_score(y_true, y_score):.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set(title="ROC curve", xlabel="false positive rate", ylabel="true positive rate")
    axis.legend(loc="lower right")
    return _save(fig, path)


def plot_precision_recall(y_true: Labels, y_score: Scores, path: Path) -> Figure:
    """Precision-recall curve with its average precision."""
    precision, recall, _ = metrics.precision_recall_curve(y_true, y_score)
    ap = metrics.average_precision_score(y_true, y_score)
    fig = Figure(figsize=(5, 5))
    axis = fig.add_subplot()
    axis.plot(recall, precision, label=f"AP = {ap:.3f}")
    axis.axhline(float(np.mean(y_true)), linestyle="--", color="grey", label="base rate")
    axis.set(title="Precision-recall curve", xlabel="recall", ylabel="precision")
    axis.legend(loc="lower left")
    return _save(fig, path)


def plot_confusion_matrix(
    y_true: Labels, y_score: Scores, threshold: float, class_names: Sequence[str], path: Path
) -> Figure:
    """Confusion matrix at the decision threshold, counts in each cell."""
    matrix = metrics.confusion_matrix(
        y_true, (y_score >= threshold).astype(np.int64), labels=[0, 1]
    )
    fig = Figure(figsize=(5, 4))
    axis = fig.add_subplot()
    image = axis.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(col, row, str(count), ha="center", va="center", color=colour)
    axis.set(
        title=f"Confusion matrix (threshold {threshold})",
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=list(class_names),
        yticklabels=list(class_names),
        xlabel="predicted",
        ylabel="actual",
    )
    fig.colorbar(image, ax=axis)
    return _save(fig, path)


def plot_feature_importance(importance: Mapping[str, float], path: Path, top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` most important features (e.g. total gain)."""
    ranked = sorted(importance.items(), key=lambda item: item[1])[-top:]
    fig = Figure(figsize=(7, max(3.0, 0.3 * len(ranked) + 1)))
    axis = fig.add_subplot()
    axis.barh([name for name, _ in ranked], [value for _, value in ranked])
    axis.set(title="Feature importance (total gain)", xlabel="total gain")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Figure:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
