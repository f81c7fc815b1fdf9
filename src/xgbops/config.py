"""Typed settings: the dataset and training YAML files plus environment overrides.

Everything configurable in xgbops is read here, once, and handed to the other modules as
arguments. Nothing is read at import time: call :func:`load_settings`.

Precedence, highest first: keyword arguments, environment (``XGBOPS_*``; nested keys joined
with ``__``, e.g. ``XGBOPS_TRAIN__PARAMS__MAX_DEPTH=4``), the YAML files.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from xgbops import XgbopsError

ENV_PREFIX = "XGBOPS_"
DEFAULT_DATASET_CONFIG = Path("config/dataset.yaml")
DEFAULT_TRAIN_CONFIG = Path("config/train.yaml")

#: Holdout metrics a promotion may be decided on, and whether higher is better.
METRIC_DIRECTIONS: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
}


class ConfigError(XgbopsError):
    """A configuration file is missing, unreadable or invalid; the message says where and why."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``24h``, ``90m``, ``7d``, ``1.5h``, ``2w``, ``30s`` as a duration.

    Args:
        text: the number and its unit.
        what: how the error message names it (e.g. ``window``).

    Raises:
        ValueError: not a positive number followed by one of s, m, h, d, w.
    """
    match = _DURATION.match(text)
    duration = (
        timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))}) if match else None
    )
    if duration is None or duration <= timedelta(0):
        raise ValueError(
            f"invalid {what} {text!r}: use a positive number and a unit, e.g. 24h, 90m, 7d"
        )
    return duration


def _duration(value: Any) -> Any:
    """Durations in settings: our short syntax for strings, anything else as pydantic reads it."""
    iso = isinstance(value, str) and value.strip().upper().startswith("P")
    return parse_duration(value) if isinstance(value, str) and not iso else value


#: A positive duration: ``30s``, ``5m``, ``24h``, ``7d``, ISO 8601 (``PT30M``), or a number of
#: seconds in YAML.
Duration = Annotated[timedelta, BeforeValidator(_duration), Field(gt=timedelta(0))]


#: How the p-values of one drift report are adjusted for being tested together.
PValueCorrection = Literal["none", "bonferroni", "benjamini-hochberg"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeature(_Strict):
    """A numeric input; ``min``/``max`` bound the accepted values (inclusive)."""

    name: str = Field(min_length=1)
    type: Literal["numeric"]
    description: str = Field(min_length=1)
    nullable: bool = False
    integer: bool = False
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> NumericFeature:
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("min and max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class CategoricalFeature(_Strict):
    """A categorical input; any value outside ``categories`` is rejected."""

    name: str = Field(min_length=1)
    type: Literal["categorical"]
    description: str = Field(min_length=1)
    nullable: bool = False
    categories: list[str] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique(cls, categories: list[str]) -> list[str]:
        duplicates = sorted({c for c in categories if categories.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate categories: {duplicates}")
        return categories


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class Target(_Strict):
    """The label column and the values that mean positive and negative."""

    column: str = Field(min_length=1)
    positive: str
    negative: str

    @model_validator(mode="after")
    def _distinct(self) -> Target:
        if self.positive == self.negative:
            raise ValueError("positive and negative labels must differ")
        return self


class DataChecks(_Strict):
    """Dataset-level checks beyond the per-column ones."""

    min_positive_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_positive_rate: float = Field(default=0.99, ge=0.0, le=1.0)
    allow_duplicate_rows: bool = False


class DatasetConfig(_Strict):
    """What ``config/dataset.yaml`` describes: where the data is and what each column means."""

    name: str = Field(min_length=1)
    description: str = ""
    path: Path
    target: Target
    checks: DataChecks = DataChecks()
    features: list[Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetConfig:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        if self.target.column in names:
            raise ValueError(f"target column {self.target.column!r} is also listed as a feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        """Input columns in the order the model sees them."""
        return [f.name for f in self.features]

    def feature(self, name: str) -> NumericFeature | CategoricalFeature:
        """Return the feature called ``name``; raises KeyError if there is none."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


