"""Baselines every candidate must beat: simple models fitted on the candidate's own split.

A booster that scores no better than a logistic regression, or than always answering the
training prior, is not worth serving, whatever the last champion scored. The baselines see
exactly what the booster sees: the same featuriser (so categories are one-hot, unknown values
missing), the same train rows, the same holdout, the same metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xgbops import evaluate

#: The baselines ``train.baselines`` may name.
BaselineName = Literal["majority", "logistic"]
BASELINE_NAMES: Final = get_args(BaselineName)

#: Inverse L2 strength of the logistic baseline (scikit-learn's default).
LOGISTIC_C: Final = 1.0


def _estimator(name: str, seed: int) -> Any:
    """An unfitted scikit-learn estimator for one baseline.

    ``majority`` answers the training prior as its probability (so its label is the majority
    class); ``logistic`` imputes the featuriser's NaNs with the median, scales, and fits an
    L2-regularised logistic regression.
    """
    if name == "majority":
        return DummyClassifier(strategy="prior")
    if name == "logistic":
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=LOGISTIC_C, max_iter=2000, random_state=seed),
        )
    raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINE_NAMES)}")


def fit_and_score(
    names: Sequence[str],
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    x_holdout: npt.NDArray[np.float32],
    y_holdout: npt.NDArray[np.int64],
    *,
    threshold: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Fit each baseline on the train rows and compute its holdout metrics.

    Args:
        names: baselines to fit, from :data:`BASELINE_NAMES`.
        x_train, y_train: the featurised train split and its 0/1 labels.
        x_holdout, y_holdout: the featurised holdout and its 0/1 labels.
        threshold: the candidate's decision threshold, so label metrics compare alike.
        seed: random state of the estimators that have one.

    Returns:
        ``{name: {metric: value}}`` with the same metrics as the candidate's.

    Raises:
        ValueError: an unknown baseline name.
    """
    scores: dict[str, dict[str, float]] = {}
    for name in names:
        estimator = _estimator(name, seed).fit(x_train, y_train)
        probabilities = np.asarray(estimator.predict_proba(x_holdout)[:, 1], dtype=np.float64)
        scores[name] = evaluate.compute_metrics(y_holdout, probabilities, threshold)
    return scores


def beats(challenger: float, other: float, greater_is_better: bool, margin: float) -> bool:
    """True when ``challenger`` is better than ``other`` by more than ``margin``.

    With a margin of 0 this is :func:`xgbops.evaluate.is_better`: a tie does not win.
    """
    if greater_is_better:
        return evaluate.is_better(challenger, other + margin, greater_is_better)
    return evaluate.is_better(challenger, other - margin, greater_is_better)


def losing_to(
    score: float, baselines: Mapping[str, float], greater_is_better: bool, margin: float
) -> list[str]:
    """The baselines (``{name: score}``) that ``score`` does not beat by ``margin``: none
    means it may be promoted."""
    return [
        name
        for name, other in baselines.items()
        if not beats(score, other, greater_is_better, margin)
    ]


def metric_names(baselines: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Baseline metrics flattened as MLflow metric names: ``baseline_<name>_<metric>``.

    They do not start with ``holdout_``, so they never pass for the candidate's own metrics.
    """
    return {
        f"baseline_{name}_{metric}": value
        for name, metrics in baselines.items()
        for metric, value in metrics.items()
    }


def comparison_table(
    candidate: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """A Markdown table of the candidate's holdout metrics beside each baseline's."""
    names = list(baselines)
    header = "| metric | candidate | " + " | ".join(names) + " |"
    rule = "|---|---|" + "---|" * len(names)
    rows = [
        f"| {metric} | {value:.4f} | "
        + " | ".join(f"{baselines[name].get(metric, float('nan')):.4f}" for name in names)
        + " |"
        for metric, value in candidate.items()
    ]
    return [header, rule, *rows]
