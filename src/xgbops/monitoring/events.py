"""Typed monitoring events: one model per event type, each knowing its document id and index.

An event is a fact with a time (``@timestamp``). Its id is derived from what identifies the fact
(an MLflow run id, a prediction id, a host and sampling time...), never drawn at random, and its
index from its own timestamp, so shipping the same fact twice lands on the same (index, id) in
any sink: nothing is ever duplicated. The field names and types here are the contract of the
Elasticsearch mappings in ``monitoring/elasticsearch/index_templates`` (a test walks every
event against them) and of the local sink, which stores exactly :meth:`Event.to_document`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    field_serializer,
    field_validator,
)

from xgbops.config import PValueCorrection, RolloutMode

#: Fixed-width UTC timestamps: sortable as text in the local sink, parsed by Elasticsearch's
#: default ``strict_date_optional_time`` date format.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Holdout metrics a training run may carry (xgbops.evaluate.compute_metrics' names).
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
RolloutArm = Literal["champion", "challenger"]
#: The two arms of a rollout, in the order their documents are built.
ROLLOUT_ARMS: tuple[RolloutArm, ...] = ("champion", "challenger")


def utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC; a naive value is taken to be UTC already (SQLite keeps none)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """The one text form of a time in every event (see :data:`TIME_FORMAT`)."""
    return utc(moment).strftime(TIME_FORMAT)


def stable_id(*parts: object) -> str:
    """A short id that depends only on ``parts`` (same inputs, same id, in every process)."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Event(BaseModel):
    """Base of every event: a timestamp, a kind, an id and an index derived from them.

    Subclasses set ``KIND`` (the index family), ``IMMUTABLE`` (a fact shipped once with the bulk
    op ``create``; False for a state re-shipped with ``index``, which overwrites it) and
    ``TIME_SERIES`` (monthly indices managed by ILM; False for one index kept for ever).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    KIND: ClassVar[str] = ""
    IMMUTABLE: ClassVar[bool] = True
    TIME_SERIES: ClassVar[bool] = True

    timestamp: datetime = Field(alias="@timestamp")

    @field_validator("timestamp", "*", mode="after")
    @classmethod
    def _aware_utc(cls, value: Any) -> Any:
        return utc(value) if isinstance(value, datetime) else value

    @field_serializer("*", mode="wrap", when_used="json")
    def _times_as_text(self, value: Any, handler: SerializerFunctionWrapHandler) -> Any:
        return format_time(value) if isinstance(value, datetime) else handler(value)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented idiom
    @property
    def event_type(self) -> str:
        """The event's kind, also stored in the document (one query can span every index)."""
        return self.KIND

    @property
    def doc_id(self) -> str:
        """The document id: the same fact always gets the same id."""
        raise NotImplementedError

    def index(self, prefix: str) -> str:
        """The Elasticsearch index this event belongs to, e.g. ``xgbops-predictions-2025.01.01``.

        Time-series indices are monthly and named after the month's first day, the
        ``yyyy.MM.dd`` form ILM's ``parse_origination_date`` reads, so retention counts from the
        data's month, not from when a backfill happened to create the index.
        """
        if not self.TIME_SERIES:
            return f"{prefix}-{self.KIND}"
        return f"{prefix}-{self.KIND}-{self.timestamp:%Y.%m}.01"

    def to_document(self) -> dict[str, Any]:
        """The JSON document stored in every sink (``@timestamp``, ``event_type``, fields)."""
        return self.model_dump(mode="json", by_alias=True)


