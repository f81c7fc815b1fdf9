"""Fitting the booster, the part both training engines share: the parameters, the features
(the predictor's own featuriser) and the model cut at its best round.

The local engine fits here (:func:`fit_model`); the Dask engine (:mod:`xgbops.distributed`)
fits on its cluster and builds the same :class:`~xgbops.model.Model` with :func:`best_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import xgboost as xgb

from xgbops.config import DatasetConfig, Settings
from xgbops.data import Splits, labels
from xgbops.model import Featurizer, Matrix, Model

#: Called after each boosting round with (round, total rounds).
RoundCallback = Callable[[int, int], None]


@dataclass
class FitResult:
    """A fitted model with its per-round evaluation history."""

    model: Model
    history: dict[str, dict[str, list[float]]]
    best_iteration: int


def training_params(settings: Settings) -> dict[str, Any]:
    """The parameters every training run logs, whichever engine fits it."""
    config = settings.train
    return {
        **{f"xgb_{key}": value for key, value in config.params.items()},
        "num_boost_round": config.num_boost_round,
        "early_stopping_rounds": config.early_stopping_rounds,
        "seed": config.seed,
        "threshold": config.threshold,
        "holdout_size": config.split.holdout_size,
        "validation_size": config.split.validation_size,
        "promotion_metric": config.promotion.metric,
        "dataset": settings.dataset.name,
    }


def best_model(
    booster: xgb.Booster, featurizer: Featurizer, settings: Settings
) -> tuple[Model, int]:
    """The model cut at the booster's best round (early stopping), and that round."""
    best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
    target = settings.dataset.target
    model = Model(
        featurizer=featurizer,
        booster=booster[: best + 1],
        positive_label=target.positive,
        negative_label=target.negative,
        threshold=settings.train.threshold,
    )
    return model, best


class _RoundProgress(xgb.callback.TrainingCallback):
    def __init__(self, total: int, on_round: RoundCallback) -> None:
        super().__init__()
        self.total, self.on_round = total, on_round

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.on_round(epoch + 1, self.total)
        return False


def features_of(frame: pd.DataFrame, featurizer: Featurizer) -> Matrix:
    """Featurise a checked data frame with the same code the predictor uses."""
    return featurizer.transform_columns(
        {name: frame[name].to_numpy(dtype=object) for name in featurizer.input_names}
    )


def fit_model(
    splits: Splits,
    dataset: DatasetConfig,
    settings: Settings,
    on_round: RoundCallback | None = None,
) -> FitResult:
    """Fit a booster on the train split, early-stopping on the validation split.

    Returns:
        The model cut at its best round, and the train/validation curves.
    """
    config = settings.train
    featurizer = Featurizer.from_dataset(dataset)
    names = featurizer.output_names
    dtrain = xgb.DMatrix(
        features_of(splits.train, featurizer),
        label=labels(splits.train, dataset),
        feature_names=names,
    )
    dvalid = xgb.DMatrix(
        features_of(splits.validation, featurizer),
        label=labels(splits.validation, dataset),
        feature_names=names,
    )
    history: dict[str, dict[str, list[float]]] = {}
    params = {"seed": config.seed, **config.params}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=config.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
        callbacks=[_RoundProgress(config.num_boost_round, on_round)] if on_round else None,
    )
    model, best = best_model(booster, featurizer, settings)
    return FitResult(model=model, history=history, best_iteration=best)
