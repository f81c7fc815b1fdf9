"""Training: data + model + tracking composed into one tracked, registered, maybe promoted run.

``train`` reads and checks the data, fits the booster with an evaluation set and early
stopping, evaluates it on the holdout, logs everything to MLflow, registers a new version and
moves the ``champion`` alias to it only if it beats the current champion on the configured
holdout metric. ``evaluate_version`` and ``promote_version`` are the last two steps alone.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import structlog

from xgbops import baselines, evaluate
from xgbops.config import DatasetConfig, Promotion, Settings
from xgbops.data import Splits, labels, load_dataset, load_splits, split_dataset, write_report
from xgbops.model import Featurizer, Model, ModelFormatError
from xgbops.champion import CHALLENGER_ALIAS, CHAMPION_ALIAS
from xgbops.dataversion import DATA_VERSION_TAG, version_tags
from xgbops.rollout.state import read_state
from xgbops.fitting import FitResult, RoundCallback, features_of, fit_model, training_params
from xgbops.tracking import Tracker, git_commit

log = structlog.get_logger(__name__)


@dataclass
class PromotionDecision:
    """Whether a version became champion, and the scores that decided it."""

    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    reason: str
    #: Each baseline's score on ``metric``, fitted on the same split (see xgbops.baselines).
    baselines: dict[str, float] = field(default_factory=dict)
    #: How much the challenger had to beat the champion and every baseline by.
    margin: float = 0.0
    #: Not promoted, yet close enough to try on live traffic: it took the ``challenger``
    #: alias (see ``promotion.challenger_within`` and docs/guide/rollout.md).
    challenger_alias: bool = False

    def summary(self) -> str:
        """One line for people: the decision and the scores that decided it."""
        champion = (
            "no champion yet"
            if self.champion_version is None
            else f"champion v{self.champion_version} {self.metric}={self.champion_score:.4f}"
        )
        others = "".join(f", {name} baseline {v:.4f}" for name, v in self.baselines.items())
        verdict = "PROMOTED" if self.promoted else "kept champion"
        trial = (
            "; now the challenger alias: `xgbops rollout start`" if self.challenger_alias else ""
        )
        return (
            f"{verdict}: challenger v{self.challenger_version} "
            f"{self.metric}={self.challenger_score:.4f} vs {champion}{others} "
            f"({self.reason}){trial}"
        )


@dataclass
class TrainingResult:
    """What a training run produced, for the CLI, the API and notifications."""

    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float]
    best_iteration: int
    duration_seconds: float
    decision: PromotionDecision | None
    report_dir: Path
    params: dict[str, Any] = field(default_factory=dict)
    #: Holdout metrics of each baseline fitted beside the candidate.
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for pipelines and the API's retraining jobs."""
        data = asdict(self)
        data["report_dir"] = str(self.report_dir)
        return data

    def write(self, path: Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path


@dataclass
class EvaluationResult:
    """Holdout metrics of one registered version."""

    model_name: str
    version: str
    metrics: dict[str, float]
    report_dir: Path


def score(
    model: Model, frame: pd.DataFrame, dataset: DatasetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """True 0/1 labels and predicted probabilities for a checked frame."""
    y_true = labels(frame, dataset).to_numpy()
    return y_true, model.predict_proba(features_of(frame, model.featurizer))


@dataclass
class _Candidate:
    """A freshly fitted model and what the run logs about it."""

    fitted: FitResult
    holdout: pd.DataFrame
    holdout_labels: np.ndarray
    holdout_scores: np.ndarray
    metrics: dict[str, float]
    params: dict[str, Any]
    baselines: dict[str, dict[str, float]]


def train(
    settings: Settings,
    *,
    promote: bool = True,
    force: bool = False,
    on_round: RoundCallback | None = None,
) -> TrainingResult:
    """Train, log, register and (if it wins, or ``force``) promote a new model version.

    Args:
        settings: the loaded settings (dataset, training parameters, tracking URI).
        promote: decide the champion at the end; False leaves that to :func:`promote_version`.
        force: make the new version champion whatever the scores.
        on_round: progress callback, called after each boosting round.

    Raises:
        xgbops.data.DataError: the data file cannot be read.
        xgbops.data.DataValidationError: the data failed its checks.
    """
    started = time.perf_counter()
    dataset = settings.dataset
    report_dir = settings.reports_path / "training"
    if settings.engine == "local":
        frame, data_report = load_dataset(dataset, settings.data_path)
        for directory in (settings.reports_path, report_dir):
            write_report(data_report, directory)
        candidate = _fit_candidate(settings, frame, data_report.sha256, on_round)
    else:
        frame, candidate = _fit_on_cluster(settings, report_dir, on_round)
    _write_evaluation(candidate, dataset, report_dir)

    tracker = Tracker(settings)
    commit = git_commit(settings.project_dir)
    # The data version (DVC's md5) and the commit go on the run, the version and the model's
    # own metadata (what /model shows): `xgbops data checkout --version N` starts from them.
    data_tags = version_tags(settings.data_path, commit)
    candidate.fitted.model.metadata.update(data_tags)
    tags = {
        "xgbops.dataset": dataset.name,
        "xgbops.dataset_sha256": candidate.params["dataset_sha256"],
    }
    tags.update(data_tags)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with tracker.run(f"{settings.model_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}", tags) as run_id:
        structlog.contextvars.bind_contextvars(run_id=run_id)
        version = _log_and_register(tracker, run_id, settings, frame, candidate)
        tracker.tag_version(settings.model_name, version, data_tags)
        structlog.contextvars.bind_contextvars(model_version=version)
        decision = None
        if promote:
            decision = promote_version(
                settings,
                version,
                force=force,
                tracker=tracker,
                holdout=candidate.holdout,
                challenger_metrics=candidate.metrics,
                baseline_metrics=candidate.baselines,
            )
        tracker.export_champion(settings.model_name, settings.serving_path)
        duration = time.perf_counter() - started
        tracker.log_metrics(run_id, {"duration_seconds": duration})
        _write_model_card(
            report_dir,
            settings,
            version=version,
            candidate=candidate,
            decision=decision,
            commit=commit,
        )
        tracker.log_artifacts(run_id, report_dir, "reports")
    structlog.contextvars.unbind_contextvars("run_id", "model_version")
    result = TrainingResult(
        run_id=run_id,
        model_name=settings.model_name,
        version=version,
        metrics=candidate.metrics,
        best_iteration=candidate.fitted.best_iteration,
        duration_seconds=duration,
        decision=decision,
        report_dir=report_dir,
        params=candidate.params,
        baselines=candidate.baselines,
    )
    result.write(report_dir / "result.json")
    log.info("training.finished", version=version, run_id=run_id, **candidate.metrics)
    _ship_to_monitoring(settings, tracker, run_id, decision)
    return result


def _ship_to_monitoring(
    settings: Settings, tracker: Tracker, run_id: str, decision: PromotionDecision | None
) -> None:
    """Ship the run (and the champion it replaced) to the monitoring sink: a warning, never
    a failed training, when the sink is unreachable (``xgbops monitor sync-mlflow`` catches up)."""
    replaced = decision.champion_version if decision and decision.promoted else None
    try:
        from xgbops.monitoring.sync import (  # pylint: disable=import-outside-toplevel
            ship_training,
        )

        shipped = ship_training(settings, tracker, run_id, replaced)
        log.info("monitoring.shipped", run_id=run_id, target=shipped.target)
    except Exception as exc:  # pylint: disable=broad-exception-caught  # see the docstring
        log.warning("monitoring.ship_failed", run_id=run_id, error=str(exc))


def _fit_candidate(
    settings: Settings, frame: pd.DataFrame, sha256: str, on_round: RoundCallback | None
) -> _Candidate:
    """Split, fit and score on the holdout."""
    dataset, config = settings.dataset, settings.train
    splits = split_dataset(frame, dataset, config.split, config.seed)
    fitted = fit_model(splits, dataset, settings, on_round)
    y_true, y_score = score(fitted.model, splits.holdout, dataset)
    return _Candidate(
        fitted=fitted,
        holdout=splits.holdout,
        holdout_labels=y_true,
        holdout_scores=y_score,
        metrics=evaluate.compute_metrics(y_true, y_score, config.threshold),
        params=_run_params(settings, sha256, splits, fitted.best_iteration),
        baselines=_baseline_metrics(settings, splits),
    )


def _fit_on_cluster(
    settings: Settings, report_dir: Path, on_round: RoundCallback | None
) -> tuple[pd.DataFrame, _Candidate]:
    """The Dask engines' read, check and fit (xgbops.distributed); the rest of the run is the
    local one's. Returns the evaluated holdout (what the run logs as its dataset) and the
    candidate."""
    from xgbops import distributed  # pylint: disable=import-outside-toplevel  # dask on demand

    with distributed.connect(settings) as client:
        fit = distributed.fit_on_cluster(settings, client, on_round)
    for directory in (settings.reports_path, report_dir):
        write_report(fit.report, directory)
    y_true, y_score = score(fit.fitted.model, fit.holdout, settings.dataset)
    return fit.holdout, _Candidate(
        fitted=fit.fitted,
        holdout=fit.holdout,
        holdout_labels=y_true,
        holdout_scores=y_score,
        metrics=evaluate.compute_metrics(y_true, y_score, settings.train.threshold),
        params=fit.params,
        baselines=_baseline_metrics(settings, fit.baseline_splits),
    )


def _baseline_metrics(settings: Settings, splits: Splits) -> dict[str, dict[str, float]]:
    """Fit the configured baselines on the train split; their holdout metrics."""
    dataset, config = settings.dataset, settings.train
    featurizer = Featurizer.from_dataset(dataset)
    return baselines.fit_and_score(
        config.baselines,
        features_of(splits.train, featurizer),
        labels(splits.train, dataset).to_numpy(),
        features_of(splits.holdout, featurizer),
        labels(splits.holdout, dataset).to_numpy(),
        threshold=config.threshold,
        seed=config.seed,
    )


def _log_and_register(
    tracker: Tracker, run_id: str, settings: Settings, frame: pd.DataFrame, candidate: _Candidate
) -> str:
    """Log parameters, curves, metrics, dataset and model to the run; register the model."""
    dataset = settings.dataset
    tracker.log_params(run_id, candidate.params)
    tracker.log_curves(run_id, candidate.fitted.history)
    tracker.log_metrics(run_id, {f"holdout_{k}": v for k, v in candidate.metrics.items()})
    tracker.log_metrics(run_id, {"best_iteration": candidate.fitted.best_iteration})
    tracker.log_metrics(run_id, baselines.metric_names(candidate.baselines))
    tracker.log_dataset(frame, settings.data_path, dataset.name, dataset.target.column, "training")
    model = candidate.fitted.model
    model.metadata.update(
        {"model_name": settings.model_name, "run_id": run_id, "trained_at": _now_iso()}
    )
    with tempfile.TemporaryDirectory(prefix="xgbops-model-") as tmp:
        model_dir = model.save(Path(tmp) / "model")  # the artifact keeps this folder name
        example = _input_example(candidate.holdout, dataset)
        output = pd.DataFrame(
            {
                "probability": candidate.holdout_scores[: len(example)],
                "label": [model.label(p) for p in candidate.holdout_scores[: len(example)]],
            }
        )
        model_uri = tracker.log_model(model_dir, example, output)
    return tracker.register(model_uri, settings.model_name, {"run_id": run_id})


def evaluate_version(
    settings: Settings, version: str | None = None, alias: str | None = None
) -> EvaluationResult:
    """Score a registered version (latest by default) on the holdout and write its plots.

    Raises:
        xgbops.tracking.RegistryError: no such version.
    """
    dataset = settings.dataset
    tracker = Tracker(settings)
    info = tracker.version(settings.model_name, version=version, alias=alias)
    model = tracker.load_model(settings.model_name, version=info.version)
    holdout = _holdout(settings)
    y_true, y_score = score(model, holdout, dataset)
    result_metrics = evaluate.compute_metrics(y_true, y_score, model.threshold)
    report_dir = settings.reports_path / "evaluation"
    _write_plots(model, y_true, y_score, report_dir)
    summary = {
        "model_name": settings.model_name,
        "version": info.version,
        "metrics": result_metrics,
    }
    (report_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return EvaluationResult(settings.model_name, info.version, result_metrics, report_dir)


def promote_version(
    settings: Settings,
    version: str | None = None,
    *,
    force: bool = False,
    tracker: Tracker | None = None,
    holdout: pd.DataFrame | None = None,
    challenger_metrics: dict[str, float] | None = None,
    baseline_metrics: dict[str, dict[str, float]] | None = None,
) -> PromotionDecision:
    """Give ``version`` (latest by default) the champion alias if it beats the champion and
    every baseline by ``promotion.margin``.

    All are scored on the same, current holdout, so a champion trained on older data is
    judged fairly; if the champion cannot score it (e.g. its features differ), its logged
    holdout metric is used instead. A tie keeps the champion. Without ``baseline_metrics``
    the baselines are fitted again on the current split.
    """
    dataset, config = settings.dataset, settings.train
    metric = config.promotion.metric
    tracker = tracker or Tracker(settings)
    name = settings.model_name
    challenger = tracker.version(name, version=version)
    if holdout is None or baseline_metrics is None:
        splits = evaluation_splits(settings)
        holdout = splits.holdout if holdout is None else holdout
        if baseline_metrics is None:
            baseline_metrics = _baseline_metrics(settings, splits)
    if challenger_metrics is None:
        challenger_metrics = _holdout_metrics(
            tracker.load_model(name, challenger.version), holdout, dataset
        )
    challenger_score = challenger_metrics[metric]
    champion = tracker.champion(name)
    champion_score: float | None = None
    if champion is not None:
        champion_score = _champion_score(tracker, champion, holdout, dataset, metric)
    decision = PromotionDecision(
        metric=metric,
        challenger_version=challenger.version,
        challenger_score=challenger_score,
        champion_version=None if champion is None else champion.version,
        champion_score=champion_score,
        promoted=False,
        reason="",
        baselines={key: scores[metric] for key, scores in baseline_metrics.items()},
        margin=config.promotion.margin,
    )
    decision.promoted, decision.reason = _verdict(decision, config.promotion, force)
    if decision.promoted:
        tracker.set_champion(name, challenger.version)
        tracker.export_champion(name, settings.serving_path)
    elif (
        _worth_a_trial(decision, config.promotion) and not read_state(settings.serving_path).active
    ):
        tracker.set_alias(name, CHALLENGER_ALIAS, challenger.version)
        decision.challenger_alias = True
    _record_decision(tracker, challenger.run_id, name, decision)
    log.info("promotion.decided", **asdict(decision))
    return decision


def _worth_a_trial(decision: PromotionDecision, promotion: Promotion) -> bool:
    """Beats every baseline and comes within ``challenger_within`` of the champion (a version
    on trial already is never replaced: the caller checks no rollout runs)."""
    within, champion = promotion.challenger_within, decision.champion_score
    if within is None or champion is None:
        return False
    if decision.champion_version == decision.challenger_version:
        return False
    higher, candidate = promotion.greater_is_better, decision.challenger_score
    if baselines.losing_to(candidate, decision.baselines, higher, promotion.margin):
        return False
    return (champion - candidate if higher else candidate - champion) <= within


def _verdict(decision: PromotionDecision, promotion: Promotion, force: bool) -> tuple[bool, str]:
    """The promotion rule: beat the champion and every baseline by the margin (or be forced)."""
    metric, margin, challenger = decision.metric, decision.margin, decision.challenger_score
    higher = promotion.greater_is_better
    losing = baselines.losing_to(challenger, decision.baselines, higher, margin)
    if decision.champion_version == decision.challenger_version:
        return False, "already champion"
    if force:
        return True, "forced"
    if losing:
        return False, f"{metric} does not beat the {', '.join(losing)} baseline by {margin}"
    if decision.champion_version is None or decision.champion_score is None:
        return True, "no champion to beat"
    if baselines.beats(challenger, decision.champion_score, higher, margin):
        return True, f"better {metric}"
    return False, f"{metric} not better by {margin} (a tie keeps the champion)"


def _holdout(settings: Settings) -> pd.DataFrame:
    """The holdout rows as ``train`` split them (same data, same seed)."""
    return evaluation_splits(settings).holdout


def evaluation_splits(settings: Settings) -> Splits:
    """The split ``train`` evaluated its candidate on, by the settings' engine: the local
    split of the dataset, or the Dask engines' hash split of the partitioned data (on the
    cluster, with the same holdout sample), so that a later ``evaluate`` or ``promote`` scores
    the very rows training did.

    Raises:
        DataError, DataValidationError: the dataset cannot be used.
        xgbops.distributed.ClusterError: the engine's cluster cannot be reached.
    """
    if settings.engine == "local":
        return load_splits(settings)
    from xgbops import distributed  # pylint: disable=import-outside-toplevel  # dask on demand

    return distributed.evaluation_splits(settings)


def _champion_score(
    tracker: Tracker, champion: Any, holdout: pd.DataFrame, dataset: DatasetConfig, metric: str
) -> float | None:
    try:
        model = tracker.load_model(champion.name, champion.version)
        return _holdout_metrics(model, holdout, dataset)[metric]
    except (ModelFormatError, KeyError, ValueError) as exc:
        log.warning("promotion.champion_not_rescored", version=champion.version, error=str(exc))
        logged = champion.metrics.get(f"holdout_{metric}")
        return None if logged is None else float(logged)


def _holdout_metrics(
    model: Model, holdout: pd.DataFrame, dataset: DatasetConfig
) -> dict[str, float]:
    y_true, y_score = score(model, holdout, dataset)
    return evaluate.compute_metrics(y_true, y_score, model.threshold)


def _record_decision(tracker: Tracker, run_id: str, name: str, decision: PromotionDecision) -> None:
    values = {"promotion_challenger_score": decision.challenger_score}
    if decision.champion_score is not None:
        values["promotion_champion_score"] = decision.champion_score
    tracker.log_metrics(run_id, values)
    tags = {
        "promotion.decision": "promoted" if decision.promoted else "rejected",
        "promotion.reason": decision.reason,
        "promotion.metric": decision.metric,
        "promotion.previous_champion": decision.champion_version or "",
        "promotion.challenger": str(decision.challenger_alias).lower(),
    }
    tracker.set_tags(run_id, tags)
    tracker.tag_version(name, decision.challenger_version, tags)


def _input_example(frame: pd.DataFrame, dataset: DatasetConfig) -> pd.DataFrame:
    """A few rows typed as clients send them, so the logged signature says long, not double."""
    whole = {
        f.name: "int64"
        for f in dataset.features
        if f.type == "numeric" and f.integer and not f.nullable
    }
    return frame[dataset.feature_names].head(5).astype(whole)


def _write_evaluation(candidate: _Candidate, dataset: DatasetConfig, report_dir: Path) -> None:
    fitted, y_true, y_score = candidate.fitted, candidate.holdout_labels, candidate.holdout_scores
    _write_plots(fitted.model, y_true, y_score, report_dir)
    evaluate.plot_learning_curve(fitted.history, report_dir / "learning_curve.png")
    predictions = candidate.holdout[dataset.feature_names].copy()
    predictions["label"] = y_true
    predictions["probability"] = y_score
    predictions.to_csv(report_dir / "holdout_predictions.csv", index=False)
    # The numbers alone, for `dvc metrics show/diff` (dvc.yaml's train stage).
    summary = {"best_iteration": fitted.best_iteration, "holdout": candidate.metrics}
    (report_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


def _write_plots(model: Model, y_true: np.ndarray, y_score: np.ndarray, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    names = [model.negative_label, model.positive_label]
    evaluate.plot_roc(y_true, y_score, report_dir / "roc_curve.png")
    evaluate.plot_precision_recall(y_true, y_score, report_dir / "pr_curve.png")
    evaluate.plot_confusion_matrix(
        y_true, y_score, model.threshold, names, report_dir / "confusion_matrix.png"
    )
    evaluate.plot_feature_importance(
        model.feature_importance(), report_dir / "feature_importance.png"
    )


def _run_params(
    settings: Settings, sha256: str, splits: Splits, best_iteration: int
) -> dict[str, Any]:
    return {
        **training_params(settings),
        "dataset_sha256": sha256,
        "rows_train": len(splits.train),
        "rows_validation": len(splits.validation),
        "rows_holdout": len(splits.holdout),
        "best_iteration": best_iteration,
    }


def _write_model_card(
    report_dir: Path,
    settings: Settings,
    *,
    version: str,
    candidate: _Candidate,
    decision: PromotionDecision | None,
    commit: str | None,
) -> Path:
    params, metrics = candidate.params, candidate.metrics
    dataset, config = settings.dataset, settings.train
    rows = "\n".join(baselines.comparison_table(metrics, candidate.baselines))
    features = "\n".join(f"- `{f.name}` ({f.type}): {f.description}" for f in dataset.features)
    promotion = decision.summary() if decision else "not decided in this run (`xgbops promote`)"
    data_version = candidate.fitted.model.metadata.get(DATA_VERSION_TAG, "unknown")
    card = f"""# Model card: {settings.model_name} v{version}

- **Trained:** {_now_iso()} from commit `{commit or 'unknown'}`
- **Task:** binary classification of `{dataset.target.column}`
  (positive = `{dataset.target.positive}`), threshold {config.threshold}
- **Data:** {dataset.name}, `{dataset.path}`, sha256 `{params['dataset_sha256']}`;
  {params['rows_train']} train / {params['rows_validation']} validation /
  {params['rows_holdout']} holdout rows (seed {config.seed})
- **Data version (DVC md5):** `{data_version}`; restore it with
  `xgbops data checkout --version {version}`
- **Estimator:** XGBoost booster, best round {params['best_iteration']}
- **Champion alias (`{CHAMPION_ALIAS}`):** {promotion}

## Holdout metrics, beside the baselines

A candidate becomes champion only if it beats the champion and every baseline on
`{config.promotion.metric}` by {config.promotion.margin}.

{rows}

## Inputs

{features}

## Intended use and limits

{dataset.description} Scores are probabilities for ranking and triage; they are only as good
as the match between live data and the training data, so watch for drift before trusting them.
"""
    path = report_dir / "model_card.md"
    path.write_text(card, encoding="utf-8")
    return path


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