class HoldoutMetrics(BaseModel):
    """Holdout metrics of a training run; a metric the run did not log is null."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None

    @classmethod
    def from_run(cls, metrics: Mapping[str, float]) -> HoldoutMetrics:
        """Pick the ``holdout_<name>`` metrics of an MLflow run."""
        return cls(
            **{
                name: float(metrics[f"holdout_{name}"])
                for name in METRIC_NAMES
                if f"holdout_{name}" in metrics
            }
        )


class TrainingRunEvent(Event):
    """One MLflow run of the experiment and the version it registered, as it stands now.

    Re-shipped whenever it may have changed (the champion alias moves): one document per run.
    """

    KIND: ClassVar[str] = "training-runs"
    IMMUTABLE: ClassVar[bool] = False
    TIME_SERIES: ClassVar[bool] = False

    run_id: str
    run_name: str
    experiment: str
    status: str
    end_time: datetime | None = None
    registered: bool
    model_name: str | None = None
    model_version: str | None = None
    #: The version as a number, for sorting and plotting versions in order.
    version_number: int | None = None
    champion: bool
    aliases: list[str] = Field(default_factory=list)
    metrics: HoldoutMetrics
    #: The holdout metric promotion is decided on, and this run's value of it.
    promotion_metric: str | None = None
    promotion_score: float | None = None
    #: ``promoted`` or ``rejected`` when the run's promotion was decided.
    promotion_decision: str | None = None
    duration_seconds: float | None = None
    best_iteration: int | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None
    git_commit: str | None = None
    params: dict[str, str] = Field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        """The MLflow run id."""
        return self.run_id


class PredictionEvent(Event):
    """One served prediction, from the prediction history (or the serving layer)."""

    KIND: ClassVar[str] = "predictions"

    prediction_id: str
    model_name: str
    model_version: str
    probability: float
    label: str
    #: 1 when ``label`` is the dataset's positive label: its average is the positive rate.
    positive: int = Field(ge=0, le=1)
    latency_ms: float | None = None
    request_id: str | None = None
    source: Literal["history", "api"] = "history"
    #: The validated input record (feature name -> value).
    input: dict[str, str | float | None]

    @property
    def doc_id(self) -> str:
        """The prediction's own id (the history's primary key)."""
        return self.prediction_id


class FeedbackEvent(Event):
    """The true label of one served prediction, as its client reported it (``POST /feedback``),
    joined with the prediction it judges: one document per labelled prediction.

    A state, not a fact: a second label for the same prediction replaces the first, so it is
    shipped with ``index`` and overwrites its document. ``@timestamp`` is when the label was
    received, but the index is that of the month the prediction was *made* (``predicted_at``),
    which never changes: a corrected label received in a later month still lands on the same
    (index, id) and overwrites, where an index following ``@timestamp`` would keep both labels.
    """

    KIND: ClassVar[str] = "feedback"
    IMMUTABLE: ClassVar[bool] = False

    prediction_id: str
    model_name: str
    model_version: str
    #: The label the model served, and the true label the client reported.
    predicted_label: str
    actual_label: str
    #: 1 when ``actual_label`` is ``predicted_label``: its average is the live accuracy.
    correct: int = Field(ge=0, le=1)
    #: The predicted probability of the positive label.
    probability: float
    #: When the prediction was served (the history's ``created_at``).
    predicted_at: datetime
    #: The request id of the ``POST /feedback`` call that reported the label.
    request_id: str | None = None

    @property
    def doc_id(self) -> str:
        """The prediction's id: one document per labelled prediction."""
        return self.prediction_id

    def index(self, prefix: str) -> str:
        """The monthly index of the prediction's own month, e.g. ``xgbops-feedback-2025.01.01``
        (see the class docstring for why not the month of ``@timestamp``)."""
        return f"{prefix}-{self.KIND}-{self.predicted_at:%Y.%m}.01"


class DriftReportEvent(Event):
    """The summary of one drift check: a window of predictions against the training data."""

    KIND: ClassVar[str] = "drift-reports"

    report_id: str
    model_name: str
    model_versions: list[str] = Field(default_factory=list)
    status: Literal["drift", "no_drift", "insufficient_data"]
    drift_detected: bool
    window_hours: float
    window_start: datetime
    window_end: datetime
    reference_rows: int
    window_rows: int
    features_checked: int
    features_drifted: int
    drifted_features: list[str] = Field(default_factory=list)
    max_psi: float | None = None
    prediction_psi: float | None = None
    prediction_p_value: float | None = None
    prediction_drifted: bool | None = None
    psi_threshold: float
    p_value_threshold: float
    p_value_correction: PValueCorrection = "none"
    min_samples: int

    @property
    def doc_id(self) -> str:
        """Derived from the report id (model and window)."""
        return self.report_id