class Split(_Strict):
    """How rows are divided into train, validation (early stopping) and holdout."""

    holdout_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    validation_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    stratify: bool = True


class Promotion(_Strict):
    """The holdout metric a new version must beat to become champion."""

    metric: str = "roc_auc"
    #: How much a challenger must beat the champion and every baseline by, in units of
    #: ``metric`` (0: any strict improvement; a tie never wins).
    margin: float = Field(default=0.0, ge=0.0)
    #: A version that beats every baseline but not the champion, by at most this much less
    #: than the champion's ``metric``, takes the ``challenger`` alias: good enough to meet
    #: live traffic (``xgbops rollout start``), which may judge it otherwise. Unset: never.
    challenger_within: float | None = Field(default=0.02, ge=0.0)

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in METRIC_DIRECTIONS:
            raise ValueError(
                f"unknown metric {metric!r}; choose one of {sorted(METRIC_DIRECTIONS)}"
            )
        return metric

    @property
    def greater_is_better(self) -> bool:
        """True when a higher value of the metric is better."""
        return METRIC_DIRECTIONS[self.metric]


class SearchDimension(_Strict):
    """One hyper-parameter of the tuning space: a number between ``low`` and ``high``
    (``int`` or ``float``, ``log`` to sample on a log scale) or one of ``choices``."""

    #: ``int`` and ``float`` are sampled between ``low`` and ``high``; ``categorical`` from
    #: ``choices``.
    type: Literal["int", "float", "categorical"]
    #: Smallest value tried (inclusive).
    low: float | None = None
    #: Largest value tried (inclusive).
    high: float | None = None
    #: Sample on a log scale (for rates and regularisation spanning decades).
    log: bool = False
    #: The values a ``categorical`` dimension takes.
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} dimension needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale dimension needs low > 0")
        return self


class TuneConfig(_Strict):
    """The hyper-parameter search of ``xgbops tune`` (Optuna), under ``tune:`` in train.yaml."""

    #: XGBoost evaluation metric on the validation split that trials optimise and early-stop
    #: on (``auc``, ``aucpr``: higher is better; ``logloss``, ``error``: lower is better).
    metric: str = "auc"
    #: Trials the study holds in all when it ends (finished or pruned): a resumed study runs
    #: only the missing ones; raise it to go on with a finished study.
    trials: int = Field(default=30, ge=1)
    #: Stop starting trials after this long (``10m``, ``1h``); unset: no time limit.
    timeout: Duration | None = None
    #: Processes running trials on the one storage; each booster gets cores / workers threads.
    workers: int = Field(default=1, ge=1)
    #: Optuna storage URL (SQLAlchemy: ``sqlite:///...``, ``postgresql://...``); unset: the
    #: SQLite file ``optuna.db`` in the state folder.
    storage: str | None = None
    #: The study's name in the storage; unset: the registered model name.
    study_name: str | None = Field(default=None, min_length=1)
    #: Boosting rounds a trial runs before pruning may stop it.
    pruning_warmup_rounds: int = Field(default=10, ge=0)
    #: Seconds between a running trial's heartbeats: a trial silent for twice as long (its
    #: process died) is marked failed and run again once.
    heartbeat_seconds: int = Field(default=10, ge=1)
    #: XGBoost parameters to search, each with its range; the others keep train.yaml's values.
    space: dict[str, SearchDimension] = Field(default_factory=dict)

    @property
    def maximize(self) -> bool:
        """True when a higher value of ``metric`` is better."""
        return self.metric.split("@", maxsplit=1)[0] in {"auc", "aucpr", "map", "ndcg", "pre"}