class FeatureDrift(BaseModel):
    """The drift statistics of one feature (or of the predicted probability) in a report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    feature_type: Literal["numeric", "categorical", "prediction"]
    psi: float
    #: ``ks`` (two-sample Kolmogorov-Smirnov) or ``chi2`` (chi-square homogeneity); null when
    #: the test cannot be run (e.g. a single category on both sides).
    test: Literal["ks", "chi2"] | None = None
    statistic: float | None = None
    p_value: float | None = None
    #: ``p_value`` adjusted for the report's other tests (``monitoring.drift.correction``): the
    #: value ``test_drifted`` is judged on. Equal to ``p_value`` with no correction.
    adjusted_p_value: float | None = None
    psi_drifted: bool
    test_drifted: bool
    drifted: bool
    reference_rows: int
    window_rows: int
    reference_missing_share: float
    window_missing_share: float
    reference_mean: float | None = None
    window_mean: float | None = None


class DriftFeatureEvent(Event, FeatureDrift):
    """One row of a drift report: a feature (or the predicted probability) and its statistics."""

    KIND: ClassVar[str] = "drift-features"

    report_id: str
    model_name: str

    @property
    def doc_id(self) -> str:
        """The report id, the row's type and the feature name."""
        return f"{self.report_id}:{self.feature_type}:{self.feature}"


class SystemEvent(Event):
    """One sample of the machine: CPU, memory and the project directory's disk."""

    KIND: ClassVar[str] = "system"

    sample_id: str
    host: str
    cpu_percent: float
    cpu_count: int
    load_1m: float | None = None
    memory_total_bytes: int
    memory_used_bytes: int
    memory_available_bytes: int
    memory_percent: float
    swap_percent: float
    disk_path: str
    disk_total_bytes: int
    disk_used_bytes: int
    disk_free_bytes: int
    disk_percent: float

    @property
    def doc_id(self) -> str:
        """The sample id (host and sampling time)."""
        return self.sample_id


class ProcessEvent(Event):
    """One xgbops-related process (API workers, MLflow, the CLI) in a system sample."""

    KIND: ClassVar[str] = "processes"

    sample_id: str
    host: str
    pid: int
    #: What the process is: ``gunicorn``, ``uvicorn``, ``mlflow`` or ``xgbops``.
    process_group: str
    name: str
    cmdline: str
    rss_bytes: int
    cpu_percent: float
    memory_percent: float
    num_threads: int
    started_at: datetime

    @property
    def doc_id(self) -> str:
        """The sample id and the process id."""
        return f"{self.sample_id}:{self.pid}"


class RolloutArmEvent(Event):
    """One arm of a rollout's live comparison report (:mod:`xgbops.rollout`), as it stood when
    the report was made: two documents per report, one per arm, so Kibana can split any metric
    by ``arm``. Fields of the whole report (agreement, the error-rate test, the verdict) are
    repeated on both. Missing labels leave the label-based metrics null.
    """

    KIND: ClassVar[str] = "rollout"

    model_name: str
    rollout_id: str
    mode: RolloutMode
    #: Percent of traffic the challenger answers (canary, ab) or shadows.
    share: float | None = None
    arm: RolloutArm
    version: str | None = None
    requests: int = Field(ge=0)
    labelled: int = Field(ge=0)
    #: The live error rate and its confidence interval.
    error_rate: float | None = None
    error_rate_low: float | None = None
    error_rate_high: float | None = None
    auc: float | None = None
    auc_low: float | None = None
    auc_high: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    ece: float | None = None
    mean_probability: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    #: Share of requests both arms labelled alike: only in shadow mode, where both scored them.
    agreement: float | None = None
    #: The error-rate test of challenger against champion: its p-value, and the probability
    #: that the challenger is worse.
    p_value: float | None = None
    p_worse: float | None = None
    decision: Literal["waiting", "promote", "rollback"]

    @property
    def doc_id(self) -> str:
        """Derived from the model, the rollout, the report's time (as UTC) and the arm."""
        return stable_id(self.model_name, self.rollout_id, format_time(self.timestamp), self.arm)

    @classmethod
    def from_report(cls, report: Mapping[str, Any], arm: RolloutArm) -> RolloutArmEvent:
        """The document of ``arm`` in a comparison report (a plain dict, see the module
        :mod:`xgbops.rollout`); ``@timestamp`` is the report's ``generated_at``.

        Raises:
            KeyError: the report has no ``state``, ``arms`` (or this arm) or ``verdict``.
            pydantic.ValidationError: a required value is missing, or a value is wrong.
        """
        state = report["state"]
        numbers = report["arms"][arm]
        error_rate, error_rate_low, error_rate_high = _interval(numbers.get("error_rate"))
        auc, auc_low, auc_high = _interval(numbers.get("auc"))
        latency = numbers.get("latency_ms") or {}
        test = (report.get("tests") or {}).get("error_rate") or {}
        return cls(
            timestamp=report.get("generated_at"),
            model_name=report.get("model_name"),
            rollout_id=state.get("rollout_id"),
            mode=state.get("mode"),
            share=state.get("share"),
            arm=arm,
            version=numbers.get("version"),
            requests=numbers.get("requests"),
            labelled=numbers.get("labelled"),
            error_rate=error_rate,
            error_rate_low=error_rate_low,
            error_rate_high=error_rate_high,
            auc=auc,
            auc_low=auc_low,
            auc_high=auc_high,
            log_loss=numbers.get("log_loss"),
            brier=numbers.get("brier"),
            ece=numbers.get("ece"),
            mean_probability=numbers.get("mean_probability"),
            latency_p50_ms=latency.get("p50"),
            latency_p95_ms=latency.get("p95"),
            agreement=_interval(report.get("agreement"))[0],
            p_value=test.get("p_value"),
            p_worse=test.get("p_worse"),
            decision=report["verdict"].get("decision"),
        )


def rollout_events(report: Mapping[str, Any]) -> list[RolloutArmEvent]:
    """The two documents of a rollout comparison report: the champion's, then the challenger's.

    Shipping the same report again yields the same ids, so nothing is duplicated.

    Raises:
        KeyError: the report has no ``state``, ``arms`` (or one of them) or ``verdict``.
        pydantic.ValidationError: a required value is missing, or a value is wrong.
    """
    return [RolloutArmEvent.from_report(report, arm) for arm in ROLLOUT_ARMS]


def _interval(value: Mapping[str, Any] | None) -> tuple[Any, Any, Any]:
    """An interval's estimate, low and high bounds; all null when it was not computable."""
    if not value:
        return None, None, None
    return value.get("estimate"), value.get("low"), value.get("high")


class RolloutDecisionEvent(Event):
    """One decision about a rollout: started, mode changed, promoted, rolled back, or stopped by
    the automatic guard. An immutable fact, shipped once.

    Its own index family, ``decisions``: ``rollout-decisions`` would fall under the pattern of
    the arms' indices (``xgbops-rollout-*``), which Elasticsearch refuses for two templates of
    the same priority, and which would mix both kinds in the arms' data view.
    """

    KIND: ClassVar[str] = "decisions"

    model_name: str
    #: The rollout decided on, when the decision names it (the history's decisions do).
    rollout_id: str | None = None
    action: Literal["start", "mode", "promote", "rollback", "guard_stop"]
    mode: RolloutMode | None = None
    share: float | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    reason: str | None = None
    #: Who decided: a user or key name, or the guard.
    actor: str | None = None

    @property
    def doc_id(self) -> str:
        """Derived from the model, the decision's time (as UTC), its action and its arms."""
        return stable_id(
            self.model_name,
            format_time(self.timestamp),
            self.action,
            self.champion_version,
            self.challenger_version,
        )

    @classmethod
    def from_decision(cls, decision: Mapping[str, Any]) -> RolloutDecisionEvent:
        """The document of one decision (a plain dict); ``@timestamp`` is its ``at``.

        Raises:
            pydantic.ValidationError: a required value is missing, or a value is wrong or
                unknown.
        """
        fields = {key: value for key, value in decision.items() if key != "at"}
        return cls(timestamp=decision.get("at"), **fields)


#: Every event type, by kind (the index family, e.g. ``predictions``).
EVENT_TYPES: dict[str, type[Event]] = {
    cls.KIND: cls
    for cls in (
        TrainingRunEvent,
        PredictionEvent,
        FeedbackEvent,
        DriftReportEvent,
        DriftFeatureEvent,
        SystemEvent,
        ProcessEvent,
        RolloutArmEvent,
        RolloutDecisionEvent,
    )
}