class TrainConfig(_Strict):
    """What ``config/train.yaml`` describes: hyper-parameters, seed, split and promotion."""

    #: Registered model name; None derives ``<dataset name>-xgboost`` (see Settings.model_name).
    model_name: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = 42
    split: Split = Split()
    params: dict[str, Any] = Field(default_factory=dict)
    num_boost_round: int = Field(default=500, ge=1)
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    promotion: Promotion = Promotion()
    #: Simple models fitted beside every candidate on the same split and featuriser
    #: (``majority``: the training prior; ``logistic``: L2-regularised logistic regression);
    #: a candidate that does not beat each by ``promotion.margin`` never becomes champion.
    baselines: list[Literal["majority", "logistic"]] = ["majority", "logistic"]
    #: YAML file whose ``params`` mapping ``xgbops tune`` writes and whose values override
    #: ``params`` above (relative to the project; a missing file changes nothing).
    tuned_params: Path | None = None
    tune: TuneConfig = TuneConfig()

    @field_validator("params")
    @classmethod
    def _binary_objective(cls, params: dict[str, Any]) -> dict[str, Any]:
        # Values from the environment arrive as strings: read them as YAML scalars ("4" -> 4).
        params = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in params.items()}
        objective = params.get("objective", "binary:logistic")
        if objective != "binary:logistic":
            raise ValueError(f"objective must be binary:logistic (got {objective!r})")
        return params


class ServeSettings(_Strict):
    """How the API serves: addresses, workers, limits, history, retraining."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    fastapi_port: int = Field(default=8001, ge=1, le=65535)
    workers: int = Field(default=2, ge=1)
    threads: int = Field(default=2, ge=1)
    #: Most records one /predict/batch request may carry.
    batch_limit: int = Field(default=10_000, ge=1)
    #: Largest request body accepted, in bytes (a 10,000-record batch is about 6 MB).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Longest request header line accepted (name and value), in bytes: longer is a 431 in the
    #: JSON error format from both apps (gunicorn itself refuses lines 8 times longer).
    max_header_bytes: int = Field(default=8192, ge=1024)
    #: How often a worker looks for a newly promoted champion, in seconds.
    reload_interval: float = Field(default=1.0, gt=0)
    #: How often buffered prediction records are written to the database, in seconds.
    history_flush_interval: float = Field(default=0.2, gt=0)
    #: Store every prediction in the history (off only to measure what recording costs).
    record_predictions: bool = True
    #: Folder of the journal and the spool (predictions not yet in the database); relative to
    #: the project. Unset: ``spool`` in the state folder. A volume of its own keeps a full disk
    #: elsewhere from stopping it; when it cannot be written, /ready answers 503.
    spool_dir: Path | None = None
    #: One log line per request (method, path, status, duration_ms, request_id, remote_addr),
    #: written by the app at INFO; the servers' own access logs stay off.
    access_log: bool = True
    #: Most /retrain requests per client address per hour.
    retrain_per_hour: int = Field(default=6, ge=1)
    #: Who trains a /retrain job: ``process``, a child process of the API worker (the embedded
    #: default); ``queue``, the retraining worker (``python -m api.retrain_worker``, the
    #: platform image's ``retrainer`` in compose) that takes queued jobs from the history
    #: database, so the lean serving image never trains.
    retrain_runner: Literal["process", "queue"] = "process"
    #: Behind an MLflow server, how often a worker looks for a new champion in the registry,
    #: in seconds (0: only at start). With the embedded store, ``xgbops`` exports it directly.
    registry_sync_interval: float = Field(default=15.0, ge=0)
    #: Compile the trees of an exported model to native code (treelite/tl2cgen, cached by the
    #: booster's digest) and score with them: about 10x less time per request, the same
    #: probabilities within 1e-6 (checked at every load). Needs a C compiler at export (gcc,
    #: cc or clang, or ``CC``); without one, or with this off, XGBoost scores.
    compiled_predictor: bool = True
    #: Where compiled trees are kept by key (booster digest, tl2cgen version, machine), so a
    #: model exported again is not compiled again; relative to the project. Unset: the user's
    #: cache folder (``$XDG_CACHE_HOME/xgbops/trees``, else ``~/.cache/xgbops/trees``).
    compiled_cache: Path | None = None


class NotifySettings(_Strict):
    """Where results are announced: SMTP (off until ``host`` is set) and the desktop."""

    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    #: STARTTLS after connecting (Mailpit and local relays do not need it).
    smtp_starttls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0)
    sender: str = "xgbops@localhost"
    #: Comma-separated addresses in the environment (``XGBOPS_NOTIFY__RECIPIENTS=a@x,b@y``).
    recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Show a desktop notification when the machine has a desktop.
    desktop: bool = True

    @field_validator("recipients", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class DriftSettings(_Strict):
    """When a feature, or the predicted probability, counts as drifted."""

    #: Population Stability Index at or above which a feature has drifted (0.2 is the usual rule).
    psi_threshold: float = Field(default=0.2, gt=0)
    #: p-value below which the KS / chi-square test says the distributions differ.
    p_value: float = Field(default=0.01, gt=0, lt=1)
    #: How the p-values of one report are adjusted for testing every feature at once. Without
    #: a correction, 20 tests at p < 0.01 flag something in about 1 window in 5 with no drift.
    #: ``benjamini-hochberg`` (scipy's ``false_discovery_control``) keeps that rate at
    #: ``p_value`` yet loses little power when several features really move; ``bonferroni``
    #: is stricter still; ``none`` judges each test alone.
    correction: PValueCorrection = "benjamini-hochberg"
    #: Fewest recent predictions a drift report needs.
    min_samples: int = Field(default=100, ge=10)
    #: Bins for PSI on numeric features (quantiles of the training reference).
    bins: int = Field(default=10, ge=2)
    #: Call the API's /retrain when drift is found (needs ``api_url`` and a retrain token).
    retrain_on_drift: bool = False
    #: A drift already announced (same features, same model versions) is announced, and
    #: retraining requested, again only after this long: checks every 30 minutes must not
    #: mail every 30 minutes. A check that finds no drift ends the episode.
    realert_after: Duration = timedelta(hours=24)


class FollowSettings(_Strict):
    """How often ``xgbops monitor follow`` runs each job (``30s``, ``5m``, ``24h``, ``7d``)."""

    #: Ship the predictions stored since the last run.
    predictions_every: Duration = timedelta(minutes=1)
    #: Sample the machine and the xgbops processes.
    system_every: Duration = timedelta(minutes=1)
    #: Ship every MLflow run and version again (champion flags follow the alias).
    mlflow_every: Duration = timedelta(minutes=5)
    #: Check drift over the last ``drift_window``.
    drift_every: Duration = timedelta(minutes=30)
    drift_window: Duration = timedelta(hours=24)


class MonitoringSettings(_Strict):
    """Where monitoring events go: a local file (default) or Elasticsearch."""

    sink: Literal["local", "elasticsearch"] = "local"
    elasticsearch_url: str | None = Field(default=None)
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_api_key: SecretStr | None = None
    #: Kibana, for importing the saved objects (data views, dashboards).
    kibana_url: str = "http://127.0.0.1:5601"
    #: Index/data-stream names start with this prefix, e.g. ``xgbops-predictions``.
    index_prefix: str = Field(default="xgbops", pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    #: Base URL of the serving API, for drift-triggered retraining.
    api_url: str = "http://127.0.0.1:8000"
    drift: DriftSettings = DriftSettings()
    follow: FollowSettings = FollowSettings()


class SonarSettings(_Strict):
    """The SonarQube server and the quality gate defined as code (``make sonar-gate``)."""

    host_url: str = "http://127.0.0.1:9000"
    token: SecretStr | None = None
    project_key: str = "xgbops"
    gate_name: str = "xgbops"
    #: Jenkins base URL: SonarQube posts analysis results to ``<url>/sonarqube-webhook/``.
    jenkins_url: str = "http://jenkins:8080"


class AuthSettings(_Strict):
    """Who may call the API: keys from ``xgbops keys``, or JWTs from an identity provider.

    Retraining (and every ``admin`` endpoint) always needs a credential; ``enabled`` makes
    scoring need a ``predict`` key and reading a ``read`` key as well.
    """

    #: Require a key (or JWT) with the ``predict`` scope to score and the ``read`` scope to read
    #: the model and the history. Off in the embedded default, on in compose.
    enabled: bool = False
    #: How long a worker trusts a key it has checked, in seconds: a revoked key is refused
    #: within this time, and the database is asked at most once per key in it.
    key_cache_seconds: float = Field(default=10.0, ge=0)
    #: JWKS URL of an identity provider: JWTs signed by one of its keys are accepted, with
    #: their scopes from the ``scope`` (space-separated) or ``scp`` claim. Unset: no JWTs.
    jwks_url: str | None = None
    #: The ``aud`` a JWT must carry (unset: not checked).
    jwt_audience: str | None = None
    #: The ``iss`` a JWT must carry (unset: not checked).
    jwt_issuer: str | None = None
    #: Signature algorithms accepted for JWTs, comma-separated (asymmetric ones only: the
    #: JWKS publishes public keys).
    jwt_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256"]

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        refused = [name for name in value if not name.startswith(("RS", "ES", "PS", "EdDSA"))]
        if refused or not value:
            raise ValueError(f"only asymmetric algorithms are accepted (not {refused or 'none'})")
        return value


class LimitSettings(_Strict):
    """Rate limits per key (per client address when anonymous), in the ``limits`` notation
    (``100/second``, ``6000/minute``, ``10 per 2 seconds``); unset: no limit."""

    #: Scoring requests (``/predict``, ``/predict/batch``, ``/feedback``, each one request).
    predict: str | None = None
    #: Reading requests (``/model``, ``/predictions``, ``/api/v1/metrics``).
    read: str | None = None
    #: Where the counters live: ``redis://host:6379/0`` shares one limit among every worker and
    #: replica; ``memory://`` counts per worker process (each worker allows the full limit).
    storage_uri: str = "memory://"
    #: ``fixed-window`` (one counter per window: cheapest, bursts at a window's edge) or
    #: ``moving-window`` (exact, costlier) or ``sliding-window-counter`` (between the two).
    strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = "fixed-window"


RolloutMode = Literal["off", "shadow", "canary", "ab"]


class RolloutGuardSettings(_Strict):
    """When a rollout stops itself (:mod:`xgbops.rollout.decisions`): checked by every API
    worker every ``interval`` seconds, from the live history."""

    #: Judge running rollouts at all (off: only people stop them).
    enabled: bool = True
    #: Seconds between two judgements.
    interval: float = Field(default=10.0, gt=0)
    #: Labelled predictions each arm needs before the significance test may stop the rollout.
    min_labelled: int = Field(default=100, ge=1)
    #: One-sided p-value under which the challenger's live error rate is significantly worse.
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    #: Requests the challenger must have met before its failures and latency are judged.
    min_requests: int = Field(default=50, ge=1)
    #: Share of the challenger's scorings that may fail (an exception, not a wrong answer).
    max_error_ratio: float = Field(default=0.05, ge=0, le=1)
    #: The challenger's p95 latency may be at most this many times the champion's.
    max_latency_ratio: float = Field(default=3.0, gt=1)


class RolloutSettings(_Strict):
    """A challenger on live traffic (``xgbops rollout``, ``PUT /rollout``, docs/guide/rollout.md).

    These are the defaults a rollout starts with; the running rollout's mode and share live in
    the serving directory's ``rollout.json``, changed at run time without a restart.
    """

    #: ``shadow``: the challenger scores requests off the response path, the champion answers;
    #: ``canary``: ``share`` % of callers get the challenger's answer, ramped by ``steps``;
    #: ``ab``: a fixed split; ``off``: the champion answers alone.
    mode: RolloutMode = "canary"
    #: Percent of callers answered by the challenger (canary, ab), or of requests shadowed.
    share: float = Field(default=10.0, ge=0, le=100)
    #: The canary's traffic steps, in percent; ``xgbops rollout ramp`` takes the next one.
    steps: list[float] = Field(default_factory=lambda: [5.0, 10.0, 25.0, 50.0, 100.0])
    #: The request header that keys a caller (sticky arms); without it, the caller's credential,
    #: else its address.
    key_header: str = "X-Rollout-Key"
    #: Shadow scorings waiting per worker; beyond it they are dropped (and counted), never queued
    #: in front of the champion's answers.
    shadow_queue: int = Field(default=1000, ge=1)
    #: Labelled predictions per arm before the live comparison can recommend a decision.
    min_labelled: int = Field(default=200, ge=1)
    #: Promote when the upper confidence bound of (challenger - champion) live error rate is
    #: below this margin: non-inferiority, the question a promotion really asks.
    non_inferiority_margin: float = Field(default=0.01, ge=0, le=1)
    #: Confidence of every interval the comparison reports.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    guard: RolloutGuardSettings = RolloutGuardSettings()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < step <= 100 for step in value) or value != sorted(set(value)):
            raise ValueError("steps must be increasing percentages in (0, 100]")
        return value


class DaskSettings(_Strict):
    """The Dask cluster of the ``dask`` and ``dask-local`` engines (see docs/guide/scale.md)."""

    #: The scheduler of an existing cluster, e.g. ``tcp://dask-scheduler:8786`` (engine ``dask``).
    scheduler_address: str | None = None
    #: Workers of the ``dask-local`` cluster; unset: the machine's cores / ``threads_per_worker``.
    workers: int | None = Field(default=None, ge=1)
    #: Threads per worker of the ``dask-local`` cluster.
    threads_per_worker: int = Field(default=1, ge=1)
    #: Partitioned input: a folder, a glob or an fsspec URL (``s3://bucket/table/``) of Parquet
    #: or CSV files; unset: the dataset config's path.
    data: str | None = None
    #: Column whose hash decides each row's split (a stable id); unset: the hash of every
    #: feature and the target, so a row keeps its split however the data is partitioned.
    split_key: str | None = None
    #: Size of the partitions a CSV is cut into (Parquet keeps its files' row groups).
    csv_blocksize: str = "64MB"
    #: Seconds to wait for the scheduler to answer before giving up.
    connect_timeout: float = Field(default=30.0, gt=0)


class _YamlSource(PydanticBaseSettingsSource):
    """Loads the dataset and train YAML files named by the other sources."""

    def __init__(
        self, settings_cls: type[BaseSettings], files: dict[str, Path], project_dir: Path
    ) -> None:
        super().__init__(settings_cls)
        self._files = files
        self._project_dir = project_dir

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # pragma: no cover - __call__ is overridden

    def __call__(self) -> dict[str, Any]:
        content = {key: read_yaml(path) for key, path in self._files.items()}
        content["train"] = with_tuned_params(content["train"], self._project_dir)
        return content


def with_tuned_params(train: dict[str, Any], project_dir: Path) -> dict[str, Any]:
    """train.yaml's content with the ``params`` of its ``tuned_params`` file laid over its own.

    Raises:
        ConfigError: the tuned file is invalid, or its ``params`` is not a mapping.
    """
    name = train.get("tuned_params")
    path = project_dir / str(name) if name else None
    if path is None or not path.is_file():
        return train
    tuned = read_yaml(path).get("params") or {}
    if not isinstance(tuned, dict):
        raise ConfigError(f"{path}: params must be a mapping")
    return {**train, "params": {**(train.get("params") or {}), **tuned}}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping.

    Raises:
        ConfigError: the file is missing, is not valid YAML or is not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return content


class Settings(BaseSettings):
    """All settings of one xgbops process.

    Paths are relative to ``project_dir`` unless absolute; use the ``*_path`` properties.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    project_dir: Path = Field(default_factory=Path.cwd)
    dataset_config: Path = DEFAULT_DATASET_CONFIG
    train_config: Path = DEFAULT_TRAIN_CONFIG
    state_dir: Path = Path(".xgbops")
    reports_dir: Path = Path("reports")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "XGBOPS_MLFLOW_TRACKING_URI"),
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "XGBOPS_DATABASE_URL")
    )
    retrain_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("XGBOPS_RETRAIN_TOKEN", "RETRAIN_TOKEN")
    )
    serve: ServeSettings = ServeSettings()
    notify: NotifySettings = NotifySettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    sonar: SonarSettings = SonarSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    rollout: RolloutSettings = RolloutSettings()
    experiment_name: str = "xgbops"
    #: Who reads the data and trains the booster: ``local`` (one process, pandas), ``dask``
    #: (the cluster at ``dask.scheduler_address``) or ``dask-local`` (a LocalCluster started for
    #: the run). The engine never changes what the registered model is.
    engine: Literal["local", "dask", "dask-local"] = "local"
    dask: DaskSettings = DaskSettings()
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    dataset: DatasetConfig
    train: TrainConfig

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init = init_settings()
        paths = _config_paths(init, settings_cls)
        yaml_source = _YamlSource(settings_cls, paths, _project_dir(init, settings_cls))
        return (init_settings, env_settings, yaml_source)

    def resolve(self, path: Path) -> Path:
        """Return ``path`` made absolute against the project directory."""
        return path if path.is_absolute() else self.project_dir / path

    @property
    def model_name(self) -> str:
        """The registered model's name: set in train.yaml, else derived from the dataset."""
        return self.train.model_name or f"{self.dataset.name}-xgboost"

    @property
    def data_path(self) -> Path:
        """The dataset CSV."""
        return self.resolve(self.dataset.path)

    @property
    def state_path(self) -> Path:
        """Project-local directory (ignored by git) for the embedded MLflow store and caches."""
        return self.resolve(self.state_dir)

    @property
    def reports_path(self) -> Path:
        """Where reports, plots and test results are written."""
        return self.resolve(self.reports_dir)

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the environment's, else a SQLite file in the state directory."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def history_url(self) -> str:
        """Prediction-history database: ``DATABASE_URL``, else a SQLite file in the state dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.state_path / 'predictions.db'}"

    @property
    def serving_path(self) -> Path:
        """Where the champion is exported for serving (files + ``current.json`` pointer)."""
        return self.state_path / "serving" / self.model_name

    @property
    def compiled_cache_path(self) -> Path | None:
        """Where compiled trees are kept, or None when the champion's trees are not compiled."""
        if not self.serve.compiled_predictor:
            return None
        if self.serve.compiled_cache is not None:
            return self.resolve(self.serve.compiled_cache)
        user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(user_cache) / "xgbops" / "trees"

    @property
    def artifact_root(self) -> Path:
        """Artifact folder used with the embedded SQLite store."""
        return self.state_path / "mlartifacts"


def _config_paths(init: dict[str, Any], settings_cls: type[BaseSettings]) -> dict[str, Path]:
    """Find the YAML files before the settings exist: keyword arguments, then environment."""
    env = EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX)()
    project_dir = _project_dir(init, settings_cls)
    files = {}
    for key, default in (("dataset", DEFAULT_DATASET_CONFIG), ("train", DEFAULT_TRAIN_CONFIG)):
        path = Path(init.get(f"{key}_config") or env.get(f"{key}_config") or default)
        files[key] = path if path.is_absolute() else project_dir / path
    return files


def _project_dir(init: dict[str, Any], settings_cls: type[BaseSettings]) -> Path:
    env = EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX)()
    return Path(init.get("project_dir") or env.get("project_dir") or Path.cwd())


def to_sqlalchemy_url(url: str) -> str:
    """Name the psycopg 3 driver in a plain PostgreSQL URL (SQLAlchemy would pick psycopg2).

    Other URLs, SQLite ones and those naming a driver, are returned unchanged. The history
    database's one reading rule, for the API that writes it and monitoring that reads it.
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from YAML, environment and ``overrides``.

    Args:
        overrides: field values that take precedence over everything else, e.g. ``project_dir``.

    Returns:
        The validated settings.

    Raises:
        ConfigError: a file is missing or invalid; the message names the file, field and reason.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, overrides)) from exc


def _describe(exc: ValidationError, overrides: dict[str, Any]) -> str:
    paths = _config_paths(overrides, Settings)
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        source = paths.get(location[0]) if location else None
        where = ".".join(location[1:] if source else location) or "(top level)"
        prefix = f"{source}: " if source else ""
        lines.append(f"{prefix}{where}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
